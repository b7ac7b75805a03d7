package caddymodule

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/agentvault/caddy-agent-vault/caddymodule/credentials"
	"github.com/agentvault/caddy-agent-vault/caddymodule/tokensource"
	builtinstore "github.com/agentvault/caddy-agent-vault/storebackends/builtin"
)

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
		ts := &tokenSources{db: db, creds: set, sealer: b, client: srv.Client(), logger: zap.NewNop(), rotated: map[string]string{}}
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
	// Redefining forgets it: the store's (now dead) value is read again.
	if _, err := ts2.put(ctx, "MAIL", spec, doc); err != nil {
		t.Fatal(err)
	}
	_, err = ts2.creds.Snapshot().Resolve(ctx, "MAIL", time.Now())
	var un *credentials.UnavailableError
	if !errors.As(err, &un) || un.Name != "MAIL" || !strings.Contains(err.Error(), "invalid_grant") {
		t.Fatalf("want 503 naming MAIL, got %v", err)
	}
	if status, _, _ := errorResponse(err); status != http.StatusServiceUnavailable {
		t.Fatalf("status %d", status)
	}
}
