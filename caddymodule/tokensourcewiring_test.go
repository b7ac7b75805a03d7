package caddymodule

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"maps"

	"github.com/agentvault/caddy-agent-vault/caddymodule/credentials"
	"github.com/agentvault/caddy-agent-vault/caddymodule/state"
	"github.com/agentvault/caddy-agent-vault/caddymodule/tokensource"
	"github.com/agentvault/caddy-agent-vault/storebackends"
	builtinstore "github.com/agentvault/caddy-agent-vault/storebackends/builtin"
)

// flakyStore is a writable store whose writes fail while fail is set.
type flakyStore struct {
	mu   sync.Mutex
	vals map[string]string
	fail bool
	n    int
	// stored, when set, hears of every successful Put.
	stored chan string
}

func (s *flakyStore) List() []storebackends.Meta {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []storebackends.Meta
	for k := range s.vals {
		out = append(out, storebackends.Meta{Name: k, Store: "builtin", Version: "1"})
	}
	return out
}
func (s *flakyStore) Values() map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.vals)
}
func (s *flakyStore) Put(name, v string) (storebackends.Meta, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail {
		return storebackends.Meta{}, errors.New("database is down")
	}
	s.n++
	s.vals[name] = v
	if s.stored != nil {
		s.stored <- v
	}
	return storebackends.Meta{Name: name, Store: "builtin", Version: fmt.Sprint(s.n + 1)}, nil
}
func (s *flakyStore) Delete(name string) error { return nil }
func (s *flakyStore) setFail(f bool)           { s.mu.Lock(); s.fail = f; s.mu.Unlock() }
func (s *flakyStore) get(name string) string   { s.mu.Lock(); defer s.mu.Unlock(); return s.vals[name] }

// rotatingServer is a token endpoint that rotates its refresh token on
// every use (a presented old one is invalid_grant); seen lists what
// was presented.
func rotatingServer(t *testing.T, initial string) (*httptest.Server, func() []string) {
	var mu sync.Mutex
	accepted, n := initial, 0
	var seen []string
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.ParseForm()
		mu.Lock()
		defer mu.Unlock()
		seen = append(seen, r.PostForm.Get("refresh_token"))
		if r.PostForm.Get("refresh_token") != accepted {
			w.WriteHeader(400)
			fmt.Fprint(w, `{"error":"invalid_grant"}`)
			return
		}
		n++
		accepted = fmt.Sprintf("rt-rotated-%d", n)
		json.NewEncoder(w).Encode(map[string]any{"access_token": fmt.Sprintf("at-%d", n), "expires_in": 3600, "refresh_token": accepted})
	}))
	t.Cleanup(srv.Close)
	return srv, func() []string { mu.Lock(); defer mu.Unlock(); return slices.Clone(seen) }
}

// sealingBroker is one broker on db whose refresh token RT (rt-0) is in
// a read-only store, with a built-in store to seal rotated ones.
func sealingBroker(t *testing.T, db *state.DB, client *http.Client) *tokenSources {
	t.Helper()
	ctx := context.Background()
	b, err := builtinstore.Open(ctx, builtinRecords{db: db, store: "builtin"}, []byte("pw"), builtinstore.Options{KDF: builtinstore.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}})
	if err != nil {
		t.Fatal(err)
	}
	set, err := credentials.New([]credentials.Store{{Name: "builtin", Store: b}, {Name: "vault", Store: builtin("RT", "rt-0")}})
	if err != nil {
		t.Fatal(err)
	}
	ts := newTokenSources(db, set, b, client, zap.NewNop())
	if err := ts.load(ctx); err != nil {
		t.Fatal(err)
	}
	return ts
}

func refreshSpec(srv *httptest.Server, cred string) (tokensource.Spec, []byte) {
	spec := tokensource.Spec{Kind: tokensource.KindOAuth2Refresh, TokenURL: srv.URL + "/token", ClientID: "c", RefreshToken: cred}
	doc, _ := json.Marshal(spec)
	return spec, doc
}

// A write-back that fails keeps the rotated refresh token in memory:
// the next refresh presents it, not the dead one, and once a write
// succeeds the store holds the newest one.
func TestTokenSourceRotationSurvivesFailedWriteBack(t *testing.T) {
	srv, seen := rotatingServer(t, "rt-0")
	ctx := context.Background()
	st := &flakyStore{vals: map[string]string{"RT": "rt-0"}, fail: true}
	set, err := credentials.New([]credentials.Store{{Name: "builtin", Store: st}})
	if err != nil {
		t.Fatal(err)
	}
	ts := newTokenSources(openTestStateDB(t, zap.NewNop()), set, nil, srv.Client(), zap.NewNop())
	spec, doc := refreshSpec(srv, "RT")
	if _, err := ts.put(ctx, "MAIL", spec, doc); err != nil {
		t.Fatal(err)
	}
	tok, err := set.Snapshot().Resolve(ctx, "MAIL", time.Now())
	if err != nil || tok != "at-1" {
		t.Fatalf("first: %q %v", tok, err)
	}
	if le := set.List()[0].LastError; !strings.Contains(le, "kept in memory only") || strings.Contains(le, "rt-rotated") {
		t.Fatalf("last_error %q", le)
	}
	st.setFail(false) // the store is back
	src, _ := set.Snapshot().Source("MAIL")
	src.MarkStale(tok)
	tok, err = set.Snapshot().Resolve(ctx, "MAIL", time.Now())
	if err != nil || tok != "at-2" {
		t.Fatalf("second: %q %v; presented %v", tok, err, seen())
	}
	if got := seen(); !slices.Equal(got, []string{"rt-0", "rt-rotated-1"}) {
		t.Fatalf("presented %v", got)
	}
	if v := st.get("RT"); v != "rt-rotated-2" {
		t.Fatalf("store holds %q", v)
	}
	ts.mu.Lock()
	_, kept := ts.rotated["MAIL"]
	ts.mu.Unlock()
	if kept || set.List()[0].LastError != "" {
		t.Fatalf("after a successful write-back the store's value must win (kept %v, last_error %q)", kept, set.List()[0].LastError)
	}
}

// Two token sources may not read one refresh token; and a refresh
// token of a read-only store needs a built-in store to seal a rotated
// one in.
func TestTokenSourceRefreshTokenRefusals(t *testing.T) {
	srv, seen := rotatingServer(t, "rt-0")
	ctx := context.Background()
	set, err := credentials.New([]credentials.Store{{Name: "vault", Store: builtin("RT", "rt-0")}})
	if err != nil {
		t.Fatal(err)
	}
	db := openTestStateDB(t, zap.NewNop())
	b, err := builtinstore.Open(ctx, builtinRecords{db: db, store: "builtin"}, []byte("pw"), builtinstore.Options{KDF: builtinstore.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}})
	if err != nil {
		t.Fatal(err)
	}
	spec, doc := refreshSpec(srv, "RT")
	// No sealer: refused (409), nothing stored.
	bare := newTokenSources(db, set, nil, srv.Client(), zap.NewNop())
	_, err = bare.put(ctx, "MAIL", spec, doc)
	if status, _, _ := errorResponse(err); !errors.Is(err, credentials.ErrIsTokenSource) || !strings.Contains(err.Error(), "read-only") {
		t.Fatalf("want 409 read-only, got %d %v", status, err)
	}
	if rows, _ := db.ListTokenSources(ctx); len(rows) != 0 {
		t.Fatalf("stored %v", rows)
	}
	ts := newTokenSources(db, set, b, srv.Client(), zap.NewNop())
	if _, err := ts.put(ctx, "MAIL", spec, doc); err != nil {
		t.Fatal(err)
	}
	_, err = ts.put(ctx, "CAL", spec, doc)
	if !errors.Is(err, credentials.ErrIsTokenSource) || !strings.Contains(err.Error(), "MAIL already reads") {
		t.Fatalf("want 409 naming MAIL, got %v", err)
	}
	if ts.creds.IsSource("CAL") {
		t.Fatal("CAL served")
	}
	if tok, err := set.Snapshot().Resolve(ctx, "MAIL", time.Now()); err != nil || tok != "at-1" {
		t.Fatalf("%q %v (presented %v)", tok, err, seen())
	}
	// Redefining MAIL itself is not a second reader; once MAIL is gone CAL may read it.
	if _, err := ts.put(ctx, "MAIL", spec, doc); err != nil {
		t.Fatal(err)
	}
	if _, err := ts.delete(ctx, "MAIL"); err != nil {
		t.Fatal(err)
	}
	if _, err := ts.put(ctx, "CAL", spec, doc); err != nil {
		t.Fatal(err)
	}
}

// A refresh token from a read-only store that the server rotates is
// kept sealed in the state database (never in clear), and a broker
// that starts again on that database uses the rotated one.
func TestTokenSourceRotationReadOnlyStore(t *testing.T) {
	var mu sync.Mutex
	accepted, n := "rt-from-vault", 0
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.ParseForm()
		mu.Lock()
		defer mu.Unlock()
		if r.PostForm.Get("refresh_token") != accepted {
			w.WriteHeader(400)
			fmt.Fprint(w, `{"error":"invalid_grant"}`)
			return
		}
		n++
		accepted = fmt.Sprintf("rt-rotated-%d", n)
		json.NewEncoder(w).Encode(map[string]any{"access_token": fmt.Sprintf("at-%d", n), "expires_in": 3600, "refresh_token": accepted})
	}))
	defer srv.Close()

	ctx := context.Background()
	db := openTestStateDB(t, zap.NewNop())
	open := func() *tokenSources {
		b, err := builtinstore.Open(ctx, builtinRecords{db: db, store: "builtin"}, []byte("pw"), builtinstore.Options{KDF: builtinstore.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}})
		if err != nil {
			t.Fatal(err)
		}
		set, err := credentials.New([]credentials.Store{{Name: "builtin", Store: b}, {Name: "vault", Store: builtin("RT", "rt-from-vault")}})
		if err != nil {
			t.Fatal(err)
		}
		ts := newTokenSources(db, set, b, srv.Client(), zap.NewNop())
		if err := ts.load(ctx); err != nil {
			t.Fatal(err)
		}
		return ts
	}
	ts := open()
	spec := tokensource.Spec{Kind: tokensource.KindOAuth2Refresh, TokenURL: srv.URL + "/token", ClientID: "c", RefreshToken: "RT"}
	doc, _ := json.Marshal(spec)
	if _, err := ts.put(ctx, "MAIL", spec, doc); err != nil {
		t.Fatal(err)
	}
	if tok, err := ts.creds.Snapshot().Resolve(ctx, "MAIL", time.Now()); err != nil || tok != "at-1" {
		t.Fatalf("%q %v", tok, err)
	}
	rows, err := db.ListTokenSources(ctx)
	if err != nil || len(rows) != 1 || len(rows[0].RefreshSealed) == 0 || strings.Contains(string(rows[0].RefreshSealed), "rt-rotated-1") {
		t.Fatalf("rows %v %v", rows, err)
	}
	if st := ts.creds.List(); st[0].Name != "MAIL" || st[0].LastError != "" {
		t.Fatalf("listing %+v", st)
	}
	// Started again: the kept refresh token, not the store's, is used.
	ts2 := open()
	if tok, err := ts2.creds.Snapshot().Resolve(ctx, "MAIL", time.Now()); err != nil || tok != "at-2" {
		t.Fatalf("after restart: %q %v", tok, err)
	}
	// An identical redefinition keeps the live source and the kept
	// refresh token; one with another token_url forgets it: the
	// store's (now dead) value is read again.
	if created, err := ts2.put(ctx, "MAIL", spec, doc); err != nil || created {
		t.Fatal(created, err)
	}
	src, _ := ts2.creds.Snapshot().Source("MAIL")
	src.MarkStale("at-2")
	if tok, err := ts2.creds.Snapshot().Resolve(ctx, "MAIL", time.Now()); err != nil || tok != "at-3" {
		t.Fatalf("after an identical re-PUT: %q %v", tok, err)
	}
	moved := spec
	moved.TokenURL = srv.URL + "/token2"
	movedDoc, _ := json.Marshal(moved)
	if _, err := ts2.put(ctx, "MAIL", moved, movedDoc); err != nil {
		t.Fatal(err)
	}
	if rows, _ := db.ListTokenSources(ctx); len(rows[0].RefreshSealed) != 0 {
		t.Fatal("the kept refresh token survived a changed token_url")
	}
	_, err = ts2.creds.Snapshot().Resolve(ctx, "MAIL", time.Now())
	var un *credentials.UnavailableError
	if !errors.As(err, &un) || un.Name != "MAIL" {
		t.Fatalf("want 503 naming MAIL, got %v", err)
	}
	if status, _, _ := errorResponse(err); status != http.StatusServiceUnavailable {
		t.Fatalf("status %d", status)
	}
}

// Brokers sharing one state database follow each other's token
// sources: a rotation sealed by one is used by the other, a delete
// stops both, and a fetch under an old definition keeps nothing.
func TestTokenSourceFeedAcrossBrokers(t *testing.T) {
	srv, seen := rotatingServer(t, "rt-0")
	ctx := context.Background()
	db := openTestStateDB(t, zap.NewNop())
	a, b := sealingBroker(t, db, srv.Client()), sealingBroker(t, db, srv.Client())
	spec, doc := refreshSpec(srv, "RT")
	if _, err := a.put(ctx, "MAIL", spec, doc); err != nil {
		t.Fatal(err)
	}
	change := state.Change{Topic: state.TopicTokenSources, Key: "MAIL"}
	if err := b.apply(ctx, change); err != nil || !b.creds.IsSource("MAIL") {
		t.Fatalf("B does not serve MAIL: %v", err)
	}
	if tok, err := a.creds.Snapshot().Resolve(ctx, "MAIL", time.Now()); err != nil || tok != "at-1" {
		t.Fatalf("A: %q %v", tok, err)
	}
	if err := b.apply(ctx, change); err != nil {
		t.Fatal(err)
	}
	if tok, err := b.creds.Snapshot().Resolve(ctx, "MAIL", time.Now()); err != nil || tok != "at-2" {
		t.Fatalf("B refreshed with the dead token: %q %v; presented %v", tok, err, seen())
	}
	// A hears of B's rotation (a whole-topic reload this time).
	if err := a.apply(ctx, state.Change{Topic: state.TopicTokenSources}); err != nil {
		t.Fatal(err)
	}
	src, _ := a.creds.Snapshot().Source("MAIL")
	src.MarkStale("at-1")
	if tok, err := a.creds.Snapshot().Resolve(ctx, "MAIL", time.Now()); err != nil || tok != "at-3" {
		t.Fatalf("A: %q %v; presented %v", tok, err, seen())
	}
	// A fetch of generation 1 finishing after a redefinition that
	// moved the token endpoint keeps nothing, here or in the database.
	moved := spec
	moved.TokenURL = srv.URL + "/v2/token"
	movedDoc, _ := json.Marshal(moved)
	if _, err := a.put(ctx, "MAIL", moved, movedDoc); err != nil {
		t.Fatal(err)
	}
	if err := a.saveRefresh(ctx, "MAIL", 1, spec, "RT", "rt-from-an-old-fetch"); err == nil {
		t.Fatal("an old generation's rotation was kept")
	}
	a.mu.Lock()
	_, kept := a.rotated["MAIL"]
	a.mu.Unlock()
	if r, _, _ := db.GetTokenSource(ctx, "MAIL"); kept || len(r.RefreshSealed) != 0 || r.Generation != 2 {
		t.Fatalf("kept %v row %+v", kept, r)
	}
	// A delete on A stops B.
	if _, err := a.delete(ctx, "MAIL"); err != nil {
		t.Fatal(err)
	}
	if err := b.apply(ctx, change); err != nil || b.creds.IsSource("MAIL") {
		t.Fatalf("B still serves MAIL: %v", err)
	}
}

// A token source's inputs are stored values: itself, another source,
// or a name another source reads are refused (400) at PUT; a missing
// input is named by its field, not its name, in last_error.
func TestTokenSourceInputsAreStoredValues(t *testing.T) {
	srv, _ := rotatingServer(t, "rt-0")
	ctx := context.Background()
	st := &flakyStore{vals: map[string]string{"RT": "rt-0"}}
	set, err := credentials.New([]credentials.Store{{Name: "builtin", Store: st}})
	if err != nil {
		t.Fatal(err)
	}
	ts := newTokenSources(openTestStateDB(t, zap.NewNop()), set, nil, srv.Client(), zap.NewNop())
	cc := tokensource.Spec{Kind: tokensource.KindOAuth2ClientCredentials, TokenURL: srv.URL + "/token", ClientID: "c", ClientSecret: "CS_MISSING"}
	doc, _ := json.Marshal(cc)
	if _, err := ts.put(ctx, "CC", cc, doc); err != nil {
		t.Fatal(err)
	}
	_, err = set.Snapshot().Resolve(ctx, "CC", time.Now())
	if le := set.List()[0].LastError; err == nil || strings.Contains(le, "CS_MISSING") || !strings.Contains(le, "client_secret input is not in any store") {
		t.Fatalf("%v; last_error %q", err, le)
	}
	for name, spec := range map[string]tokensource.Spec{
		"SELF":       {Kind: tokensource.KindOAuth2ClientCredentials, TokenURL: srv.URL, ClientID: "c", ClientSecret: "SELF"},
		"READS_CC":   {Kind: tokensource.KindOAuth2ClientCredentials, TokenURL: srv.URL, ClientID: "c", ClientSecret: "CC"},
		"CS_MISSING": {Kind: tokensource.KindOAuth2Refresh, TokenURL: srv.URL, ClientID: "c", RefreshToken: "RT"},
	} {
		doc, _ := json.Marshal(spec)
		_, err := ts.put(ctx, name, spec, doc)
		if status, _, _ := errorResponse(err); !errors.Is(err, tokensource.ErrInvalidSpec) {
			t.Errorf("%s: want 400, got %d %v", name, status, err)
		}
		if ts.creds.IsSource(name) {
			t.Errorf("%s served", name)
		}
	}
}
