package sessions

import (
	"context"
	"errors"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var ctx = context.Background()

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)} }

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func counter() NewPlaceholderFunc {
	var n atomic.Int64
	return func() (string, error) { return "ph" + string(rune('a'+n.Add(1))), nil }
}

type closer struct{ closed atomic.Bool }

func (c *closer) Close() error { c.closed.Store(true); return nil }

// memStore is an in-memory Store with the database's rules; fail makes
// every call fail.
type memStore struct {
	mu     sync.Mutex
	rows   map[string]Record
	fail   error
	writes int
}

func newMemStore() *memStore { return &memStore{rows: map[string]Record{}} }

func (m *memStore) err() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.fail
}

func (m *memStore) setFail(err error) {
	m.mu.Lock()
	m.fail = err
	m.mu.Unlock()
}

func (m *memStore) Insert(_ context.Context, r Record) error {
	if err := m.err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, dup := m.rows[r.ID]; dup {
		return errors.New("duplicate session id")
	}
	r.Services, r.Placeholders = slices.Clone(r.Services), maps.Clone(r.Placeholders)
	m.rows[r.ID] = r
	m.writes++
	return nil
}

func (m *memStore) Revoke(_ context.Context, id string, at time.Time) (bool, error) {
	if err := m.err(); err != nil {
		return false, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	r, ok := m.rows[id]
	if ok && r.RevokedAt == nil {
		r.RevokedAt = &at
		m.rows[id] = r
	}
	return ok, nil
}

func (m *memStore) Get(_ context.Context, id string) (Record, bool, error) {
	if err := m.err(); err != nil {
		return Record{}, false, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	r, ok := m.rows[id]
	return r, ok, nil
}

func (m *memStore) All(_ context.Context, after time.Time) ([]Record, error) {
	if err := m.err(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []Record
	for _, r := range m.rows {
		if r.ExpiresAt.After(after) {
			out = append(out, r)
		}
	}
	return out, nil
}

func (m *memStore) AddActivity(_ context.Context, batch []Activity) error {
	if err := m.err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, a := range batch {
		r, ok := m.rows[a.ID]
		if !ok {
			continue
		}
		r.Requests += a.Requests
		if r.LastUsed == nil || a.LastUsed.After(*r.LastUsed) {
			t := a.LastUsed
			r.LastUsed = &t
		}
		m.rows[a.ID] = r
	}
	m.writes++
	return nil
}

func (m *memStore) DeleteExpiredBefore(_ context.Context, t time.Time) (int, error) {
	if err := m.err(); err != nil {
		return 0, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for id, r := range m.rows {
		if r.ExpiresAt.Before(t) {
			delete(m.rows, id)
			n++
		}
	}
	return n, nil
}

func (m *memStore) RenewLease(_ context.Context, id string, until time.Time) error {
	if err := m.err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	r, ok := m.rows[id]
	switch {
	case !ok:
		return ErrUnknown
	case r.LeaseTimeout == 0:
		return ErrNotLeased
	case r.RevokedAt != nil:
		return ErrEnded
	}
	r.LeaseUntil = &until
	m.rows[id] = r
	m.writes++
	return nil
}

// row returns the stored record of id.
func (m *memStore) row(id string) Record {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.rows[id]
}

func (m *memStore) requests(id string) uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.rows[id].Requests
}

func newRegistry(st Store, c *clock) *Registry {
	r := NewRegistry(st)
	r.Now = c.now
	return r
}

func TestCreateAuthenticateRevoke(t *testing.T) {
	for _, persisted := range []bool{false, true} {
		var st Store
		if persisted {
			st = newMemStore()
		}
		r := newRegistry(st, newClock())
		s, tok, err := r.Create(ctx, Spec{Services: []string{"b", "a"}, TTL: time.Hour, Credentials: []string{"X", "Y", "X"}, NewPlaceholder: counter()})
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(tok, TokenPrefix) || len(tok) < 40 {
			t.Fatalf("token %q", tok)
		}
		if got, err := r.Authenticate(tok); err != nil || got != s {
			t.Fatalf("Authenticate = %v, %v", got, err)
		}
		if _, err := r.Authenticate(tok + "x"); !errors.Is(err, ErrUnknown) {
			t.Fatalf("wrong token: %v", err)
		}
		if !s.InScope("a") || s.InScope("c") || !slices.Equal(s.Services, []string{"a", "b"}) {
			t.Fatal("scope wrong")
		}
		if len(s.Placeholders()) != 2 || s.Agent != "" {
			t.Fatalf("placeholders %v, agent %q", s.Placeholders(), s.Agent)
		}
		ph, _ := s.Placeholder("X")
		if cred, ok := s.Credential(ph); !ok || cred != "X" {
			t.Fatal("placeholder does not map back")
		}
		conn := &closer{}
		s.Track(conn)
		if found, err := r.Revoke(ctx, s.ID); !found || err != nil || !conn.closed.Load() {
			t.Fatalf("revoke = %v, %v; closed=%v", found, err, conn.closed.Load())
		}
		if _, err := r.Authenticate(tok); !errors.Is(err, ErrRevoked) {
			t.Fatalf("revoked: %v", err)
		}
		late := &closer{}
		s.Track(late)
		if !late.closed.Load() {
			t.Fatal("tracking on a revoked session must close at once")
		}
		if found, _ := r.Revoke(ctx, "nope"); found {
			t.Fatal("revoked an unknown id")
		}
	}
}

func TestCreateSavesFirst(t *testing.T) {
	st := newMemStore()
	r := newRegistry(st, newClock())
	down := errors.New("state sqlite: disk I/O error")
	st.setFail(down)
	if _, _, err := r.Create(ctx, Spec{Services: []string{"a"}, TTL: time.Hour, NewPlaceholder: counter()}); !errors.Is(err, down) {
		t.Fatalf("Create = %v, want the store's error", err)
	}
	if len(r.List()) != 0 {
		t.Fatal("a session the store refused exists")
	}
	st.setFail(nil)
	s, _, err := r.Create(ctx, Spec{Services: []string{"a"}, TTL: time.Hour, Credentials: []string{"K"}, NewPlaceholder: counter()})
	if err != nil {
		t.Fatal(err)
	}
	rec, ok, _ := st.Get(ctx, s.ID)
	if !ok || rec.Placeholders["K"] == "" || rec.ExpiresAt != s.ExpiresAt || rec.TokenHash != s.tokenHash {
		t.Fatalf("stored record %+v", rec)
	}
}

// TestSessionMovesBetweenBrokers: a session minted on A is usable on B
// after B applies the change, and revoking it on A ends B's tunnels.
func TestSessionMovesBetweenBrokers(t *testing.T) {
	st, c := newMemStore(), newClock()
	a, b := newRegistry(st, c), newRegistry(st, c)
	sa, tok, err := a.Create(ctx, Spec{Services: []string{"svc"}, TTL: time.Hour, Credentials: []string{"K"}, NewPlaceholder: counter()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Authenticate(tok); !errors.Is(err, ErrUnknown) {
		t.Fatalf("b knew the session before the feed: %v", err)
	}
	if err := b.Apply(ctx, sa.ID); err != nil {
		t.Fatal(err)
	}
	sb, err := b.Authenticate(tok)
	if err != nil {
		t.Fatalf("b after Apply: %v", err)
	}
	if !slices.Equal(sb.Services, sa.Services) || !maps.Equal(sb.Placeholders(), sa.Placeholders()) || !sb.ExpiresAt.Equal(sa.ExpiresAt) {
		t.Fatalf("b's copy %+v differs from a's %+v", sb, sa)
	}
	tunnel := &closer{}
	sb.Track(tunnel)
	if _, err := a.Revoke(ctx, sa.ID); err != nil {
		t.Fatal(err)
	}
	if err := b.Apply(ctx, sa.ID); err != nil {
		t.Fatal(err)
	}
	if !tunnel.closed.Load() {
		t.Fatal("revoking on a left b's tunnel open")
	}
	if _, err := b.Authenticate(tok); !errors.Is(err, ErrRevoked) {
		t.Fatalf("b after the revocation: %v", err)
	}
	// A session made and revoked elsewhere is listed here as revoked.
	s2, _, _ := a.Create(ctx, Spec{TTL: time.Hour, NewPlaceholder: counter()})
	a.Revoke(ctx, s2.ID)
	if err := b.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	if len(b.List()) != 2 || !b.List()[0].Revoked() {
		t.Fatal("b does not list a's revoked session")
	}
}

func TestRevokeEndsHereEvenIfTheStoreFails(t *testing.T) {
	st := newMemStore()
	r := newRegistry(st, newClock())
	s, tok, _ := r.Create(ctx, Spec{TTL: time.Hour, NewPlaceholder: counter()})
	conn := &closer{}
	s.Track(conn)
	down := errors.New("state postgres: connection refused")
	st.setFail(down)
	found, err := r.Revoke(ctx, s.ID)
	if !found || !errors.Is(err, down) {
		t.Fatalf("Revoke = %v, %v; want found and the store's error", found, err)
	}
	if !conn.closed.Load() {
		t.Fatal("the tunnel stays open")
	}
	if _, err := r.Authenticate(tok); !errors.Is(err, ErrRevoked) {
		t.Fatal("the session still authenticates")
	}
	// The store never heard: a reload must not bring it back.
	st.setFail(nil)
	if err := r.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	if err := r.Apply(ctx, s.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Authenticate(tok); !errors.Is(err, ErrRevoked) {
		t.Fatal("a reload un-revoked the session")
	}
	// Revoking again records it.
	if found, err := r.Revoke(ctx, s.ID); !found || err != nil {
		t.Fatalf("retry = %v, %v", found, err)
	}
	if rec, _, _ := st.Get(ctx, s.ID); rec.RevokedAt == nil {
		t.Fatal("the retry did not record the revocation")
	}
}

func TestReloadEndsSessionsMissingFromTheStore(t *testing.T) {
	st := newMemStore()
	r := newRegistry(st, newClock())
	s, tok, _ := r.Create(ctx, Spec{TTL: time.Hour, NewPlaceholder: counter()})
	keep, keepTok, _ := r.Create(ctx, Spec{TTL: time.Hour, NewPlaceholder: counter()})
	conn := &closer{}
	s.Track(conn)
	st.mu.Lock()
	delete(st.rows, s.ID)
	st.mu.Unlock()
	if err := r.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Authenticate(tok); !errors.Is(err, ErrRevoked) || !conn.closed.Load() {
		t.Fatalf("a session missing from the store still works: %v", err)
	}
	if got, err := r.Authenticate(keepTok); err != nil || got != keep {
		t.Fatalf("the stored session ended too: %v", err)
	}
	// Apply of an id the store lacks ends it as well.
	st.mu.Lock()
	delete(st.rows, keep.ID)
	st.mu.Unlock()
	if err := r.Apply(ctx, keep.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Authenticate(keepTok); !errors.Is(err, ErrRevoked) {
		t.Fatal("Apply of a deleted session left it usable")
	}
	// A failing store changes nothing (the health check refuses
	// requests instead).
	st.setFail(errors.New("down"))
	if r.Reload(ctx) == nil || r.Apply(ctx, "x") == nil {
		t.Fatal("store errors were swallowed")
	}
}

func TestActivityFlushes(t *testing.T) {
	st, c := newMemStore(), newClock()
	a, b := newRegistry(st, c), newRegistry(st, c)
	s, _, _ := a.Create(ctx, Spec{TTL: time.Hour, NewPlaceholder: counter()})
	if err := b.Apply(ctx, s.ID); err != nil {
		t.Fatal(err)
	}
	sb := b.List()[0]
	s.Touch(c.now())
	s.Touch(c.now())
	c.add(time.Second)
	sb.Touch(c.now())
	if n, _ := s.Activity(); n != 2 {
		t.Fatalf("a counts %d before a flush, want its own 2", n)
	}
	writes := st.writes
	if err := a.FlushActivity(ctx); err != nil {
		t.Fatal(err)
	}
	if err := a.FlushActivity(ctx); err != nil || st.writes != writes+1 {
		t.Fatalf("an empty flush wrote (%d writes, %v)", st.writes-writes, err)
	}
	down := errors.New("state sqlite: database is locked")
	st.setFail(down)
	if err := b.FlushActivity(ctx); !errors.Is(err, down) {
		t.Fatalf("flush = %v", err)
	}
	if n, _ := sb.Activity(); n != 1 {
		t.Fatalf("b's failed flush lost its request: %d", n)
	}
	st.setFail(nil)
	if err := b.FlushActivity(ctx); err != nil {
		t.Fatal(err)
	}
	if got := st.requests(s.ID); got != 3 {
		t.Fatalf("stored requests %d, want 3", got)
	}
	if err := a.Apply(ctx, s.ID); err != nil {
		t.Fatal(err)
	}
	s.Touch(c.now())
	n, last := s.Activity()
	if n != 4 || !last.Equal(c.now()) {
		t.Fatalf("a shows %d requests, last %v; want stored 3 + unflushed 1 at %v", n, last, c.now())
	}
}

func TestExpiryAndSweep(t *testing.T) {
	st, c := newMemStore(), newClock()
	r := newRegistry(st, c)
	s, tok, _ := r.Create(ctx, Spec{Services: []string{"a"}, TTL: time.Minute, NewPlaceholder: counter()})
	conn := &closer{}
	s.Track(conn)
	c.add(time.Minute)
	if _, err := r.Authenticate(tok); !errors.Is(err, ErrExpired) {
		t.Fatalf("expired: %v", err)
	}
	if s.Active(c.now()) {
		t.Fatal("expired session active")
	}
	if res, err := r.Sweep(ctx); res.Expired != 1 || res.LeaseLapsed != 0 || err != nil || !conn.closed.Load() {
		t.Fatalf("sweep ended %+v (%v), closed=%v", res, err, conn.closed.Load())
	}
	if len(r.List()) != 1 {
		t.Fatal("ended session should stay listed for a while")
	}
	if _, ok, _ := st.Get(ctx, s.ID); !ok {
		t.Fatal("a recently expired session was deleted from the store")
	}
	c.add(time.Hour)
	if _, err := r.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if len(r.List()) != 0 {
		t.Fatal("old session not forgotten")
	}
	if _, ok, _ := st.Get(ctx, s.ID); !ok {
		// It expired exactly Keep ago: not yet before the horizon.
		t.Fatal("deleted at the horizon")
	}
	c.add(time.Minute)
	if _, err := r.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := st.Get(ctx, s.ID); ok {
		t.Fatal("a long-expired session stays in the store")
	}
	if _, err := r.Authenticate(tok); !errors.Is(err, ErrUnknown) {
		t.Fatalf("forgotten: %v", err)
	}
}

func TestCreateRejectsBadTTL(t *testing.T) {
	if _, _, err := NewRegistry(nil).Create(ctx, Spec{TTL: 0, NewPlaceholder: counter()}); err == nil {
		t.Fatal("zero ttl accepted")
	}
}

// TestConcurrentCreateAndReload: a session created while a Reload runs
// is never ended because the Reload's read missed it.
func TestConcurrentCreateAndReload(t *testing.T) {
	st := newMemStore()
	r := newRegistry(st, newClock())
	stop := make(chan struct{})
	var reloader, creator sync.WaitGroup
	reloader.Add(1)
	creator.Add(1)
	go func() {
		defer reloader.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if err := r.Reload(ctx); err != nil {
				t.Error(err)
			}
			r.FlushActivity(ctx)
		}
	}()
	go func() {
		defer creator.Done()
		for range 200 {
			s, tok, err := r.Create(ctx, Spec{TTL: time.Hour, NewPlaceholder: counter()})
			if err != nil {
				t.Error(err)
				return
			}
			s.Touch(time.Now())
			if _, err := r.Authenticate(tok); err != nil {
				t.Errorf("a fresh session: %v", err)
			}
		}
	}()
	creator.Wait()
	close(stop)
	reloader.Wait()
	for _, s := range r.List() {
		if s.Revoked() {
			t.Fatalf("session %s was ended by a Reload that raced its creation", s.ID)
		}
	}
}

// A revocation the store could not record is recorded by a later
// RetryRevocations, with its original time, without anyone revoking
// again.
func TestUnrecordedRevocationIsRetried(t *testing.T) {
	st := newMemStore()
	c := newClock()
	r := NewRegistry(st)
	r.Now = c.now
	s, _, err := r.Create(context.Background(), Spec{Services: []string{"x"}, TTL: time.Hour, NewPlaceholder: counter()})
	if err != nil {
		t.Fatal(err)
	}
	revokedAt := c.now()
	st.setFail(errors.New("state postgres: unreachable"))
	if found, err := r.Revoke(context.Background(), s.ID); !found || err == nil {
		t.Fatalf("Revoke = %v, %v; want found with the store's error", found, err)
	}
	if err := r.RetryRevocations(context.Background()); err == nil || r.Unrecorded() != 1 {
		t.Fatalf("retry while the store fails: %v, %d waiting", err, r.Unrecorded())
	}
	st.setFail(nil)
	c.add(time.Minute)
	if err := r.RetryRevocations(context.Background()); err != nil || r.Unrecorded() != 0 {
		t.Fatalf("retry: %v, %d waiting", err, r.Unrecorded())
	}
	rec, _, _ := st.Get(context.Background(), s.ID)
	if rec.RevokedAt == nil || !rec.RevokedAt.Equal(revokedAt) {
		t.Fatalf("stored revocation %v, want %v", rec.RevokedAt, revokedAt)
	}
}

// lateCommit is a store whose AddActivity commits, then reports the
// context's end: a commit that landed just as the deadline passed.
type lateCommit struct {
	*memStore
}

func (l lateCommit) AddActivity(ctx context.Context, batch []Activity) error {
	if err := l.memStore.AddActivity(ctx, batch); err != nil {
		return err
	}
	<-ctx.Done()
	return ctx.Err()
}

// A flush whose outcome is unknown (its context ended during the
// write) is not sent again: requests are never counted twice.
func TestFlushAmbiguousFailureNotCountedTwice(t *testing.T) {
	st := newMemStore()
	r := NewRegistry(lateCommit{st})
	s, _, err := r.Create(context.Background(), Spec{Services: []string{"x"}, TTL: time.Hour, NewPlaceholder: counter()})
	if err != nil {
		t.Fatal(err)
	}
	s.Touch(time.Now())
	s.Touch(time.Now())
	ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
	defer cancel()
	if err := r.FlushActivity(ctx); err == nil {
		t.Fatal("want the deadline's error")
	}
	r.store = st // the next flush succeeds plainly
	if err := r.FlushActivity(context.Background()); err != nil {
		t.Fatal(err)
	}
	if rec, _, _ := st.Get(context.Background(), s.ID); rec.Requests != 2 {
		t.Fatalf("stored requests = %d, want 2", rec.Requests)
	}
}
