package hashicorp

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentvault/caddy-agent-vault/storebackends"
)

var created = time.Date(2025, 3, 1, 10, 20, 30, 123456789, time.UTC)

// putAgents stores a small tree: agents/github, agents/ci/deploy, top.
func putAgents(fv *fakeVault) {
	fv.put("secret/agents/github", `{"token":"gh-`+leakMarker+`"}`, 3)
	fv.put("secret/agents/ci/deploy", `{"DEPLOY_KEY":"deploy-`+leakMarker+`"}`, 1)
	fv.put("secret/top", `{"API_KEY":"top-`+leakMarker+`"}`, 7)
}

func TestFetchKV2Recursive(t *testing.T) {
	fv := newFakeVault(t, false)
	putAgents(fv)
	h := newHarness(t, fv, nil)

	b := h.fetch(t)
	want := []storebackends.Item{
		{Name: "DEPLOY_KEY", Value: "deploy-" + leakMarker, Version: "1", Source: "secret/agents/ci/deploy#DEPLOY_KEY", UpdatedAt: created},
		{Name: "token", Value: "gh-" + leakMarker, Version: "3", Source: "secret/agents/github#token", UpdatedAt: created},
		{Name: "API_KEY", Value: "top-" + leakMarker, Version: "7", Source: "secret/top#API_KEY", UpdatedAt: created},
	}
	if !reflect.DeepEqual(b.Items, want) {
		t.Errorf("items:\n got %+v\nwant %+v", b.Items, want)
	}
	if len(b.Problems) != 0 {
		t.Errorf("problems: %+v", b.Problems)
	}
	got := requestKeys(h.fv.takeRequests())
	for _, k := range []string{
		"GET /v1/auth/token/lookup-self",
		"LIST /v1/secret/metadata", "LIST /v1/secret/metadata/agents", "LIST /v1/secret/metadata/agents/ci",
		"GET /v1/secret/data/agents/ci/deploy", "GET /v1/secret/data/agents/github", "GET /v1/secret/data/top",
	} {
		if !slices.Contains(got, k) {
			t.Errorf("no request %q in %q", k, got)
		}
	}
	if len(got) != 7 {
		t.Errorf("got %d requests, want 7: %q", len(got), got)
	}
}

func TestFetchNameMapping(t *testing.T) {
	fv := newFakeVault(t, false)
	putAgents(fv)
	fv.put("secret/agents/my-app.v2", `{"api key":"k-`+leakMarker+`"}`, 1)

	tests := []struct {
		mapping, path, prefix string
		want                  []string
	}{
		{"", "", "", []string{"DEPLOY_KEY", "token", "API_KEY"}},
		{MapKey, "agents", "X_", []string{"X_DEPLOY_KEY", "X_token"}},
		{MapPathKey, "", "", []string{"AGENTS_CI_DEPLOY_DEPLOY_KEY", "AGENTS_GITHUB_TOKEN", "AGENTS_MY_APP_V2_API_KEY", "TOP_API_KEY"}},
		{MapPathKey, "/agents/", "VAULT_", []string{"VAULT_CI_DEPLOY_DEPLOY_KEY", "VAULT_GITHUB_TOKEN", "VAULT_MY_APP_V2_API_KEY"}},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s,%s,%s", tt.mapping, tt.path, tt.prefix), func(t *testing.T) {
			h := newHarness(t, fv, func(c *Config) { c.NameMapping, c.Path, c.NamePrefix = tt.mapping, tt.path, tt.prefix })
			b := h.fetch(t)
			if got := names(b); !slices.Equal(got, tt.want) {
				t.Errorf("names = %q, want %q", got, tt.want)
			}
			// In key mode "api key" is not a valid name.
			wantProblems := 0
			if tt.mapping != MapPathKey {
				wantProblems = 1
			}
			if len(b.Problems) != wantProblems {
				t.Errorf("problems = %+v, want %d", b.Problems, wantProblems)
			}
		})
	}
}

func TestFetchInvalidNamesAndValues(t *testing.T) {
	fv := newFakeVault(t, false)
	fv.put("secret/app", `{"GOOD":"g-`+leakMarker+`","my-token":"m-`+leakMarker+`","1ABC":"n-`+leakMarker+`",
		"PORT":8080,"ENABLED":true,"NESTED":{"a":"b-`+leakMarker+`"},"NOTHING":null,"LIST":["l-`+leakMarker+`"]}`, 2)
	h := newHarness(t, fv, nil)

	b := h.fetch(t)
	if got := names(b); !slices.Equal(got, []string{"GOOD"}) {
		t.Errorf("names = %q, want [GOOD]", got)
	}
	type pr struct{ source, name, reason string }
	var got []pr
	for _, p := range b.Problems {
		reason := p.Reason
		if strings.HasPrefix(reason, "invalid credential name") {
			reason = "invalid name"
		}
		got = append(got, pr{p.Source, p.Name, reason})
	}
	want := []pr{
		{"secret/app#1ABC", "1ABC", "invalid name"},
		{"secret/app#ENABLED", "ENABLED", "value is not a string"},
		{"secret/app#LIST", "LIST", "value is not a string"},
		{"secret/app#NESTED", "NESTED", "value is not a string"},
		{"secret/app#NOTHING", "NOTHING", "value is not a string"},
		{"secret/app#PORT", "PORT", "value is not a string"},
		{"secret/app#my-token", "my-token", "invalid name"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("problems:\n got %+v\nwant %+v", got, want)
	}
}

func TestFetchDuplicateNamesAreDropped(t *testing.T) {
	fv := newFakeVault(t, false)
	fv.put("secret/a", `{"TOKEN":"a-`+leakMarker+`","A_ONLY":"x-`+leakMarker+`"}`, 1)
	fv.put("secret/b", `{"TOKEN":"b-`+leakMarker+`"}`, 1)
	h := newHarness(t, fv, nil)

	b := h.fetch(t)
	if got := names(b); !slices.Equal(got, []string{"A_ONLY"}) {
		t.Errorf("names = %q, want [A_ONLY]", got)
	}
	if len(b.Problems) != 2 {
		t.Fatalf("problems = %+v, want 2", b.Problems)
	}
	for i, other := range []string{"secret/b#TOKEN", "secret/a#TOKEN"} {
		if p := b.Problems[i]; p.Name != "TOKEN" || !strings.Contains(p.Reason, other) {
			t.Errorf("problem %d = %+v, want TOKEN colliding with %s", i, p, other)
		}
	}
}

func TestFetchKV1(t *testing.T) {
	fv := newFakeVault(t, false)
	fv.mounts["kv"] = 1
	fv.put("kv/agents/github", `{"token":"gh-`+leakMarker+`","PORT":1}`, 0)
	fv.put("kv/agents/ci/deploy", `{"DEPLOY_KEY":"d-`+leakMarker+`"}`, 0)
	h := newHarness(t, fv, func(c *Config) { c.Mount, c.KVVersion, c.NameMapping = "kv", 1, MapPathKey })

	b := h.fetch(t)
	want := []storebackends.Item{
		{Name: "AGENTS_CI_DEPLOY_DEPLOY_KEY", Value: "d-" + leakMarker, Source: "kv/agents/ci/deploy#DEPLOY_KEY"},
		{Name: "AGENTS_GITHUB_TOKEN", Value: "gh-" + leakMarker, Source: "kv/agents/github#token"},
	}
	if !reflect.DeepEqual(b.Items, want) {
		t.Errorf("items:\n got %+v\nwant %+v", b.Items, want)
	}
	if len(b.Problems) != 1 || b.Problems[0].Reason != "value is not a string" {
		t.Errorf("problems = %+v", b.Problems)
	}
	got := requestKeys(h.fv.takeRequests())
	for _, k := range []string{"LIST /v1/kv", "LIST /v1/kv/agents", "LIST /v1/kv/agents/ci", "GET /v1/kv/agents/github", "GET /v1/kv/agents/ci/deploy"} {
		if !slices.Contains(got, k) {
			t.Errorf("no request %q in %q", k, got)
		}
	}
}

func TestFetchDetectsKVVersion(t *testing.T) {
	for _, version := range []int{1, 2} {
		t.Run(fmt.Sprint(version), func(t *testing.T) {
			fv := newFakeVault(t, false)
			fv.mounts["kv"] = version
			fv.put("kv/app", `{"TOKEN":"t-`+leakMarker+`"}`, 5)
			h := newHarness(t, fv, func(c *Config) { c.Mount, c.KVVersion = "kv", 0 })

			b := h.fetch(t)
			wantVersion := map[int]string{1: "", 2: "5"}[version]
			if len(b.Items) != 1 || b.Items[0].Version != wantVersion {
				t.Fatalf("items = %+v, want one of version %q", b.Items, wantVersion)
			}
			got := requestKeys(h.fv.takeRequests())
			wantRead := map[int]string{1: "GET /v1/kv/app", 2: "GET /v1/kv/data/app"}[version]
			if !slices.Contains(got, "GET /v1/sys/internal/ui/mounts/kv") || !slices.Contains(got, wantRead) {
				t.Errorf("requests = %q", got)
			}
		})
	}
}

func TestFetchDetectionErrors(t *testing.T) {
	fv := newFakeVault(t, false)
	fv.put("secret/app", `{"TOKEN":"t-`+leakMarker+`"}`, 1)

	t.Run("no access to the mount", func(t *testing.T) {
		h := newHarness(t, fv, func(c *Config) { c.Mount, c.KVVersion = "nope", 0 })
		wantErr(t, h.fetchErr(t), "detecting the KV version of mount nope", "preflight capability check returned 403", "HTTP 403", "set kv_version")
	})
	t.Run("mount path inside a mount", func(t *testing.T) {
		h := newHarness(t, fv, func(c *Config) { c.Mount, c.KVVersion = "secret/agents", 0 })
		wantErr(t, h.fetchErr(t), `"secret/agents" is not a mount point`, `set mount to "secret"`)
	})
	t.Run("not a kv mount", func(t *testing.T) {
		fv.inject("GET /v1/sys/internal/ui/mounts/secret", fakeReply{status: 200, body: `{"data":{"type":"pki","path":"secret/","options":null}}`})
		h := newHarness(t, fv, func(c *Config) { c.KVVersion = 0 })
		wantErr(t, h.fetchErr(t), `mount is a "pki" secrets engine, not kv`)
	})
}

func TestFetchDeletedVersionsAreProblems(t *testing.T) {
	fv := newFakeVault(t, false)
	fv.put("secret/live", `{"LIVE":"l-`+leakMarker+`"}`, 1)
	fv.putSecret("secret/gone", fakeSecret{data: `{"GONE":"g-` + leakMarker + `"}`, version: 4, deletionTime: "2025-02-01T00:00:00Z"})
	fv.putSecret("secret/burnt", fakeSecret{data: `{"BURNT":"b-` + leakMarker + `"}`, version: 2, destroyed: true})
	fv.putSecret("secret/both", fakeSecret{data: `{"BOTH":"x-` + leakMarker + `"}`, version: 3, destroyed: true, deletionTime: "2025-02-01T00:00:00Z"})
	h := newHarness(t, fv, nil)

	b := h.fetch(t)
	if got := names(b); !slices.Equal(got, []string{"LIVE"}) {
		t.Errorf("names = %q, want [LIVE]", got)
	}
	want := []storebackends.Problem{
		{Source: "secret/both", Reason: "destroyed in Vault"},
		{Source: "secret/burnt", Reason: "destroyed in Vault"},
		{Source: "secret/gone", Reason: "soft-deleted in Vault"},
	}
	if !reflect.DeepEqual(b.Problems, want) {
		t.Errorf("problems:\n got %+v\nwant %+v", b.Problems, want)
	}
}

// TestFetchVaultResponseShapes replays verbatim Vault responses from
// testdata, including the 404-with-metadata answer for deleted versions.
func TestFetchVaultResponseShapes(t *testing.T) {
	fv := newFakeVault(t, false)
	fv.inject("GET /v1/sys/internal/ui/mounts/secret", fakeReply{status: 200, body: readTestdata(t, "mounts_kv2.json")})
	fv.inject("LIST /v1/secret/metadata/agents", fakeReply{status: 200, body: readTestdata(t, "kv2_list.json")})
	fv.inject("GET /v1/secret/data/agents/github", fakeReply{status: 200, body: readTestdata(t, "kv2_read.json")})
	fv.inject("GET /v1/secret/data/agents/old", fakeReply{status: 404, body: readTestdata(t, "kv2_read_soft_deleted.json")})
	fv.inject("GET /v1/secret/data/agents/shredded", fakeReply{status: 404, body: readTestdata(t, "kv2_read_destroyed.json")})
	h := newHarness(t, fv, func(c *Config) { c.Path, c.KVVersion, c.NameMapping = "agents", 0, MapPathKey })

	b := h.fetch(t)
	want := []storebackends.Item{{
		Name: "GITHUB_TOKEN", Value: "ghp-VALUE-" + leakMarker, Version: "12",
		Source: "secret/agents/github#token", UpdatedAt: time.Date(2025, 2, 14, 9, 30, 0, 500_000_000, time.UTC),
	}}
	if !reflect.DeepEqual(b.Items, want) {
		t.Errorf("items:\n got %+v\nwant %+v", b.Items, want)
	}
	wantProblems := []storebackends.Problem{
		{Source: "secret/agents/old", Reason: "soft-deleted in Vault"},
		{Source: "secret/agents/shredded", Reason: "destroyed in Vault"},
	}
	if !reflect.DeepEqual(b.Problems, wantProblems) {
		t.Errorf("problems:\n got %+v\nwant %+v", b.Problems, wantProblems)
	}
}

func TestFetchSecretVanishedBetweenListAndRead(t *testing.T) {
	fv := newFakeVault(t, false)
	fv.put("secret/app", `{"TOKEN":"t-`+leakMarker+`"}`, 1)
	fv.inject("GET /v1/secret/data/app", fakeReply{status: 404, body: `{"errors":[]}`})
	h := newHarness(t, fv, nil)

	b := h.fetch(t)
	if len(b.Items) != 0 || len(b.Problems) != 1 || b.Problems[0].Source != "secret/app" {
		t.Errorf("batch = %+v, want only a problem for secret/app", b)
	}
}

func TestFetchEmptyPathIsEmptyBatch(t *testing.T) {
	fv := newFakeVault(t, false)
	putAgents(fv)
	h := newHarness(t, fv, func(c *Config) { c.Path = "nothing/here" })

	b := h.fetch(t)
	if len(b.Items) != 0 || len(b.Problems) != 0 {
		t.Errorf("batch = %+v, want empty", b)
	}
}

func TestFetchErrors(t *testing.T) {
	tests := []struct {
		name      string
		key       string
		reply     fakeReply
		fragments []string
	}{
		{"route not found is not an empty folder", "LIST /v1/secret/metadata",
			fakeReply{status: 404, body: `{"errors":["no handler for route \"secret/metadata\". route entry not found."]}`},
			[]string{"listing secret/metadata/: no handler for route", "(HTTP 404)"}},
		{"sealed", "LIST /v1/secret/metadata",
			fakeReply{status: 503, body: `{"errors":["Vault is sealed"]}`},
			[]string{"listing secret/metadata/: Vault is sealed (HTTP 503)"}},
		{"multi-error format", "GET /v1/secret/data/app",
			fakeReply{status: 500, body: `{"errors":["2 errors occurred:\n\t* storage down\n\t* try later\n\n"]}`},
			[]string{"reading secret/data/app: storage down; try later (HTTP 500)"}},
		{"echoed token is masked", "GET /v1/secret/data/app",
			fakeReply{status: 500, body: `{"errors":["bad token ` + rootToken + `"]}`},
			[]string{"bad token [redacted] (HTTP 500)"}},
		{"raw error body is not repeated", "GET /v1/secret/data/app",
			fakeReply{status: 502, body: `<html>proxy error, value t-` + leakMarker + `</html>`},
			[]string{"reading secret/data/app: bad gateway (HTTP 502)"}},
		{"malformed JSON", "GET /v1/secret/data/app",
			fakeReply{status: 200, body: `{"data": {"data": {"TOKEN": "t-` + leakMarker + `"`},
			[]string{"reading secret/data/app: "}},
		{"empty body", "LIST /v1/secret/metadata",
			fakeReply{status: 200, body: ``},
			[]string{"listing secret/metadata/: empty response (HTTP 200)"}},
		{"list without keys", "LIST /v1/secret/metadata",
			fakeReply{status: 200, body: `{"data":{"something":"else"}}`},
			[]string{"listing secret/metadata/: response has no keys"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fv := newFakeVault(t, false)
			fv.put("secret/app", `{"TOKEN":"t-`+leakMarker+`"}`, 1)
			fv.inject(tt.key, tt.reply)
			h := newHarness(t, fv, nil)
			wantErr(t, h.fetchErr(t), tt.fragments...)
		})
	}
}

func TestFetchPolicyDeniedKeepsTokenError(t *testing.T) {
	fv := newFakeVault(t, false)
	fv.put("secret/app", `{"TOKEN":"t-`+leakMarker+`"}`, 1)
	fv.inject("GET /v1/secret/data/app", fakeReply{status: 403, body: `{"errors":["1 error occurred:\n\t* permission denied\n\n"]}`})
	h := newHarness(t, fv, nil)

	err := h.fetchErr(t)
	if got := err.Error(); got != "reading secret/data/app: permission denied (HTTP 403)" {
		t.Errorf("error = %q", got)
	}
	// The token was checked again, and found valid.
	reqs := requestKeys(h.fv.takeRequests())
	if reqs[len(reqs)-1] != "GET /v1/auth/token/lookup-self" {
		t.Errorf("last request = %q, want a token lookup", reqs[len(reqs)-1])
	}
}

func TestFetchRefusesRedirects(t *testing.T) {
	var decoyHits atomic.Int32
	decoy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		decoyHits.Add(1)
		fmt.Fprint(w, `{"data":{"keys":[]}}`)
	}))
	defer decoy.Close()
	fv := newFakeVault(t, false)
	fv.inject("LIST /v1/secret/metadata", fakeReply{status: 307, header: http.Header{"Location": {decoy.URL + "/v1/secret/metadata?list=true"}}})
	h := newHarness(t, fv, nil)

	wantErr(t, h.fetchErr(t), "redirect (HTTP 307)", "not followed")
	if n := decoyHits.Load(); n != 0 {
		t.Errorf("redirect target got %d requests", n)
	}
}

func TestFetchLimits(t *testing.T) {
	t.Run("depth", func(t *testing.T) {
		fv := newFakeVault(t, false)
		deep := strings.Repeat("d/", maxDepth) // maxDepth folder levels: allowed
		fv.put("secret/"+deep+"ok", `{"OK":"o-`+leakMarker+`"}`, 1)
		h := newHarness(t, fv, nil)
		if got := names(h.fetch(t)); !slices.Equal(got, []string{"OK"}) {
			t.Fatalf("names = %q", got)
		}
		fv.put("secret/"+deep+"d/too_deep", `{"NO":"n-`+leakMarker+`"}`, 1)
		wantErr(t, h.fetchErr(t), "nested deeper than 32 levels")
	})
	t.Run("secrets", func(t *testing.T) {
		fv := newFakeVault(t, false)
		for i := range maxSecrets + 1 {
			fv.put(fmt.Sprintf("secret/many/s%05d", i), `{}`, 1)
		}
		h := newHarness(t, fv, nil)
		wantErr(t, h.fetchErr(t), "more than 10000 secrets under secret; narrow the path")
		for _, r := range h.fv.takeRequests() {
			if strings.HasPrefix(r.key, "GET /v1/secret/data/") {
				t.Fatalf("read %s although the listing was over the limit", r.key)
			}
		}
	})
}

func TestFetchUnusableListingKey(t *testing.T) {
	fv := newFakeVault(t, false)
	fv.put("secret/app", `{"TOKEN":"t-`+leakMarker+`"}`, 1)
	fv.inject("LIST /v1/secret/metadata", fakeReply{status: 200, body: `{"data":{"keys":["app","../sys/","a//b",""]}}`})
	h := newHarness(t, fv, nil)

	b := h.fetch(t)
	if got := names(b); !slices.Equal(got, []string{"TOKEN"}) {
		t.Errorf("names = %q", got)
	}
	if len(b.Problems) != 3 {
		t.Errorf("problems = %+v, want 3", b.Problems)
	}
	for _, r := range h.fv.takeRequests() {
		if strings.Contains(r.key, "sys/") && !strings.Contains(r.key, "lookup-self") {
			t.Errorf("followed an unusable key: %s", r.key)
		}
	}
}

func TestFetchCanceledContext(t *testing.T) {
	fv := newFakeVault(t, false)
	putAgents(fv)
	h := newHarness(t, fv, nil)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := h.f.Fetch(ctx)
	wantErr(t, err, "canceled")
}

func TestFetchAfterClose(t *testing.T) {
	fv := newFakeVault(t, false)
	h := newHarness(t, fv, nil)
	h.f.Close()
	if _, err := h.f.Fetch(context.Background()); err != errClosed {
		t.Errorf("Fetch after Close = %v, want errClosed", err)
	}
	if err := h.f.CheckLogin(context.Background()); err != errClosed {
		t.Errorf("CheckLogin after Close = %v, want errClosed", err)
	}
}

func TestFetchLogsDebugWithoutValues(t *testing.T) {
	fv := newFakeVault(t, false)
	putAgents(fv)
	h := newHarness(t, fv, nil)
	h.fetch(t)
	entries := h.logs.FilterMessage("vault fetch done").All()
	if len(entries) != 1 || entries[0].ContextMap()["items"] != int64(3) {
		t.Errorf("debug entries = %+v", entries)
	}
	// assertLogsClean (in cleanup) checks no value was logged.
}
