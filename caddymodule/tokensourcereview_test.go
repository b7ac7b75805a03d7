package caddymodule

// The second review of token sources (issue 14): each test is a user
// journey that failed before its fix.

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/agentvault/caddy-agent-vault/caddymodule/credentials"
	"github.com/agentvault/caddy-agent-vault/caddymodule/state"
	"github.com/agentvault/caddy-agent-vault/storebackends"
	builtinstore "github.com/agentvault/caddy-agent-vault/storebackends/builtin"
)

// gatedServer is a rotating token endpoint (see rotatingServer) whose
// calls each announce themselves on arrived and then wait for release.
func gatedServer(t *testing.T, initial string) (srv *httptest.Server, arrived chan string, release chan struct{}, seen func() []string) {
	var mu sync.Mutex
	accepted, n := initial, 0
	var got []string
	arrived, release = make(chan string, 16), make(chan struct{})
	srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.ParseForm()
		presented := r.PostForm.Get("refresh_token")
		arrived <- presented
		<-release
		mu.Lock()
		defer mu.Unlock()
		got = append(got, presented)
		if presented != accepted {
			w.WriteHeader(400)
			fmt.Fprint(w, `{"error":"invalid_grant"}`)
			return
		}
		n++
		accepted = fmt.Sprintf("rt-rotated-%d", n)
		json.NewEncoder(w).Encode(map[string]any{"access_token": fmt.Sprintf("at-%d", n), "expires_in": 3600, "refresh_token": accepted})
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() {
		select {
		case <-release:
		default:
			close(release)
		}
	})
	return srv, arrived, release, func() []string { mu.Lock(); defer mu.Unlock(); return slices.Clone(got) }
}

// A source deleted and defined again (another token_url, another
// refresh token) while a fetch of the old definition runs: the new
// definition presents its own refresh token to its own endpoint, never
// the one the old fetch rotated.
func TestTokenSourceDeleteRecreateDuringFetch(t *testing.T) {
	old, arrived, release, _ := gatedServer(t, "rt-0")
	nw, seen := rotatingServer(t, "rt-new-0")
	ctx := context.Background()
	st := &flakyStore{vals: map[string]string{"RT": "rt-0", "RT2": "rt-new-0"}, fail: true}
	set, _ := credentials.New([]credentials.Store{{Name: "builtin", Store: st}})
	// One client trusting both test servers.
	client := old.Client()
	client.Transport.(*http.Transport).TLSClientConfig.RootCAs.AddCert(nw.Certificate())
	ts := newTokenSources(openTestStateDB(t, zap.NewNop()), set, nil, client, zap.NewNop())
	spec1, doc1 := refreshSpec(old, "RT")
	if _, err := ts.put(ctx, "MAIL", spec1, doc1); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { set.Snapshot().Resolve(ctx, "MAIL", time.Now()); close(done) }()
	<-arrived
	if _, err := ts.delete(ctx, "MAIL"); err != nil {
		t.Fatal(err)
	}
	spec2, doc2 := refreshSpec(nw, "RT2")
	if _, err := ts.put(ctx, "MAIL", spec2, doc2); err != nil {
		t.Fatal(err)
	}
	close(release)
	<-done
	tok, err := set.Snapshot().Resolve(ctx, "MAIL", time.Now())
	if err != nil || tok != "at-1" || !slices.Equal(seen(), []string{"rt-new-0"}) {
		t.Fatalf("new definition: %q %v; its endpoint saw %v", tok, err, seen())
	}
}

// Two brokers on one database, both cold, both asked at once: one
// presents the refresh token, the other waits for the fetch lease and
// presents the rotated one; nobody gets invalid_grant.
func TestTokenSourceTwoBrokersOneRefreshToken(t *testing.T) {
	srv, arrived, release, seen := gatedServer(t, "rt-0")
	db := openTestStateDB(t, zap.NewNop())
	a, b := sealingBroker(t, db, srv.Client()), sealingBroker(t, db, srv.Client())
	raceTwoBrokers(t, a, b, srv, arrived, release, seen)
}

// A re-PUT that keeps the refresh place (scopes changed) while a fetch
// runs: the new Source waits for the old one's fetch and presents the
// refresh token it rotated.
func TestTokenSourceRePutDuringFetch(t *testing.T) {
	srv, arrived, release, seen := gatedServer(t, "rt-0")
	ctx := context.Background()
	st := &flakyStore{vals: map[string]string{"RT": "rt-0"}}
	set, _ := credentials.New([]credentials.Store{{Name: "builtin", Store: st}})
	ts := newTokenSources(openTestStateDB(t, zap.NewNop()), set, nil, srv.Client(), zap.NewNop())
	spec, doc := refreshSpec(srv, "RT")
	if _, err := ts.put(ctx, "MAIL", spec, doc); err != nil {
		t.Fatal(err)
	}
	oldDone := make(chan error, 1)
	go func() { _, err := set.Snapshot().Resolve(ctx, "MAIL", time.Now()); oldDone <- err }()
	<-arrived
	spec.Scopes = []string{"more"}
	doc, _ = json.Marshal(spec)
	if _, err := ts.put(ctx, "MAIL", spec, doc); err != nil {
		t.Fatal(err)
	}
	newDone := make(chan error, 1)
	go func() { _, err := set.Snapshot().Resolve(ctx, "MAIL", time.Now()); newDone <- err }()
	select {
	case rt := <-arrived:
		t.Errorf("the new Source presented %s while the old one's fetch was running", rt)
	case <-time.After(300 * time.Millisecond):
	}
	close(release)
	if err := <-oldDone; err != nil {
		t.Fatalf("old Source: %v", err)
	}
	if err := <-newDone; err != nil || !slices.Equal(seen(), []string{"rt-0", "rt-rotated-1"}) {
		t.Fatalf("new Source: %v; presented %v", err, seen())
	}
}

// The feed reads a row and applies it later: a row older than a
// rotation already applied does not bring the dead refresh token back.
func TestTokenSourceFeedIgnoresOlderRow(t *testing.T) {
	srv, seen := rotatingServer(t, "rt-0")
	ctx := context.Background()
	db := openTestStateDB(t, zap.NewNop())
	a := sealingBroker(t, db, srv.Client())
	spec, doc := refreshSpec(srv, "RT")
	if _, err := a.put(ctx, "MAIL", spec, doc); err != nil {
		t.Fatal(err)
	}
	tok, err := a.creds.Snapshot().Resolve(ctx, "MAIL", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	before, _, _ := db.GetTokenSource(ctx, "MAIL") // holds rt-rotated-1
	src, _ := a.creds.Snapshot().Source("MAIL")
	src.MarkStale(tok)
	if _, err := a.creds.Snapshot().Resolve(ctx, "MAIL", time.Now()); err != nil {
		t.Fatal(err)
	}
	a.putMu.Lock()
	a.applyRow(before)
	a.putMu.Unlock()
	a.mu.Lock()
	kept := a.rotated["MAIL"]
	a.mu.Unlock()
	if kept != "rt-rotated-2" {
		t.Fatalf("an older row brought back %q; presented %v", kept, seen())
	}
}

// A redefinition (another token_url) and a delete followed by a new
// definition keep scrubbing the tokens handed out before.
func TestTokenSourceRedefinitionKeepsScrubbing(t *testing.T) {
	srv, _ := rotatingServer(t, "rt-0")
	ctx := context.Background()
	st := &flakyStore{vals: map[string]string{"RT": "rt-0"}}
	set, _ := credentials.New([]credentials.Store{{Name: "builtin", Store: st}})
	ts := newTokenSources(openTestStateDB(t, zap.NewNop()), set, nil, srv.Client(), zap.NewNop())
	spec, doc := refreshSpec(srv, "RT")
	if _, err := ts.put(ctx, "MAIL", spec, doc); err != nil {
		t.Fatal(err)
	}
	if tok, err := set.Snapshot().Resolve(ctx, "MAIL", time.Now()); err != nil || tok != "at-1" {
		t.Fatalf("%q %v", tok, err)
	}
	spec.TokenURL = srv.URL + "/v2/token"
	doc, _ = json.Marshal(spec)
	if _, err := ts.put(ctx, "MAIL", spec, doc); err != nil {
		t.Fatal(err)
	}
	if got := set.Snapshot().TokensForScrubbing("MAIL"); !slices.Contains(got, "at-1") {
		t.Fatalf("after a redefinition MAIL scrubs %v", got)
	}
	if _, err := ts.delete(ctx, "MAIL"); err != nil {
		t.Fatal(err)
	}
	if _, err := ts.put(ctx, "MAIL", spec, doc); err != nil {
		t.Fatal(err)
	}
	if got := set.Snapshot().TokensForScrubbing("MAIL"); !slices.Contains(got, "at-1") {
		t.Fatalf("after a delete and a new definition MAIL scrubs %v", got)
	}
}

// An operator's PUT of the refresh token credential wins over a
// rotated one kept in memory (the write-back failed) or sealed.
func TestTokenSourceOperatorPutWinsOverRotation(t *testing.T) {
	srv, seen := rotatingServer(t, "rt-0")
	ctx := context.Background()
	st := &flakyStore{vals: map[string]string{"RT": "rt-0"}, fail: true}
	set, _ := credentials.New([]credentials.Store{{Name: "builtin", Store: st}})
	ts := newTokenSources(openTestStateDB(t, zap.NewNop()), set, nil, srv.Client(), zap.NewNop())
	spec, doc := refreshSpec(srv, "RT")
	if _, err := ts.put(ctx, "MAIL", spec, doc); err != nil {
		t.Fatal(err)
	}
	tok, err := set.Snapshot().Resolve(ctx, "MAIL", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	st.setFail(false)
	if _, _, err := set.Put("RT", "rt-operator"); err != nil {
		t.Fatal(err)
	}
	ts.storedValue(ctx, "RT")
	src, _ := set.Snapshot().Source("MAIL")
	src.MarkStale(tok)
	set.Snapshot().Resolve(ctx, "MAIL", time.Now()) // invalid_grant: the server does not know rt-operator
	if got := seen(); !slices.Equal(got, []string{"rt-0", "rt-operator"}) {
		t.Fatalf("presented %v", got)
	}
}

// A write-back that fails falls back to sealing into the state
// database: a restart (a fresh broker on the same database) presents
// the rotated token, not the dead one.
func TestTokenSourceFailedWriteBackIsSealed(t *testing.T) {
	srv, seen := rotatingServer(t, "rt-0")
	ctx := context.Background()
	db := openTestStateDB(t, zap.NewNop())
	seal := sealingBroker(t, db, srv.Client()) // only its built-in store, to seal
	st := &flakyStore{vals: map[string]string{"RT": "rt-0"}, fail: true}
	broker := func() *tokenSources {
		set, _ := credentials.New([]credentials.Store{{Name: "builtin", Store: st}})
		ts := newTokenSources(db, set, seal.sealer, srv.Client(), zap.NewNop())
		if err := ts.load(ctx); err != nil {
			t.Fatal(err)
		}
		return ts
	}
	a := broker()
	spec, doc := refreshSpec(srv, "RT")
	if _, err := a.put(ctx, "MAIL", spec, doc); err != nil {
		t.Fatal(err)
	}
	if _, err := a.creds.Snapshot().Resolve(ctx, "MAIL", time.Now()); err != nil {
		t.Fatal(err)
	}
	if le := a.creds.List()[0].LastError; le != "" {
		t.Fatalf("sealed, yet last_error %q", le)
	}
	restarted := broker()
	if tok, err := restarted.creds.Snapshot().Resolve(ctx, "MAIL", time.Now()); err != nil || tok != "at-2" {
		t.Fatalf("after a restart: %q %v; presented %v", tok, err, seen())
	}
}

// A database from before the one-reader rule, with two sources on one
// refresh token: the second is not served, and the listing says why.
func TestTokenSourceSecondReaderFromOldDatabaseIsListed(t *testing.T) {
	srv, _ := rotatingServer(t, "rt-0")
	ctx := context.Background()
	db := openTestStateDB(t, zap.NewNop())
	_, doc := refreshSpec(srv, "RT")
	for _, name := range []string{"A", "B"} {
		// Written as before 0008: no refresh_cred.
		if _, err := db.PutTokenSource(ctx, name, doc, "", nil); err != nil {
			t.Fatal(err)
		}
	}
	st := &flakyStore{vals: map[string]string{"RT": "rt-0"}}
	set, _ := credentials.New([]credentials.Store{{Name: "builtin", Store: st}})
	ts := newTokenSources(db, set, nil, srv.Client(), zap.NewNop())
	if err := ts.load(ctx); err != nil {
		t.Fatal(err)
	}
	list := ts.list(set.List())
	i := slices.IndexFunc(list, func(m storebackends.Meta) bool { return m.Name == "B" })
	if set.IsSource("B") || i < 0 || !strings.Contains(list[i].LastError, "not served") || !strings.Contains(list[i].LastError, "token source A already reads") {
		t.Fatalf("B served %v; listing %+v", set.IsSource("B"), list)
	}
	// Deleting it clears the entry.
	if _, err := ts.delete(ctx, "B"); err != nil {
		t.Fatal(err)
	}
	if got := ts.list(set.List()); slices.ContainsFunc(got, func(m storebackends.Meta) bool { return m.Name == "B" }) {
		t.Fatalf("after delete: %+v", got)
	}
}

// A rotated refresh token that could not be written back (and cannot
// be sealed: no built-in store) is retried in the background until it
// is saved; last_error says so meanwhile and clears after.
func TestTokenSourceWriteBackRetriedInBackground(t *testing.T) {
	srv, _ := rotatingServer(t, "rt-0")
	ctx := context.Background()
	st := &flakyStore{vals: map[string]string{"RT": "rt-0"}, fail: true, stored: make(chan string, 1)}
	set, _ := credentials.New([]credentials.Store{{Name: "builtin", Store: st}})
	ts := newTokenSources(openTestStateDB(t, zap.NewNop()), set, nil, srv.Client(), zap.NewNop())
	ts.persistPause = time.Millisecond
	t.Cleanup(ts.close)
	spec, doc := refreshSpec(srv, "RT")
	if _, err := ts.put(ctx, "MAIL", spec, doc); err != nil {
		t.Fatal(err)
	}
	if _, err := set.Snapshot().Resolve(ctx, "MAIL", time.Now()); err != nil {
		t.Fatal(err)
	}
	if le := set.List()[0].LastError; !strings.Contains(le, "not persisted") || !strings.Contains(le, "retrying in the background") {
		t.Fatalf("last_error %q", le)
	}
	st.setFail(false)
	select {
	case v := <-st.stored:
		if v != "rt-rotated-1" {
			t.Fatalf("stored %q", v)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("never written back")
	}
	// The retry clears last_error right after the write returns.
	deadline := time.Now().Add(5 * time.Second)
	for set.List()[0].LastError != "" {
		if time.Now().After(deadline) {
			t.Fatalf("last_error stays %q", set.List()[0].LastError)
		}
		runtime.Gosched()
	}
}

// The same with the refresh token in the built-in store both brokers
// share: the second presents the token the first wrote back, without
// waiting for the store's change feed.
func TestTokenSourceTwoBrokersWriteBack(t *testing.T) {
	srv, arrived, release, seen := gatedServer(t, "rt-0")
	ctx := context.Background()
	db := openTestStateDB(t, zap.NewNop())
	broker := func(seed bool) *tokenSources {
		b, err := builtinstore.Open(ctx, builtinRecords{db: db, store: "builtin"}, []byte("pw"), builtinstore.Options{KDF: builtinstore.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}})
		if err != nil {
			t.Fatal(err)
		}
		if seed {
			if _, err := b.Put("RT", "rt-0"); err != nil {
				t.Fatal(err)
			}
		}
		set, err := credentials.New([]credentials.Store{{Name: "builtin", Store: b}})
		if err != nil {
			t.Fatal(err)
		}
		ts := newTokenSources(db, set, b, srv.Client(), zap.NewNop())
		if err := ts.load(ctx); err != nil {
			t.Fatal(err)
		}
		return ts
	}
	a := broker(true)
	b := broker(false)
	raceTwoBrokers(t, a, b, srv, arrived, release, seen)
}

// raceTwoBrokers defines MAIL (refresh token RT) on a, has b follow the
// change, and resolves it on both at once: the first call is held until
// the other broker has had the time of a slow endpoint to present the
// same refresh token (it must not), and nobody gets an error.
func raceTwoBrokers(t *testing.T, a, b *tokenSources, srv *httptest.Server, arrived <-chan string, release chan struct{}, seen func() []string) {
	t.Helper()
	ctx := context.Background()
	spec, doc := refreshSpec(srv, "RT")
	if _, err := a.put(ctx, "MAIL", spec, doc); err != nil {
		t.Fatal(err)
	}
	if err := b.apply(ctx, state.Change{Topic: state.TopicTokenSources, Key: "MAIL"}); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, x := range []*tokenSources{a, b} {
		wg.Add(1)
		go func() { defer wg.Done(); _, errs[i] = x.creds.Snapshot().Resolve(ctx, "MAIL", time.Now()) }()
	}
	<-arrived
	select {
	case rt := <-arrived:
		t.Errorf("a second call presented %s while the first was running", rt)
	case <-time.After(300 * time.Millisecond):
	}
	close(release)
	wg.Wait()
	if errs[0] != nil || errs[1] != nil || !slices.Equal(seen(), []string{"rt-0", "rt-rotated-1"}) {
		t.Fatalf("errors %v; presented %v", errs, seen())
	}
}
