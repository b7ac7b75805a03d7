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
	r.Record(context.Background(), Entry{ID: "aud_given", Time: time.Unix(100, 0), Actor: "admin-token", ActorKind: ActorAdminToken, Action: Login})
	got := st.kept()
	want := []Entry{
		{ID: "aud_000000000000000000000001", Time: time.Date(2026, 3, 4, 4, 6, 7, 0, time.UTC), Actor: "alice", ActorKind: "operator", Action: OperatorCreate, Target: "bob", Client: "192.0.2.1", Detail: "role admin"},
		{ID: "aud_given", Time: time.Unix(100, 0).UTC(), Actor: "admin-token", ActorKind: ActorAdminToken, Action: Login},
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
	r.Record(context.Background(), Entry{Action: LoginFailed, ActorKind: ActorOperator, Target: huge, Actor: "bad\xffutf8", Detail: strings.Repeat("d", 300)})
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
		r.Record(ctx, Entry{Actor: "alice", ActorKind: ActorOperator, Action: CredentialPut, Target: fmt.Sprintf("cred%d", i), Detail: "store builtin version 3"})
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
	// Retrying while the store is down keeps everything, logs once,
	// and gives up after two refusals in a row.
	for range 5 {
		calls := st.calls
		if err := r.Retry(ctx); err == nil {
			t.Fatal("Retry succeeded against a down store")
		}
		if st.calls-calls != retryProbe {
			t.Fatalf("one Retry against a down store made %d writes", st.calls-calls)
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
	// Refused entries went to the back of the queue: the order of the
	// writes is not kept (the trail is ordered by time and id).
	slices.Sort(targets)
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
	r.Record(cctx, Entry{Actor: "alice", ActorKind: ActorOperator, Action: Logout})
	if r.Queued() != 1 {
		t.Fatal("an entry whose write was canceled was not queued")
	}
}

func TestRecordBound(t *testing.T) {
	r, st, logs := newRecorder()
	ctx := context.Background()
	st.setDown(true)
	for i := range MaxQueued + 25 {
		r.Record(ctx, Entry{Actor: "ci-bot", ActorKind: ActorAgent, Action: SessionCreate, Target: fmt.Sprint(i)})
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
				r.Record(ctx, Entry{Actor: "ada", ActorKind: ActorOperator, Action: ServicePut, Target: fmt.Sprintf("%d-%d", w, i)})
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
	r.Record(context.Background(), Entry{Actor: "alice", ActorKind: ActorOperator, Action: Login})
	st.setDown(true)
	r.Record(context.Background(), Entry{Actor: "alice", ActorKind: ActorOperator, Action: Login}) // no logger: no panic
	e := st.kept()[0]
	if !regexp.MustCompile(`^aud_[0-9a-f]{24}$`).MatchString(e.ID) || e.Time.Before(before.Add(-time.Second)) || e.Time.Location() != time.UTC {
		t.Fatalf("entry %+v", e)
	}
	if r.Queued() != 1 {
		t.Fatal("not queued")
	}
}

// TestRecordCleansControls: control characters never reach the trail
// (PostgreSQL refuses a NUL; an escape sequence rewrites the terminal
// of whoever reads the trail), nor do line separators or bidi controls.
func TestRecordCleansControls(t *testing.T) {
	r, st, _ := newRecorder()
	r.Record(context.Background(), Entry{
		Actor: "al\x00ice", ActorKind: ActorOperator, Action: LoginFailed,
		Target: "x\x00y\x1b[31m\u0085z\x7f\r\n\u2028\u2029\u202eevil\u2066\u200f",
		Client: "192.0.2.1\t", Detail: "a\tb\x01c é 🔑 \xff",
	})
	e := st.kept()[0]
	want := Entry{ID: e.ID, Time: e.Time, Actor: "alice", ActorKind: ActorOperator, Action: LoginFailed,
		Target: "xy[31mzevil", Client: "192.0.2.1 ", Detail: "a bc é 🔑 \uFFFD"}
	if e != want {
		t.Fatalf("kept %+q\nwant %+q", e, want)
	}
	for _, s := range []string{strings.Repeat("\x00", 1000), strings.Repeat("a\x1b", 300)} {
		if c := clean(s); len(c) > maxField || strings.ContainsAny(c, "\x00\x1b") {
			t.Errorf("clean(%.20q) = %.20q", s, c)
		}
	}
}

// TestRecordRefuses: an entry only a bug can make is not written but
// counted and logged.
func TestRecordRefuses(t *testing.T) {
	r, st, logs := newRecorder()
	for _, e := range []Entry{
		{Actor: "a", ActorKind: ActorOperator, Action: "made.up", Target: "x", Detail: "secretish"},
		{Actor: "a", ActorKind: ActorOperator, Action: "", Target: "x"},
		{Actor: "a", ActorKind: ActorOperator, Action: "login\x00", Target: "x"}, // cleaned, still not valid
		{Actor: "a", ActorKind: "robot", Action: Login, Target: "x"},
		{Actor: "a", ActorKind: "", Action: Login, Target: "x"},
		{Actor: "", ActorKind: ActorOperator, Action: Login, Target: "x"},
		{Actor: "\x00", ActorKind: ActorOperator, Action: Login, Target: "x"},
	} {
		r.Record(context.Background(), e)
	}
	if len(st.kept()) != 0 || st.calls != 0 || r.Queued() != 0 || r.Refused() != 7 || r.Dropped() != 0 {
		t.Fatalf("kept %d, calls %d, queued %d, refused %d", len(st.kept()), st.calls, r.Queued(), r.Refused())
	}
	lines := logs.All()
	if len(lines) != 7 || lines[0].Level != zapcore.ErrorLevel || lines[0].Message != "audit entry refused: unknown action (a bug)" ||
		lines[3].Message != "audit entry refused: unknown actor kind (a bug)" || lines[5].Message != "audit entry refused: no actor (a bug)" {
		t.Fatalf("logs %+v", lines)
	}
	if m := lines[0].ContextMap(); m["action"] != "made.up" || m["refused_total"] != uint64(1) || m["detail"] != nil || strings.Contains(fmt.Sprint(m), "secretish") {
		t.Errorf("log line %v", m)
	}
	// Every kind and action is accepted.
	for _, k := range ActorKinds() {
		for _, a := range Actions() {
			r.Record(context.Background(), Entry{Actor: "x", ActorKind: k, Action: a})
		}
	}
	if len(st.kept()) != len(ActorKinds())*len(Actions()) || r.Refused() != 7 {
		t.Errorf("kept %d", len(st.kept()))
	}
	if !slices.Equal(ActorKinds(), []string{"admin-token", "operator", "agent", "session", "broker"}) {
		t.Errorf("actor kinds %q", ActorKinds())
	}
	if s := r.Stats(); s != (Stats{Refused: 7}) {
		t.Errorf("Stats = %+v, want 7 refused", s)
	}
}

// poisonStore refuses, always, the entries whose target is "poison",
// and fails everything while down.
type poisonStore struct{ fakeStore }

func (s *poisonStore) Insert(ctx context.Context, e Entry) error {
	if e.Target == "poison" {
		s.mu.Lock()
		s.calls++
		s.mu.Unlock()
		return errors.New("value too long for type character varying")
	}
	return s.fakeStore.Insert(ctx, e)
}

// fakeTime is a clock tests move.
type fakeTime struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeTime) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeTime) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newPoisonRecorder() (*Recorder, *poisonStore, *fakeTime, *observer.ObservedLogs) {
	r, _, logs := newRecorder()
	st := &poisonStore{}
	clock := &fakeTime{t: time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)}
	r.Store, r.Now = st, clock.now
	return r, st, clock, logs
}

func targets(es []Entry) []string {
	var out []string
	for _, e := range es {
		out = append(out, e.Target)
	}
	slices.Sort(out)
	return out
}

// TestRetryPoison: an entry the store always refuses holds up no other
// entry, and once the store has refused it 5 times over a minute while
// writing others, it is dropped, counted and logged.
func TestRetryPoison(t *testing.T) {
	r, st, clock, logs := newPoisonRecorder()
	ctx := context.Background()
	st.setDown(true)
	r.Record(ctx, Entry{Actor: "a", ActorKind: ActorOperator, Action: Login, Target: "poison", Detail: "d-detail"})
	for i := range 3 {
		r.Record(ctx, Entry{Actor: "a", ActorKind: ActorOperator, Action: Login, Target: fmt.Sprint("good", i)})
	}
	st.setDown(false)
	// One pass writes the others, behind the poison.
	if err := r.Retry(ctx); err == nil || r.Queued() != 1 {
		t.Fatalf("Retry: %v, queued %d", err, r.Queued())
	}
	if got := targets(st.kept()); !slices.Equal(got, []string{"good0", "good1", "good2"}) {
		t.Fatalf("written %q", got)
	}
	// That pass was the first strike: the store wrote others since
	// the poison's refusal at Record. Nothing written since: no strike,
	// however often it is retried.
	for range 20 {
		clock.advance(time.Minute)
		_ = r.Retry(ctx)
	}
	if r.Queued() != 1 || r.Dropped() != 0 {
		t.Fatalf("queued %d dropped %d with nothing else written", r.Queued(), r.Dropped())
	}
	// Strikes 2 to 5, each after another entry was written.
	for i := 2; i <= maxStrikes; i++ {
		if r.Queued() != 1 {
			t.Fatalf("dropped after %d strikes", i-1)
		}
		r.Record(ctx, Entry{Actor: "a", ActorKind: ActorOperator, Action: Login, Target: fmt.Sprint("later", i)})
		_ = r.Retry(ctx)
	}
	if r.Queued() != 0 || r.Dropped() != 1 {
		t.Fatalf("queued %d dropped %d after %d strikes", r.Queued(), r.Dropped(), maxStrikes)
	}
	drops := logs.FilterMessage("audit entry dropped: the store refused it again and again while it wrote others").All()
	if len(drops) != 1 || drops[0].Level != zapcore.ErrorLevel {
		t.Fatalf("drop log %+v", drops)
	}
	if m := drops[0].ContextMap(); m["target"] != "poison" || m["attempts"] != int64(maxStrikes) || m["dropped_total"] != uint64(1) || strings.Contains(fmt.Sprint(m), "d-detail") {
		t.Errorf("drop log %v", m)
	}
}

// TestRetryPoisonSpan: strikes in quick succession (a store failing
// now and then) do not drop an entry before a minute has passed.
func TestRetryPoisonSpan(t *testing.T) {
	r, _, clock, _ := newPoisonRecorder()
	ctx := context.Background()
	r.Record(ctx, Entry{Actor: "a", ActorKind: ActorOperator, Action: Login, Target: "poison"})
	for i := range 3 * maxStrikes {
		r.Record(ctx, Entry{Actor: "a", ActorKind: ActorOperator, Action: Login, Target: fmt.Sprint(i)})
		clock.advance(time.Second)
		_ = r.Retry(ctx)
	}
	if r.Queued() != 1 || r.Dropped() != 0 {
		t.Fatalf("dropped after %d quick strikes", 3*maxStrikes)
	}
	clock.advance(strikeSpan)
	r.Record(ctx, Entry{Actor: "a", ActorKind: ActorOperator, Action: Login, Target: "x"})
	_ = r.Retry(ctx)
	if r.Queued() != 0 || r.Dropped() != 1 {
		t.Fatalf("queued %d dropped %d a minute on", r.Queued(), r.Dropped())
	}
}

// TestRetryCanceledNoStrike: a refusal because the caller's context
// ended is no strike.
func TestRetryCanceledNoStrike(t *testing.T) {
	r, st, clock, _ := newPoisonRecorder()
	ctx := context.Background()
	st.setDown(true)
	r.Record(ctx, Entry{Actor: "a", ActorKind: ActorOperator, Action: Login, Target: "t"})
	st.setDown(false)
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	for i := range 3 * maxStrikes {
		r.Record(ctx, Entry{Actor: "a", ActorKind: ActorOperator, Action: Login, Target: fmt.Sprint(i)})
		clock.advance(time.Minute)
		if err := r.Retry(cctx); !errors.Is(err, context.Canceled) {
			t.Fatalf("Retry: %v", err)
		}
	}
	if r.Queued() != 1 || r.Dropped() != 0 {
		t.Fatalf("queued %d dropped %d", r.Queued(), r.Dropped())
	}
	if err := r.Retry(ctx); err != nil || r.Queued() != 0 {
		t.Fatalf("Retry: %v, queued %d", err, r.Queued())
	}
}

// flakyStore refuses its first n writes.
type flakyStore struct {
	fakeStore
	n int
}

func (s *flakyStore) Insert(ctx context.Context, e Entry) error {
	s.mu.Lock()
	if s.n > 0 {
		s.n--
		s.calls++
		s.mu.Unlock()
		return errors.New("connection refused")
	}
	s.mu.Unlock()
	return s.fakeStore.Insert(ctx, e)
}

func TestFlush(t *testing.T) {
	r, _, logs := newRecorder()
	st := &flakyStore{n: 3 + 5} // the 3 Records, then 5 retries
	r.Store = st
	ctx := context.Background()
	for i := range 3 {
		r.Record(ctx, Entry{Actor: "a", ActorKind: ActorOperator, Action: Login, Target: fmt.Sprint(i)})
	}
	fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := r.Flush(fctx); err != nil || r.Queued() != 0 {
		t.Fatalf("Flush: %v, queued %d", err, r.Queued())
	}
	if got := targets(st.kept()); !slices.Equal(got, []string{"0", "1", "2"}) {
		t.Fatalf("written %q", got)
	}
	if logs.FilterMessage("audit entry not written before shutdown").Len() != 0 {
		t.Error("logged entries as lost")
	}
	if err := r.Flush(ctx); err != nil {
		t.Errorf("Flush of an empty queue: %v", err)
	}
}

func TestFlushDeadline(t *testing.T) {
	r, st, logs := newRecorder()
	ctx := context.Background()
	st.setDown(true)
	for i := range 3 {
		r.Record(ctx, Entry{Actor: "a", ActorKind: ActorOperator, Action: Login, Target: fmt.Sprint(i), Detail: "d-detail"})
	}
	fctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	err := r.Flush(fctx)
	if err == nil || !strings.Contains(err.Error(), "3 queued entries not written") || !strings.Contains(err.Error(), "state database unreachable") {
		t.Fatalf("Flush: %v", err)
	}
	lost := logs.FilterMessage("audit entry not written before shutdown").All()
	if len(lost) != 3 || lost[0].Level != zapcore.ErrorLevel {
		t.Fatalf("lost entries logged: %+v", lost)
	}
	var lostTargets []string
	for _, l := range lost {
		m := l.ContextMap()
		lostTargets = append(lostTargets, m["target"].(string))
		if strings.Contains(fmt.Sprint(m), "d-detail") || m["last_error"] == nil {
			t.Errorf("log line %v", m)
		}
	}
	slices.Sort(lostTargets)
	if !slices.Equal(lostTargets, []string{"0", "1", "2"}) || r.Queued() != 3 {
		t.Errorf("lost %q, queued %d", lostTargets, r.Queued())
	}
	// A context already over: one pass, then the report.
	cctx, ccancel := context.WithCancel(ctx)
	ccancel()
	if err := r.Flush(cctx); err == nil {
		t.Error("Flush with a canceled context and a down store succeeded")
	}
}

func TestFailedLogin(t *testing.T) {
	known := FailedLogin("alice", true, "192.0.2.1")
	if known != (Entry{Actor: "alice", ActorKind: ActorOperator, Action: LoginFailed, Target: "alice", Client: "192.0.2.1"}) {
		t.Errorf("known: %+v", known)
	}
	unknown := FailedLogin("correct horse battery", false, "192.0.2.1")
	if unknown.Actor != UnknownName || unknown.Target != UnknownName || strings.Contains(fmt.Sprint(unknown), "horse") {
		t.Errorf("unknown: %+v", unknown)
	}
	r, st, _ := newRecorder()
	r.Record(context.Background(), unknown)
	if len(st.kept()) != 1 || r.Refused() != 0 || st.kept()[0].Target != "(unknown name)" {
		t.Errorf("FailedLogin's entry not recorded: %+v", st.kept())
	}
}
