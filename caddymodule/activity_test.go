package caddymodule

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/agentvault/caddy-agent-vault/caddymodule/activity"
	"github.com/agentvault/caddy-agent-vault/caddymodule/apiwire"
	"github.com/agentvault/caddy-agent-vault/caddymodule/identity"
	"github.com/agentvault/caddy-agent-vault/caddymodule/services"
	"github.com/agentvault/caddy-agent-vault/storebackends"
)

// activityPipeline: service api (api-key API_KEY) on a TLS upstream,
// one session, and the agent's client.
func activityPipeline(t *testing.T) (*pipeline, *upstream, agentSession, *http.Client) {
	api := upstreamTLS(t, nil)
	pl := newPipeline(t, pipelineConfig{
		services: []services.Service{{Name: "api", Host: api.hostPort, Auth: services.Auth{Type: services.AuthAPIKey, Key: "API_KEY"}}},
		stores:   []storebackends.Store{builtin("API_KEY", apiKeySecret)},
	})
	s := pl.session(t)
	return pl, api, s, pl.agent(t, s, false)
}

// findEntry returns the first observed entry that match accepts.
func findEntry(t *testing.T, pl *pipeline, what string, match func(activity.Entry) bool) activity.Entry {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		added := pl.observed.added.wait()
		for _, e := range pl.observed.all() {
			if match(e) {
				return e
			}
		}
		select {
		case <-added:
		case <-deadline:
			t.Fatalf("no entry for %s among %+v", what, pl.observed.all())
		}
	}
}

// The proxy tells its observer of a forwarded request, a placeholder
// refusal, an uncovered host and a 407, with no query and no secret.
func TestActivityProxyEntries(t *testing.T) {
	pl, api, s, agent := activityPipeline(t)
	stranger := pl.session(t)

	wantStatus(t, get(t, agent, api.https("/v1/items?k="+s.ph(t, "API_KEY")+"&x=1")), http.StatusOK)
	fwd := findEntry(t, pl, "the forwarded request", func(e activity.Entry) bool { return e.Decision == activity.Forwarded })
	if fwd.Session != s.id || fwd.Service != "api" || fwd.Method != "GET" || fwd.Host != "127.0.0.1" || fwd.Path != "/v1/items" ||
		fwd.Status != 200 || fwd.Code != "" || !slices.Equal(fwd.Credentials, []string{"API_KEY"}) || fwd.Client != "127.0.0.1" ||
		fwd.At.IsZero() || fwd.Duration <= 0 || fwd.BytesOut <= 0 {
		t.Errorf("forwarded entry %+v", fwd)
	}

	wantRefusal(t, get(t, agent, api.https("/v1"), "X-Forwarded-Key", stranger.ph(t, "API_KEY")), 403, "placeholder")
	ph := findEntry(t, pl, "the placeholder refusal", func(e activity.Entry) bool { return e.Code == activity.CodePlaceholder })
	if ph.Decision != activity.Refused || ph.Status != 403 || ph.Session != s.id || ph.Service != "api" ||
		!strings.Contains(ph.Reason, "does not belong to this session") {
		t.Errorf("placeholder entry %+v", ph)
	}

	if a := pl.askInTunnel(t, "api.unknown.example:443", basicAuth(s.token)); a.status != 403 {
		t.Fatalf("uncovered host: %d", a.status)
	}
	un := findEntry(t, pl, "the uncovered host", func(e activity.Entry) bool { return e.Code == activity.CodeUncoveredHost })
	if un.Decision != activity.Refused || un.Method != "GET" || un.Host != "api.unknown.example" || un.Port != 443 || un.Session != s.id || un.Path != "/" {
		t.Errorf("uncovered entry %+v", un)
	}

	a, _ := pl.connect(t, api.hostPort, basicAuth("avs_not-a-session"))
	if a.status != 407 {
		t.Fatalf("bad token: %d", a.status)
	}
	auth := findEntry(t, pl, "the 407", func(e activity.Entry) bool { return e.Code == activity.CodeAuth })
	if auth.Decision != activity.Refused || auth.Status != 407 || auth.Session != "" || auth.Method != "CONNECT" || auth.Host != "127.0.0.1" {
		t.Errorf("407 entry %+v", auth)
	}
	for _, e := range pl.observed.all() {
		text, _ := json.Marshal(e)
		for _, secret := range []string{apiKeySecret, s.token, s.ph(t, "API_KEY"), "k="} {
			if strings.Contains(string(text), secret) {
				t.Errorf("entry holds %q: %s", secret, text)
			}
		}
	}
}

// activityList reads GET /api/v1/activity?q again after each batch the
// Recorder stores, until cond holds.
func activityList(t *testing.T, pl *pipeline, c apiCall, q string, cond func([]apiwire.ActivityEntry) bool) apiwire.ActivityList {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		written := pl.written.wait()
		var out apiwire.ActivityList
		pl.must(t, c, "GET", "/api/v1/activity?"+q, nil, 200, &out)
		if cond(out.Entries) {
			return out
		}
		select {
		case <-written:
		case <-deadline:
			t.Fatalf("GET /api/v1/activity?%s: %+v", q, out.Entries)
		}
	}
}

// Entries hold hosts in the canonical form (hostname.Normalize), also
// for a request refused before its target was checked (a 407), so the
// ?host= filter finds an uppercase or trailing-dot CONNECT target.
func TestActivityHostsNormalised(t *testing.T) {
	pl, _, s, _ := activityPipeline(t)
	if a, _ := pl.connect(t, "API.Unknown.Example.:443", basicAuth("avs_not-a-session")); a.status != 407 {
		t.Fatalf("bad token: %d", a.status)
	}
	if a := pl.askInTunnel(t, "API.UNKNOWN.example:443", basicAuth(s.token)); a.status != 403 {
		t.Fatalf("uncovered host: %d", a.status)
	}
	got := activityList(t, pl, pl.admin(), "host=API.Unknown.Example.", func(es []apiwire.ActivityEntry) bool { return len(es) >= 2 })
	for _, e := range got.Entries {
		if e.Host != "api.unknown.example" || e.Port != 443 {
			t.Errorf("entry host %q port %d, want api.unknown.example 443", e.Host, e.Port)
		}
	}
}

func TestActivityAPI(t *testing.T) {
	pl, api, s, agent := activityPipeline(t)
	stranger := pl.session(t)
	wantStatus(t, get(t, agent, api.https("/v1/items?k="+s.ph(t, "API_KEY"))), http.StatusOK)
	wantRefusal(t, get(t, agent, api.https("/v1"), "X-Forwarded-Key", stranger.ph(t, "API_KEY")), 403, "placeholder")
	pl.askInTunnel(t, "api.unknown.example:443", basicAuth(s.token))

	all := activityList(t, pl, pl.admin(), "", func(es []apiwire.ActivityEntry) bool { return len(es) >= 3 })
	raw := pl.must(t, pl.admin(), "GET", "/api/v1/activity", nil, 200, nil).body
	for _, secret := range []string{apiKeySecret, s.token, s.ph(t, "API_KEY"), "?k="} {
		if strings.Contains(raw, secret) {
			t.Errorf("the list holds %q: %s", secret, raw)
		}
	}
	if !strings.Contains(raw, `"credentials": []`) || !strings.Contains(raw, `"duration_ms"`) {
		t.Errorf("wire shape: %s", raw)
	}
	for i := 1; i < len(all.Entries); i++ {
		if all.Entries[i].At.After(all.Entries[i-1].At) {
			t.Fatalf("not newest first: %+v", all.Entries)
		}
	}
	e := all.Entries[len(all.Entries)-1]
	if e.Decision != "forwarded" || e.Path != "/v1/items" || e.Service != "api" || e.Instance != "test-broker" || e.Session != s.id {
		t.Errorf("oldest entry %+v", e)
	}

	for q, want := range map[string]int{
		"decision=refused":               2,
		"code=placeholder":               1,
		"decision=forwarded&service=api": 1,
		"host=api.unknown.example":       1,
		"status=403":                     2,
		"session=" + s.id:                3,
		"since=1h":                       3,
		"since=7d":                       3,
		"since=" + url.QueryEscape(time.Now().Add(time.Hour).Format(time.RFC3339)): 0,
		"agent=nobody": 0,
	} {
		var out apiwire.ActivityList
		pl.must(t, pl.admin(), "GET", "/api/v1/activity?"+q, nil, 200, &out)
		if len(out.Entries) != want {
			t.Errorf("?%s: %d entries, want %d", q, len(out.Entries), want)
		}
	}
	for q, frag := range map[string]string{
		"decision=maybe": "decision", "status=abc": "status", "code=nope": "code", "since=yesterday": "since",
		"since=-1h": "since", "before=x": "before", "limit=0": "limit", "limit=1001": "limit",
	} {
		wantAPIError(t, "?"+q, pl.call(t, pl.admin(), "GET", "/api/v1/activity?"+q, nil), 400, frag)
	}

	// Paging visits every entry once.
	seen := map[string]bool{}
	q := "limit=1"
	for {
		var page apiwire.ActivityList
		pl.must(t, pl.admin(), "GET", "/api/v1/activity?"+q, nil, 200, &page)
		for _, e := range page.Entries {
			if seen[e.ID] {
				t.Fatalf("%s twice", e.ID)
			}
			seen[e.ID] = true
		}
		if page.NextBefore == "" {
			break
		}
		q = "limit=1&before=" + url.QueryEscape(page.NextBefore)
	}
	if len(seen) != len(all.Entries) {
		t.Fatalf("paging saw %d of %d", len(seen), len(all.Entries))
	}

	var st apiwire.ActivityStats
	pl.must(t, pl.admin(), "GET", "/api/v1/activity/stats", nil, 200, &st)
	if st.Written < 3 || st.Dropped != 0 || st.Failed != 0 {
		t.Errorf("stats %+v", st)
	}

	// A viewer may read; an agent may not.
	pl.createOperator(t, "vera", "a long viewer password", "viewer")
	vera := asToken(pl.login(t, "vera", "a long viewer password").Token)
	pl.must(t, vera, "GET", "/api/v1/activity", nil, 200, nil)
	bot := pl.createAgent(t, "bot", []string{"api"}, "")
	if a := pl.call(t, asToken(bot.Token), "GET", "/api/v1/activity", nil); a.status != 403 {
		t.Errorf("agent: %d %s", a.status, a.body)
	}
	if a := pl.call(t, asToken(bot.Token), "GET", "/api/v1/activity/stream", nil); a.status != 403 {
		t.Errorf("agent stream: %d %s", a.status, a.body)
	}
}

// sseStream is an open GET /api/v1/activity/stream.
type sseStream struct {
	events chan sseEvent
	done   chan struct{} // closed when the server ends the stream
}

type sseEvent struct{ id, event, data string }

// openStream opens the stream and returns once it answered: it reads
// the log before it does, so every entry written after that is sent.
func openStream(t *testing.T, pl *pipeline, c apiCall, q string, header ...string) *sseStream {
	t.Helper()
	req, err := http.NewRequest("GET", pl.apiURL+"/api/v1/activity/stream?"+q, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("stream: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	st := &sseStream{events: make(chan sseEvent, 100), done: make(chan struct{})}
	go func() {
		defer close(st.done)
		sc := bufio.NewScanner(resp.Body)
		var ev sseEvent
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if ev.event != "" {
					st.events <- ev
				}
				ev = sseEvent{}
			case strings.HasPrefix(line, "id: "):
				ev.id = line[4:]
			case strings.HasPrefix(line, "event: "):
				ev.event = line[7:]
			case strings.HasPrefix(line, "data: "):
				ev.data = line[6:]
			}
		}
	}()
	return st
}

// next waits for the next activity event.
func (st *sseStream) next(t *testing.T) (string, apiwire.ActivityEntry) {
	t.Helper()
	for {
		select {
		case ev := <-st.events:
			if ev.event != "activity" {
				continue
			}
			var e apiwire.ActivityEntry
			if err := json.Unmarshal([]byte(ev.data), &e); err != nil {
				t.Fatalf("event data %q: %v", ev.data, err)
			}
			return ev.id, e
		case <-time.After(10 * time.Second):
			t.Fatal("no event within 10s")
		}
	}
}

func TestActivityStream(t *testing.T) {
	pl, api, s, agent := activityPipeline(t)
	wantStatus(t, get(t, agent, api.https("/before")), http.StatusOK)
	activityList(t, pl, pl.admin(), "", func(es []apiwire.ActivityEntry) bool { return len(es) == 1 })

	st := openStream(t, pl, pl.admin(), "service=api")
	wantStatus(t, get(t, agent, api.https("/first?q=1")), http.StatusOK)
	id1, e := st.next(t)
	if e.Path != "/first" || e.Session != s.id || e.Decision != "forwarded" {
		t.Fatalf("first event %+v", e) // the entry from before the stream is not sent
	}
	wantStatus(t, get(t, agent, api.https("/second")), http.StatusOK)
	id2, e := st.next(t)
	if e.Path != "/second" {
		t.Fatalf("second event %+v", e)
	}

	// Resuming after the first event delivers the second again.
	resumed := openStream(t, pl, pl.admin(), "", "Last-Event-ID", id1)
	if _, e := resumed.next(t); e.Path != "/second" {
		t.Fatalf("resumed event %+v", e)
	}
	// A page that lists up to /second opens its stream after that row
	// (?after=, as EventSource cannot set Last-Event-ID at first): what
	// came in between is not lost.
	wantStatus(t, get(t, agent, api.https("/between")), http.StatusOK)
	activityList(t, pl, pl.admin(), "", func(es []apiwire.ActivityEntry) bool { return len(es) == 4 })
	fromPage := openStream(t, pl, pl.admin(), "service=api&after="+url.QueryEscape(id2))
	if _, e := fromPage.next(t); e.Path != "/between" {
		t.Fatalf("event after the page's newest row %+v", e)
	}
	wantAPIError(t, "bad after", pl.call(t, pl.admin(), "GET", "/api/v1/activity/stream?after=nope", nil), 400, "after")
	badID := pl.call(t, apiCall{token: pl.adminToken, headers: []string{"Last-Event-ID", "nope"}}, "GET", "/api/v1/activity/stream", nil)
	wantAPIError(t, "bad Last-Event-ID", badID, 400, "Last-Event-ID: want a cursor")
	if strings.Contains(badID.errText(), `"before"`) {
		t.Errorf("the Last-Event-ID error names another parameter: %s", badID.errText())
	}
	wantAPIError(t, "bad filter", pl.call(t, pl.admin(), "GET", "/api/v1/activity/stream?decision=x", nil), 400, "decision")

	// The stream ends when its login does.
	pl.createOperator(t, "olga", "a long operator password", "viewer")
	olga := asToken(pl.login(t, "olga", "a long operator password").Token)
	ost := openStream(t, pl, olga, "")
	pl.must(t, olga, "POST", "/api/v1/logout", nil, 204, nil)
	select {
	case <-ost.done:
	case <-time.After(10 * time.Second):
		t.Fatal("the stream outlived its login")
	}
}

// A config reload ends the old config's open streams: Caddy's old
// server waits for them, and they would keep checking logins against
// the old config's admin token (here changed by the reload).
func TestActivityStreamEndsOnReload(t *testing.T) {
	cfg := brokerConfig{dir: t.TempDir(), api: freeAddr(t), proxy: freeAddr(t), ttl: 60}
	runBroker(t, cfg)
	req, err := http.NewRequest("GET", "http://"+cfg.api+"/api/v1/activity/stream", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer 0123456789abcdef0123")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("stream: %d", resp.StatusCode)
	}
	ended := make(chan struct{})
	go func() {
		defer close(ended)
		_, _ = io.Copy(io.Discard, resp.Body)
	}()
	next := cfg
	next.ttl = 61
	if err := caddy.Load(next.json(), true); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ended:
	case <-time.After(10 * time.Second):
		t.Fatal("the stream outlived its config")
	}
}

// countingLister counts the reads of the log that returned.
type countingLister struct {
	activity.Lister
	reads atomic.Int32
}

func (l *countingLister) ListActivity(ctx context.Context, f activity.Filter) ([]activity.Entry, error) {
	defer l.reads.Add(1)
	return l.Lister.ListActivity(ctx, f)
}

// headerProbe notes how many reads of the log were done when the
// stream answered, and ends the request at its first flush.
type headerProbe struct {
	*httptest.ResponseRecorder
	lister        *countingLister
	readsAtHeader int32
	end           context.CancelFunc
}

func (p *headerProbe) WriteHeader(code int) {
	p.readsAtHeader = p.lister.reads.Load()
	p.ResponseRecorder.WriteHeader(code)
}

func (p *headerProbe) Flush() { p.ResponseRecorder.Flush(); p.end() }

// The stream answers only once it has read the log: whatever is written
// after the client sees the answer is news, and is sent.
func TestActivityStreamReadsBeforeAnswering(t *testing.T) {
	l := &countingLister{Lister: &emptyLister{}}
	a := &API{logger: zap.NewNop(), deps: apiDeps{activity: l, streamPoll: time.Hour}}
	a.routes()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w := &headerProbe{ResponseRecorder: httptest.NewRecorder(), lister: l, end: cancel}
	ctx = context.WithValue(ctx, callerKey{}, &caller{Principal: identity.AdminTokenPrincipal()})
	a.streamActivity(w, httptest.NewRequest("GET", "/api/v1/activity/stream", nil).WithContext(ctx))
	if w.Code != 200 || w.readsAtHeader == 0 {
		t.Fatalf("answered %d after %d reads of the log, want 200 after the first", w.Code, w.readsAtHeader)
	}
}

// emptyLister is an empty activity log.
type emptyLister struct{}

func (*emptyLister) ListActivity(context.Context, activity.Filter) ([]activity.Entry, error) {
	return nil, nil
}

// testClock is a clock a test moves.
type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *testClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *testClock) advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// An idle stream sends a keep-alive once 15s passed on its clock, and
// Cleanup (the config unloaded) ends it.
func TestActivityStreamKeepAliveAndCleanup(t *testing.T) {
	token := "ava_" + strings.Repeat("0123456789abcdef", 4)
	clock := &testClock{now: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)}
	ticks, stopped := make(chan time.Time), make(chan struct{})
	a := &API{logger: zap.NewNop(), deps: apiDeps{adminToken: token, activity: &emptyLister{}, now: clock.Now,
		streamTicks: func(time.Duration) (<-chan time.Time, func()) { return ticks, func() { close(stopped) } }}}
	a.routes()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { a.ServeHTTP(w, r, nil) }))
	defer srv.Close()
	req, _ := http.NewRequest("GET", srv.URL+"/api/v1/activity/stream", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	lines := make(chan string, 10)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if sc.Text() != "" {
				lines <- sc.Text()
			}
		}
	}()
	next := func() string {
		t.Helper()
		select {
		case l := <-lines:
			return l
		case <-time.After(10 * time.Second):
			t.Fatal("no line within 10s")
			return ""
		}
	}
	if l := next(); l != ": stream open" {
		t.Fatalf("first line %q", l)
	}
	clock.advance(streamKeepAlive)
	ticks <- clock.Now()
	if l := next(); l != ": keep-alive" {
		t.Fatalf("after 15s idle: %q", l)
	}
	a.Cleanup()
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		t.Fatal("the stream outlived Cleanup")
	}
	if l, open := <-lines; open {
		t.Fatalf("after Cleanup: %q", l)
	}
}

// An entry's time is when the request ended, so that a long request is
// not older than the entries recorded before it (the live stream
// follows the log in that order): At - Duration is when it arrived.
func TestActivityEntryTimeIsTheEnd(t *testing.T) {
	arrived, release := make(chan struct{}), make(chan struct{})
	up := upstreamTLS(t, func(w http.ResponseWriter, r *http.Request) {
		close(arrived)
		<-release
		w.Write([]byte("done"))
	})
	pl := newPipeline(t, pipelineConfig{
		services: []services.Service{{Name: "slow", Host: up.hostPort, Auth: services.Auth{Type: services.AuthAPIKey, Key: "API_KEY"}}},
		stores:   []storebackends.Store{builtin("API_KEY", apiKeySecret)},
	})
	s := pl.session(t)
	agent := pl.agent(t, s, false)
	done := make(chan *http.Response, 1)
	go func() {
		resp, err := agent.Get(up.https("/slow"))
		if err != nil {
			t.Error(err)
		}
		done <- resp
	}()
	<-arrived
	mid := time.Now()
	close(release)
	if resp := <-done; resp != nil {
		resp.Body.Close()
	}
	e := findEntry(t, pl, "the slow request", func(e activity.Entry) bool { return e.Path == "/slow" })
	if !e.At.After(mid) || !e.At.Add(-e.Duration).Before(mid) {
		t.Errorf("entry at %v with duration %v: want it to end after %v and to have begun before", e.At, e.Duration, mid)
	}
}

// One caller cannot take every stream of the broker: past
// maxStreamsPerCaller its next stream is 429, while another caller
// still gets one; closing one gives its place back.
func TestActivityStreamsPerCaller(t *testing.T) {
	pl, _, _, _ := activityPipeline(t)
	pl.createOperator(t, "vic", "a long viewer password", "viewer")
	vic := asToken(pl.login(t, "vic", "a long viewer password").Token)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var first context.CancelFunc
	for i := range maxStreamsPerCaller {
		sctx, scancel := context.WithCancel(ctx)
		defer scancel()
		if i == 0 {
			first = scancel
		}
		req, _ := http.NewRequestWithContext(sctx, "GET", pl.apiURL+"/api/v1/activity/stream", nil)
		req.Header.Set("Authorization", "Bearer "+vic.token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("stream %d: %d", i, resp.StatusCode)
		}
	}
	a := pl.call(t, vic, "GET", "/api/v1/activity/stream", nil)
	if a.status != http.StatusTooManyRequests || !strings.Contains(string(a.body), "per caller") {
		t.Fatalf("stream %d of one caller: %d %s, want 429", maxStreamsPerCaller+1, a.status, a.body)
	}
	openStream(t, pl, pl.admin(), "") // another caller
	first()
	deadline := time.Now().Add(10 * time.Second)
	for {
		req, _ := http.NewRequestWithContext(ctx, "GET", pl.apiURL+"/api/v1/activity/stream", nil)
		req.Header.Set("Authorization", "Bearer "+vic.token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after closing a stream: %d, want its place back", resp.StatusCode)
		}
		time.Sleep(20 * time.Millisecond) // the server notices the closed stream at its next poll
	}
}

// A tunnel to an uncovered host in which the agent sends nothing (it
// gave up, or did not trust the leaf) is logged as the refused CONNECT;
// one request in it is logged as that request, once.
func TestActivityRefusedTunnelWithoutRequest(t *testing.T) {
	pl, _, s, _ := activityPipeline(t)
	a, conn := pl.connect(t, "quiet.unknown.example:443", basicAuth(s.token))
	if a.status != http.StatusOK {
		t.Fatalf("CONNECT: %d", a.status)
	}
	conn.Close()
	un := findEntry(t, pl, "the refused CONNECT", func(e activity.Entry) bool { return e.Host == "quiet.unknown.example" })
	if un.Method != "CONNECT" || un.Code != activity.CodeUncoveredHost || un.Status != 403 || un.Decision != activity.Refused || un.Session != s.id {
		t.Errorf("entry %+v", un)
	}

	// HTTP/2 inside the refused tunnel gets the same answer.
	wantRefusal(t, get(t, pl.agent(t, s, true), "https://h2.unknown.example/x"), http.StatusForbidden, "no service in this session's scope covers h2.unknown.example:443")
	h2 := findEntry(t, pl, "the h2 request", func(e activity.Entry) bool { return e.Host == "h2.unknown.example" })
	if h2.Method != "GET" || h2.Path != "/x" {
		t.Errorf("entry %+v", h2)
	}
	for _, e := range pl.observed.all() {
		if e.Host == "h2.unknown.example" && e.Method == "CONNECT" {
			t.Errorf("a tunnel that carried a request was also logged as a CONNECT: %+v", e)
		}
	}
}

// The hosts agents tried that nothing covers are aggregated and listed
// by GET /api/v1/discovered: counts, the auth scheme named (never the
// value), the agent's session; a covered host is not listed.
func TestDiscoveredHosts(t *testing.T) {
	pl, api, s, agent := activityPipeline(t)
	const key = "sk_live_never_stored_123"
	for range 3 {
		if a := pl.askInTunnel(t, "api.stripe.example:443", basicAuth(s.token), "Authorization: Bearer "+key); a.status != 403 {
			t.Fatalf("uncovered host: %d", a.status)
		}
	}
	pl.askInTunnel(t, "api.stripe.example:443", basicAuth(s.token), "X-Api-Key: "+key)
	pl.askInTunnel(t, "other.example:8443", basicAuth(s.token))
	wantStatus(t, get(t, agent, api.https("/v1/items")), http.StatusOK)
	findEntry(t, pl, "the last refusal", func(e activity.Entry) bool { return e.Host == "other.example" })
	if err := pl.discovered.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	var out apiwire.DiscoveredList
	raw := pl.must(t, pl.admin(), "GET", "/api/v1/discovered", nil, 200, &out).body
	if strings.Contains(raw, key) {
		t.Fatalf("the list holds the key: %s", raw)
	}
	if len(out.Hosts) != 2 {
		t.Fatalf("hosts %+v", out.Hosts)
	}
	byHost := map[string]apiwire.DiscoveredHost{}
	for _, h := range out.Hosts {
		byHost[h.Host] = h
	}
	st := byHost["api.stripe.example"]
	if st.Port != 443 || st.Count != 4 || !slices.Equal(st.Schemes, []string{"Bearer", "header X-Api-Key"}) || !slices.Equal(st.Sessions, []string{s.id}) ||
		st.FirstSeen.IsZero() || st.LastSeen.Before(st.FirstSeen) {
		t.Errorf("api.stripe.example %+v", st)
	}
	if o := byHost["other.example"]; o.Port != 8443 || o.Count != 1 || len(o.Schemes) != 0 {
		t.Errorf("other.example %+v", o)
	}
	pl.must(t, pl.admin(), "GET", "/api/v1/discovered?limit=x", nil, 400, nil)
}
