package sessions

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"
)

const lease = 30 * time.Second

func leased(t *testing.T, r *Registry, agent string) (*Session, string) {
	t.Helper()
	s, tok, err := r.Create(ctx, Spec{Agent: agent, Services: []string{"a"}, TTL: time.Hour, Lease: lease})
	if err != nil {
		t.Fatal(err)
	}
	return s, tok
}

func TestCreateKeepsAgentAndLease(t *testing.T) {
	st, c := newMemStore(), newClock()
	r := newRegistry(st, c)
	s, _ := leased(t, r, "ci-bot")
	until, ok := s.LeaseUntil()
	if s.Agent != "ci-bot" || !s.Leased() || s.LeaseTimeout != lease || !ok || !until.Equal(c.now().Add(lease)) {
		t.Fatalf("session = agent %q leased %v timeout %v until %v", s.Agent, s.Leased(), s.LeaseTimeout, until)
	}
	rec := st.row(s.ID)
	if rec.Agent != "ci-bot" || rec.LeaseTimeout != lease || rec.LeaseUntil == nil || !rec.LeaseUntil.Equal(until) {
		t.Fatalf("stored = %+v", rec)
	}
	plain, _, err := r.Create(ctx, Spec{TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := plain.LeaseUntil(); ok || plain.Leased() || st.row(plain.ID).LeaseUntil != nil {
		t.Fatal("a session created without a lease has one")
	}
	if plain.Services == nil {
		t.Fatal("nil services")
	}
	if _, _, err := r.Create(ctx, Spec{TTL: time.Hour, Lease: -time.Second}); err == nil {
		t.Fatal("negative lease accepted")
	}
	if _, _, err := r.Create(ctx, Spec{TTL: time.Hour, Credentials: []string{"K"}}); err == nil {
		t.Fatal("credentials without a placeholder maker accepted")
	}
}

func TestLeaseLapseEndsTheSession(t *testing.T) {
	st, c := newMemStore(), newClock()
	r := newRegistry(st, c)
	s, tok := leased(t, r, "ci-bot")
	conn := &closer{}
	s.Track(conn)
	c.add(lease - time.Nanosecond)
	if _, err := r.Authenticate(tok); err != nil {
		t.Fatalf("within the lease: %v", err)
	}
	if res, err := r.Sweep(ctx); err != nil || res.Expired != 0 || res.LeaseLapsed != 0 {
		t.Fatalf("sweep within the lease = %+v, %v", res, err)
	}
	c.add(time.Nanosecond)
	if _, err := r.Authenticate(tok); !errors.Is(err, ErrLeaseExpired) {
		t.Fatalf("lapsed lease: %v", err)
	}
	if s.Active(c.now()) {
		t.Fatal("a session whose lease lapsed is active")
	}
	res, err := r.Sweep(ctx)
	if err != nil || res.Expired != 0 || res.LeaseLapsed != 1 {
		t.Fatalf("sweep = %+v, %v", res, err)
	}
	if !conn.closed.Load() || !s.Revoked() {
		t.Fatal("the lapsed session's connection is open")
	}
	if st.row(s.ID).RevokedAt == nil {
		t.Fatal("the lapse was not recorded in the store: other brokers keep serving the session")
	}
	// Reported once.
	if res, _ := r.Sweep(ctx); res.LeaseLapsed != 0 {
		t.Fatalf("second sweep reports %d lapses again", res.LeaseLapsed)
	}
	if _, err := r.Renew(ctx, s.ID); !errors.Is(err, ErrEnded) {
		t.Fatalf("renewing an ended session: %v", err)
	}
}

func TestRenewExtends(t *testing.T) {
	st, c := newMemStore(), newClock()
	r := newRegistry(st, c)
	s, tok := leased(t, r, "")
	c.add(20 * time.Second)
	until, err := r.Renew(ctx, s.ID)
	if err != nil {
		t.Fatal(err)
	}
	if want := c.now().Add(lease); !until.Equal(want) {
		t.Fatalf("renewed until %v, want %v", until, want)
	}
	if got := st.row(s.ID).LeaseUntil; got == nil || !got.Equal(until) {
		t.Fatalf("stored lease_until = %v, want %v", got, until)
	}
	c.add(20 * time.Second) // 40s after creation: past the first lease
	if _, err := r.Authenticate(tok); err != nil {
		t.Fatalf("after a renewal: %v", err)
	}
	if res, _ := r.Sweep(ctx); res.LeaseLapsed != 0 {
		t.Fatal("a renewed session lapsed")
	}
	c.add(10 * time.Second)
	if _, err := r.Authenticate(tok); !errors.Is(err, ErrLeaseExpired) {
		t.Fatalf("after the renewed lease: %v", err)
	}
	// A lapsed lease is not revived, even before the sweeper runs.
	if _, err := r.Renew(ctx, s.ID); !errors.Is(err, ErrEnded) {
		t.Fatalf("renewing a lapsed lease: %v", err)
	}
}

func TestRenewRefusals(t *testing.T) {
	st, c := newMemStore(), newClock()
	r := newRegistry(st, c)
	if _, err := r.Renew(ctx, "ses_nope"); !errors.Is(err, ErrUnknown) {
		t.Fatalf("unknown: %v", err)
	}
	plain, _, _ := r.Create(ctx, Spec{TTL: time.Hour})
	if _, err := r.Renew(ctx, plain.ID); !errors.Is(err, ErrNotLeased) {
		t.Fatalf("no lease: %v", err)
	}
	s, _ := leased(t, r, "")
	if _, err := r.Revoke(ctx, s.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Renew(ctx, s.ID); !errors.Is(err, ErrEnded) {
		t.Fatalf("revoked: %v", err)
	}
	// Expired by TTL.
	short, _, _ := r.Create(ctx, Spec{TTL: time.Minute, Lease: time.Hour})
	c.add(time.Minute)
	if _, err := r.Renew(ctx, short.ID); !errors.Is(err, ErrEnded) {
		t.Fatalf("expired: %v", err)
	}
	// Revoked in the store by another broker, unknown here yet: the
	// renewal fails and the session ends here too.
	other, _ := leased(t, r, "")
	at := c.now()
	st.Revoke(ctx, other.ID, at)
	if _, err := r.Renew(ctx, other.ID); !errors.Is(err, ErrEnded) {
		t.Fatalf("revoked elsewhere: %v", err)
	}
	if !other.Revoked() {
		t.Fatal("a session the store says ended still runs here")
	}
	// The store is down: an error that is neither, and the lease stays.
	ok, _ := leased(t, r, "")
	before, _ := ok.LeaseUntil()
	c.add(time.Second)
	down := errors.New("database down")
	st.setFail(down)
	if _, err := r.Renew(ctx, ok.ID); !errors.Is(err, down) || errors.Is(err, ErrEnded) {
		t.Fatalf("store down: %v", err)
	}
	if after, _ := ok.LeaseUntil(); !after.Equal(before) {
		t.Fatal("a renewal the store refused extended the lease here")
	}
}

func TestRenewOnAnotherBrokerExtendsHere(t *testing.T) {
	st, c := newMemStore(), newClock()
	a, b := newRegistry(st, c), newRegistry(st, c)
	s, tok := leased(t, a, "")
	// b learns of it through the feed, renews it later (a session
	// made on a can be renewed through b's API).
	c.add(20 * time.Second)
	until, err := b.Renew(ctx, s.ID)
	if err != nil {
		t.Fatal(err)
	}
	c.add(15 * time.Second) // past a's copy of the lease
	// Before the feed delivers, a's sweep checks the store and keeps it.
	if res, err := a.Sweep(ctx); err != nil || res.LeaseLapsed != 0 || s.Revoked() {
		t.Fatalf("a ended a session renewed on b: %+v %v", res, err)
	}
	if _, err := a.Authenticate(tok); err != nil {
		t.Fatalf("on a after b's renewal: %v", err)
	}
	if got, _ := s.LeaseUntil(); !got.Equal(until) {
		t.Fatalf("a's lease = %v, want b's %v", got, until)
	}
	// Apply also takes it (the feed's path), and never moves it back.
	c.add(5 * time.Second)
	later, _ := b.Renew(ctx, s.ID)
	if err := a.Apply(ctx, s.ID); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.LeaseUntil(); !got.Equal(later) {
		t.Fatalf("after Apply a's lease = %v, want %v", got, later)
	}
	rec := st.row(s.ID)
	old := until
	rec.LeaseUntil = &old
	st.mu.Lock()
	st.rows[s.ID] = rec
	st.mu.Unlock()
	if err := a.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.LeaseUntil(); !got.Equal(later) {
		t.Fatalf("a stale read moved the lease back to %v", got)
	}
}

func TestLapseWithTheStoreDownFailsClosed(t *testing.T) {
	st, c := newMemStore(), newClock()
	r := newRegistry(st, c)
	s, _ := leased(t, r, "")
	c.add(lease)
	st.setFail(errors.New("down"))
	res, err := r.Sweep(ctx)
	if err == nil || res.LeaseLapsed != 1 || !s.Revoked() {
		t.Fatalf("sweep with the store down = %+v, %v, revoked %v", res, err, s.Revoked())
	}
	if r.Unrecorded() != 1 {
		t.Fatalf("unrecorded = %d, want the lapse queued", r.Unrecorded())
	}
	st.setFail(nil)
	if err := r.RetryRevocations(ctx); err != nil {
		t.Fatal(err)
	}
	if st.row(s.ID).RevokedAt == nil {
		t.Fatal("the lapse never reached the store")
	}
}

func TestByAgentAndEndAgent(t *testing.T) {
	st, c := newMemStore(), newClock()
	r := newRegistry(st, c)
	a1, _ := leased(t, r, "ci-bot")
	c.add(time.Second)
	a2, _, _ := r.Create(ctx, Spec{Agent: "ci-bot", TTL: time.Hour})
	other, otherTok, _ := r.Create(ctx, Spec{Agent: "other", TTL: time.Hour})
	none, _, _ := r.Create(ctx, Spec{TTL: time.Hour})
	got := r.ByAgent("ci-bot")
	if len(got) != 2 || got[0] != a2 || got[1] != a1 {
		t.Fatalf("ByAgent = %v", got)
	}
	if len(r.ByAgent("nobody")) != 0 {
		t.Fatal("sessions for an unknown agent")
	}
	conn := &closer{}
	a1.Track(conn)
	ended := r.EndAgent("ci-bot")
	slices.Sort(ended)
	want := []string{a1.ID, a2.ID}
	slices.Sort(want)
	if !slices.Equal(ended, want) || !a1.Revoked() || !a2.Revoked() || !conn.closed.Load() {
		t.Fatalf("EndAgent = %v, revoked %v %v closed %v", ended, a1.Revoked(), a2.Revoked(), conn.closed.Load())
	}
	if other.Revoked() || none.Revoked() {
		t.Fatal("EndAgent ended another agent's session")
	}
	if _, err := r.Authenticate(otherTok); err != nil {
		t.Fatal(err)
	}
	if st.row(a1.ID).RevokedAt != nil {
		t.Fatal("EndAgent wrote to the store (deleting the agent does that)")
	}
	if len(r.EndAgent("ci-bot")) != 0 {
		t.Fatal("ended twice")
	}
}

func TestApplyTakesTheStoredLeaseOfANewSession(t *testing.T) {
	st, c := newMemStore(), newClock()
	a, b := newRegistry(st, c), newRegistry(st, c)
	s, tok := leased(t, a, "ci-bot")
	if err := b.Apply(ctx, s.ID); err != nil {
		t.Fatal(err)
	}
	got, err := b.Authenticate(tok)
	if err != nil {
		t.Fatal(err)
	}
	if got.Agent != "ci-bot" || got.LeaseTimeout != lease {
		t.Fatalf("applied = agent %q lease %v", got.Agent, got.LeaseTimeout)
	}
	want, _ := s.LeaseUntil()
	if u, _ := got.LeaseUntil(); !u.Equal(want) {
		t.Fatalf("applied lease until %v, want %v", u, want)
	}
	c.add(lease)
	if _, err := b.Authenticate(tok); !errors.Is(err, ErrLeaseExpired) {
		t.Fatalf("b after the lease: %v", err)
	}
}

func TestOnLeaseLapsedRunsBeforeTheClose(t *testing.T) {
	st, c := newMemStore(), newClock()
	r := newRegistry(st, c)
	s, _ := leased(t, r, "ci-bot")
	conn := &closer{}
	s.Track(conn)
	var calls int
	var openAtCall bool
	r.OnLeaseLapsed = func(_ context.Context, got *Session) {
		calls++
		openAtCall = got == s && !conn.closed.Load()
	}
	c.add(lease)
	if _, err := r.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if calls != 1 || !openAtCall || !conn.closed.Load() {
		t.Fatalf("OnLeaseLapsed called %d times, before the close %v; closed after %v", calls, openAtCall, conn.closed.Load())
	}
	r.Sweep(ctx)
	if calls != 1 {
		t.Fatalf("OnLeaseLapsed called again for an ended session: %d", calls)
	}
	// The store down: the connections close first.
	s2, _ := leased(t, r, "")
	conn2 := &closer{}
	s2.Track(conn2)
	r.OnLeaseLapsed = func(context.Context, *Session) { openAtCall = !conn2.closed.Load() }
	c.add(lease)
	st.setFail(errors.New("down"))
	r.Sweep(ctx)
	if openAtCall || !conn2.closed.Load() {
		t.Fatal("with the store down, the hook ran before the connections closed")
	}
}
