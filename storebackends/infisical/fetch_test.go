package infisical

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/agentvault/caddy-agent-vault/storebackends"
	"github.com/agentvault/caddy-agent-vault/storebackends/infisical/infisicaltest"
)

// The mapping of a recursive list with imports, from a fixture in the
// documented shape: direct secrets win over imported ones, personal
// overrides are ignored, a key two imports define differently is
// refused, the same value twice is not a conflict, and invalid names
// and hidden values become problems.
func TestMappingFromFixture(t *testing.T) {
	h := newHarness(t, nil, func(c *Config) { c.Recursive = true })
	h.stub.Override(list, infisicaltest.Reply{Status: 200, Body: readTestdata(t, "list_recursive_imports.json")})
	b := h.fetch(t)

	at := func(s string) time.Time {
		v, err := time.Parse(time.RFC3339, s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	wantItems := []storebackends.Item{
		{Name: "GITHUB_TOKEN", Value: "ghp_direct_LEAKMARKER", Version: "3", Source: "prod:/agents/GITHUB_TOKEN", UpdatedAt: at("2025-02-27T09:30:00Z")},
		{Name: "OPENAI_API_KEY", Value: "sk-sub-folder-LEAKMARKER", Version: "12", Source: "prod:/agents/llm/OPENAI_API_KEY", UpdatedAt: at("2025-02-20T08:00:00Z")},
		// Recursive: the import of a key also defined directly is passed
		// on too, so the engine drops both copies as a clash.
		{Name: "GITHUB_TOKEN", Value: "ghp_imported_shadowed_LEAKMARKER", Version: "7", Source: "prod:/shared/GITHUB_TOKEN", UpdatedAt: at("2025-01-01T00:00:00Z")},
		{Name: "SLACK_TOKEN", Value: "xoxb-imported-LEAKMARKER", Version: "2", Source: "prod:/shared/SLACK_TOKEN", UpdatedAt: at("2025-01-02T00:00:00Z")},
		{Name: "REGION", Value: "eu-west-1", Version: "1", Source: "prod:/shared/REGION", UpdatedAt: at("2025-01-04T00:00:00Z")},
	}
	if !reflect.DeepEqual(b.Items, wantItems) {
		t.Errorf("items:\n got %+v\nwant %+v", b.Items, wantItems)
	}
	wantProblems := []storebackends.Problem{
		{Source: "prod:/agents/stripe-key", Name: "stripe-key", Reason: "invalid credential name: use letters, digits and '_', not starting with a digit, at most 128 characters"},
		{Source: "prod:/agents/HIDDEN_KEY", Name: "HIDDEN_KEY", Reason: "Infisical hides this value from the identity: grant it permission to read secret values"},
		{Source: "prod:/shared/DB_PASSWORD, staging:/DB_PASSWORD", Name: "DB_PASSWORD", Reason: "imported more than once with different values; rather than guess which import wins, none is used"},
	}
	if !reflect.DeepEqual(b.Problems, wantProblems) {
		t.Errorf("problems:\n got %+v\nwant %+v", b.Problems, wantProblems)
	}
}

func TestNamePrefix(t *testing.T) {
	h := newHarness(t, nil, func(c *Config) { c.NamePrefix = "INF_" })
	h.stub.Override(list, infisicaltest.Reply{Status: 200, Body: readTestdata(t, "list_recursive_imports.json")})
	b := h.fetch(t)
	var names []string
	for _, it := range b.Items {
		names = append(names, it.Name)
	}
	if strings.Join(names, ",") != "INF_GITHUB_TOKEN,INF_OPENAI_API_KEY,INF_SLACK_TOKEN,INF_REGION" {
		t.Errorf("names = %q", names)
	}
	if b.Problems[0].Name != "INF_stripe-key" || b.Problems[2].Name != "INF_DB_PASSWORD" {
		t.Errorf("problems = %+v", b.Problems)
	}
}

// The same through the stateful stub: subfolders only when recursive,
// imports always, the shadowed import and personal overrides never.
func TestRecursiveAndImports(t *testing.T) {
	stub := newStub(t)
	stub.Put("prod", "/agents", infisicaltest.Secret{Key: "GITHUB_TOKEN", Value: "ghp_personal_LEAKMARKER", Version: 1, Personal: true})
	stub.Put("prod", "/agents/llm", infisicaltest.Secret{Key: "OPENAI_API_KEY", Value: "sk-LEAKMARKER", Version: 4})
	stub.Put("prod", "/shared", infisicaltest.Secret{Key: "GITHUB_TOKEN", Value: "ghp_shadowed_LEAKMARKER", Version: 9})
	stub.Put("prod", "/shared", infisicaltest.Secret{Key: "SLACK_TOKEN", Value: "xoxb-LEAKMARKER", Version: 2})
	stub.Import("prod", "/agents", "prod", "/shared")

	for _, recursive := range []bool{false, true} {
		h := newHarness(t, stub, func(c *Config) { c.Recursive = recursive })
		b := h.fetch(t)
		want := map[string]string{"GITHUB_TOKEN": "ghp_LEAKMARKER_1", "SLACK_TOKEN": "xoxb-LEAKMARKER"}
		if recursive {
			want["OPENAI_API_KEY"] = "sk-LEAKMARKER"
			// Both copies of GITHUB_TOKEN are passed on (the engine drops
			// the clash); values() keeps the last one.
			want["GITHUB_TOKEN"] = "ghp_shadowed_LEAKMARKER"
		}
		if got := values(b); !reflect.DeepEqual(got, want) || len(b.Problems) != 0 {
			t.Errorf("recursive=%v: values %v, problems %+v", recursive, got, b.Problems)
		}
		for _, it := range b.Items {
			if it.Name == "OPENAI_API_KEY" && (it.Source != "prod:/agents/llm/OPENAI_API_KEY" || it.Version != "4") {
				t.Errorf("sub-folder item %+v", it)
			}
			if it.Name == "SLACK_TOKEN" && it.Source != "prod:/shared/SLACK_TOKEN" {
				t.Errorf("imported item %+v", it)
			}
		}
	}
}

func TestRootFolder(t *testing.T) {
	stub := newStub(t)
	stub.Put("prod", "/", infisicaltest.Secret{Key: "ROOT_KEY", Value: "root-LEAKMARKER", Version: 5})
	h := newHarness(t, stub, func(c *Config) { c.SecretPath = "" })
	b := h.fetch(t)
	if len(b.Items) != 1 || b.Items[0].Source != "prod:/ROOT_KEY" || b.Items[0].Version != "5" {
		t.Fatalf("items = %+v", b.Items)
	}
	if q := h.stub.Requests()[1].Query; q.Get("secretPath") != "/" {
		t.Errorf("secretPath = %q", q.Get("secretPath"))
	}
}

// An empty folder is an empty batch, not an error: the sync engine
// decides (allow_empty) whether to accept it.
func TestEmptyFolder(t *testing.T) {
	stub := newStub(t)
	stub.Delete("prod", "/agents", "GITHUB_TOKEN")
	h := newHarness(t, stub, nil)
	if b := h.fetch(t); len(b.Items) != 0 || len(b.Problems) != 0 {
		t.Fatalf("batch = %+v", b)
	}
}

func TestListErrors(t *testing.T) {
	tests := []struct {
		name   string
		reply  infisicaltest.Reply
		mutate func(*Config)
		want   string
	}{
		{name: "not JSON", reply: infisicaltest.Reply{Status: 200, Body: "<html>LEAKMARKER</html>"},
			want: "listing secrets in prod:/agents: malformed JSON in Infisical's response (HTTP 200)"},
		{name: "no secrets list", reply: infisicaltest.Reply{Status: 200, Body: `{"imports":[]}`},
			want: "Infisical's response has no secrets list (HTTP 200)"},
		{name: "secrets of the wrong type", reply: infisicaltest.Reply{Status: 200, Body: `{"secrets":{"A":"LEAKMARKER"}}`},
			want: "malformed JSON in Infisical's response"},
		{name: "HTML error page", reply: infisicaltest.Reply{Status: 502, Body: "<html>upstream LEAKMARKER down</html>", Header: map[string][]string{"Content-Type": {"text/html"}}},
			want: "listing secrets in prod:/agents: bad gateway (HTTP 502)"},
		{name: "permission denied", reply: infisicaltest.Reply{Status: 403, Body: `{"statusCode":403,"message":"You are not allowed to read on secrets","error":"PermissionDenied"}`},
			want: "You are not allowed to read on secrets (HTTP 403)"},
		{name: "validation error", reply: infisicaltest.Reply{Status: 422, Body: `{"statusCode":422,"message":[{"path":["environment"]}],"error":"ValidationFailure"}`},
			want: "ValidationFailure (HTTP 422)"},
		{name: "control characters", reply: infisicaltest.Reply{Status: 400, Body: `{"statusCode":400,"message":"bad\nrequest\u001b[31m","error":"BadRequest"}`},
			want: "bad request [31m (HTTP 400)"},
		{name: "wrong project", mutate: func(c *Config) { c.ProjectID = "other" },
			want: "Project with ID 'other' not found (HTTP 404)"},
		{name: "unknown folder", mutate: func(c *Config) { c.SecretPath = "/nope" },
			want: "listing secrets in prod:/nope: Folder with path '/nope' in environment with slug 'prod' not found (HTTP 404)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, nil, tt.mutate)
			if tt.reply.Status != 0 {
				h.stub.Override(list, tt.reply)
			}
			wantErr(t, h.fetchErr(t), tt.want)
			h.wantEndpoints(t, login, list) // only a 401 leads to a new login
		})
	}
}

// Infisical (or a proxy) echoing a credential in an error message does
// not carry it into the error.
func TestErrorsMaskEchoedCredentials(t *testing.T) {
	h := newHarness(t, nil, nil)
	h.stub.Override(login, infisicaltest.Reply{Status: 401, Body: `{"statusCode":401,"message":"no identity for secret ` + clientSecret + `","error":"UnauthorizedError"}`})
	wantErr(t, h.checkLogin(t), "no identity for secret [redacted]")

	h.stub.Clear(login)
	h.stub.Override(list, infisicaltest.Reply{Status: 400, Body: `{"statusCode":400,"message":"token ua.stub-access-token-1 is odd","error":"BadRequest"}`})
	wantErr(t, h.fetchErr(t), "token [redacted] is odd")
}

func TestLongKeysAreClipped(t *testing.T) {
	stub := newStub(t)
	stub.Put("prod", "/agents", infisicaltest.Secret{Key: strings.Repeat("K", 5000), Value: "v-LEAKMARKER", Version: 1})
	h := newHarness(t, stub, nil)
	b := h.fetch(t)
	if len(b.Problems) != 1 || len(b.Problems[0].Name) > 170 || len(b.Problems[0].Source) > 300 {
		t.Fatalf("problems = %d, name %d bytes", len(b.Problems), len(b.Problems[0].Name))
	}
}

func TestVersion(t *testing.T) {
	for _, tt := range []struct {
		in   any
		want string
	}{
		{float64(1), "1"}, {float64(42), "42"}, {float64(0), ""}, {float64(-3), ""}, {1.5, ""},
		{float64(1 << 60), ""}, {"7", ""}, {nil, ""}, {true, ""},
	} {
		if got := version(tt.in); got != tt.want {
			t.Errorf("version(%v) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
