package audit

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

func TestActions(t *testing.T) {
	want := strings.Fields(`credential.put credential.delete service.put service.delete agent.create
		agent.update agent.delete agent.rotate operator.create operator.update operator.delete session.create
		session.revoke session.lease_expired request.create request.approve request.deny login login.failed logout`)
	var got []string
	for _, a := range Actions() {
		got = append(got, string(a))
		if p, err := ParseAction(string(a)); err != nil || p != a || !a.Valid() {
			t.Errorf("ParseAction(%q) = %q, %v", a, p, err)
		}
	}
	if !slices.Equal(got, want) {
		t.Fatalf("actions %q, want %q", got, want)
	}
	for _, s := range []string{"", "login ", "Login", "credential", "credential.get", strings.Repeat("x", 1000)} {
		if _, err := ParseAction(s); err == nil || !strings.Contains(err.Error(), "unknown audit action") || len(err.Error()) > 600 {
			t.Errorf("ParseAction(%.20q): %v", s, err)
		}
	}
}

func TestNewID(t *testing.T) {
	re := regexp.MustCompile(`^aud_[0-9a-f]{24}$`)
	a, b := NewID(), NewID()
	if !re.MatchString(a) || a == b {
		t.Fatalf("ids %q %q", a, b)
	}
}

// fakeStore fails while down is set and records what it kept.
type fakeStore struct {
	mu      sync.Mutex
	down    bool
	entries []Entry
	calls   int
}

func (s *fakeStore) Insert(ctx context.Context, e Entry) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	if s.down {
		return errors.New("state database unreachable")
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	s.entries = append(s.entries, e)
	return nil
}

func (s *fakeStore) setDown(down bool) {
	s.mu.Lock()
	s.down = down
	s.mu.Unlock()
}

func (s *fakeStore) kept() []Entry {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.entries)
}

func newRecorder() (*Recorder, *fakeStore, *observer.ObservedLogs) {
	core, logs := observer.New(zapcore.DebugLevel)
	st := &fakeStore{}
	n := 0
	var mu sync.Mutex
	r := &Recorder{
		Store:  st,
		Logger: zap.New(core),
		Now:    func() time.Time { return time.Date(2026, 3, 4, 5, 6, 7, 0, time.FixedZone("x", 3600)) },
		NewID: func() string {
			mu.Lock()
			defer mu.Unlock()
			n++
			return fmt.Sprintf("aud_%024x", n)
		},
	}
	return r, st, logs
}

func TestRecord(t *testing.T) {
	r, st, logs := newRecorder()
	r.Record(context.Background(), Entry{Actor: "alice", ActorKind: "operator", Action: OperatorCreate, Target: "bob", Client: "192.0.2.1", Detail: "role admin"})
	r.Record(context.Background(), Entry{ID: "aud_given", Time: time.Unix(100, 0), Action: Login})
	got := st.kept()
	want := []Entry{
		{ID: "aud_000000000000000000000001", Time: time.Date(2026, 3, 4, 4, 6, 7, 0, time.UTC), Actor: "alice", ActorKind: "operator", Action: OperatorCreate, Target: "bob", Client: "192.0.2.1", Detail: "role admin"},
		{ID: "aud_given", Time: time.Unix(100, 0).UTC(), Action: Login},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("kept %+v\nwant %+v", got, want)
	}
	if got[0].Time.Location() != time.UTC {
		t.Error("time not in UTC")
	}
	if logs.Len() != 0 || r.Queued() != 0 {
		t.Errorf("%d log lines, %d queued after success", logs.Len(), r.Queued())
	}
}

func TestRecordCleans(t *testing.T) {
	r, st, _ := newRecorder()
	huge := strings.Repeat("é", 1000)
	r.Record(context.Background(), Entry{Action: LoginFailed, Target: huge, Actor: "bad\xffutf8", Detail: strings.Repeat("d", 300)})
	e := st.kept()[0]
	if len(e.Target) > maxField || !strings.HasSuffix(e.Target, "é...") || !strings.HasPrefix(e.Target, "éé") {
		t.Errorf("target cut to %d bytes: %.20q...", len(e.Target), e.Target)
	}
	if e.Actor != "bad\uFFFDutf8" || len(e.Detail) != maxField {
		t.Errorf("actor %q detail %d bytes", e.Actor, len(e.Detail))
	}
}

func TestRecordRetry(t *testing.T) {
	r, st, logs := newRecorder()
	ctx := context.Background()
	st.setDown(true)
	for i := range 3 {
		r.Record(ctx, Entry{Actor: "alice", Action: CredentialPut, Target: fmt.Sprintf("cred%d", i), Detail: "store builtin version 3"})
	}
	if r.Queued() != 3 || len(st.kept()) != 0 {
		t.Fatalf("queued %d", r.Queued())
	}
	lines := logs.FilterMessage("audit entry not written; it is queued and retried").All()
	if len(lines) != 3 || lines[0].Level != zapcore.ErrorLevel {
		t.Fatalf("log lines %+v", logs.All())
	}
	for _, l := range logs.All() {
		m := l.ContextMap()
		if m["target"] == nil || m["id"] == nil || m["error"] == nil {
			t.Errorf("log line lacks the entry: %v", m)
		}
		for k, v := range m {
			if strings.Contains(fmt.Sprint(v), "builtin version") || k == "detail" {
				t.Errorf("log line holds the detail: %v", m)
			}
		}
	}
	// Retrying while the store is down keeps everything and logs once.
	for range 5 {
		if err := r.Retry(ctx); err == nil {
			t.Fatal("Retry succeeded against a down store")
		}
	}
	if r.Queued() != 3 || logs.FilterMessage("retrying queued audit entries failed; retrying later").Len() != 1 {
		t.Fatalf("queued %d; logs %v", r.Queued(), logs.All())
	}
	st.setDown(false)
	if err := r.Retry(ctx); err != nil {
		t.Fatal(err)
	}
	var targets []string
	for _, e := range st.kept() {
		targets = append(targets, e.Target)
		if e.Detail != "store builtin version 3" {
			t.Errorf("detail lost: %+v", e)
		}
	}
	if !slices.Equal(targets, []string{"cred0", "cred1", "cred2"}) || r.Queued() != 0 {
		t.Fatalf("written %q, queued %d", targets, r.Queued())
	}
	if logs.FilterMessage("queued audit entries written").Len() != 1 {
		t.Error("recovery not logged")
	}
	calls := st.calls
	if err := r.Retry(ctx); err != nil || st.calls != calls {
		t.Error("Retry of an empty queue wrote something")
	}
	// A canceled context queues too.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	r.Record(cctx, Entry{Action: Logout})
	if r.Queued() != 1 {
		t.Fatal("an entry whose write was canceled was not queued")
	}
}

func TestRecordBound(t *testing.T) {
	r, st, logs := newRecorder()
	ctx := context.Background()
	st.setDown(true)
	for i := range MaxQueued + 25 {
		r.Record(ctx, Entry{Action: SessionCreate, Target: fmt.Sprint(i)})
	}
	if r.Queued() != MaxQueued || r.Dropped() != 25 {
		t.Fatalf("queued %d dropped %d", r.Queued(), r.Dropped())
	}
	drops := logs.FilterMessage("audit entry not written and dropped: the retry queue is full").All()
	if len(drops) != 25 || drops[24].ContextMap()["dropped_total"] != uint64(25) {
		t.Fatalf("%d drop lines; last %v", len(drops), drops[len(drops)-1].ContextMap())
	}
	st.setDown(false)
	if err := r.Retry(ctx); err != nil {
		t.Fatal(err)
	}
	kept := st.kept()
	if len(kept) != MaxQueued || kept[0].Target != "0" || kept[MaxQueued-1].Target != fmt.Sprint(MaxQueued-1) {
		t.Fatalf("%d written, first %q", len(kept), kept[0].Target)
	}
}

// TestRecorderConcurrent: Record and Retry from many goroutines lose
// nothing and write nothing twice (run with -race).
func TestRecorderConcurrent(t *testing.T) {
	r, st, _ := newRecorder()
	ctx := context.Background()
	var wg sync.WaitGroup
	const writers, each = 8, 200
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				st.setDown(i%3 == 0)
				r.Record(ctx, Entry{Action: ServicePut, Target: fmt.Sprintf("%d-%d", w, i)})
			}
		})
	}
	for range 2 {
		wg.Go(func() {
			for range 100 {
				_ = r.Retry(ctx)
			}
		})
	}
	wg.Wait()
	st.setDown(false)
	if err := r.Retry(ctx); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, e := range st.kept() {
		if seen[e.ID] {
			t.Fatalf("entry %s written twice", e.ID)
		}
		seen[e.ID] = true
	}
	if len(seen) != writers*each || r.Queued() != 0 || r.Dropped() != 0 {
		t.Fatalf("%d written of %d; queued %d dropped %d", len(seen), writers*each, r.Queued(), r.Dropped())
	}
}

func TestRecorderDefaults(t *testing.T) {
	st := &fakeStore{}
	r := &Recorder{Store: st}
	before := time.Now()
	r.Record(context.Background(), Entry{Action: Login})
	st.setDown(true)
	r.Record(context.Background(), Entry{Action: Login}) // no logger: no panic
	e := st.kept()[0]
	if !regexp.MustCompile(`^aud_[0-9a-f]{24}$`).MatchString(e.ID) || e.Time.Before(before.Add(-time.Second)) || e.Time.Location() != time.UTC {
		t.Fatalf("entry %+v", e)
	}
	if r.Queued() != 1 {
		t.Fatal("not queued")
	}
}
