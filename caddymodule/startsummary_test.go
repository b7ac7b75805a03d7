package caddymodule

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

func TestBrokerURLs(t *testing.T) {
	servers := map[string]*caddyhttp.Server{
		"srv0": {Listen: []string{"tcp/127.0.0.1:14321"}, Routes: caddyhttp.RouteList{{Handlers: []caddyhttp.MiddlewareHandler{&API{}}}}},
		// The proxy inside a subroute, on every interface.
		"srv1": {Listen: []string{":14322", "[::1]:14330-14331"}, Routes: caddyhttp.RouteList{{Handlers: []caddyhttp.MiddlewareHandler{
			&caddyhttp.Subroute{Routes: caddyhttp.RouteList{{Handlers: []caddyhttp.MiddlewareHandler{&Proxy{}}}}},
		}}}},
		// Another site: not listed.
		"srv2": {Listen: []string{":8080"}, Routes: caddyhttp.RouteList{{Handlers: []caddyhttp.MiddlewareHandler{&caddyhttp.StaticResponse{}}}}},
	}
	api, proxy := brokerURLs(servers)
	if want := []string{"http://127.0.0.1:14321"}; !reflect.DeepEqual(api, want) {
		t.Errorf("api = %q, want %q", api, want)
	}
	if want := []string{"http://*:14322", "http://[::1]:14330-14331"}; !reflect.DeepEqual(proxy, want) {
		t.Errorf("proxy = %q, want %q", proxy, want)
	}
}

func TestStartSummaryText(t *testing.T) {
	s := startInfo{
		API: []string{"http://127.0.0.1:14321"}, Proxy: []string{"http://127.0.0.1:14322"}, ProxyURL: "http://127.0.0.1:14322",
		DataDir: "/d", State: "sqlite, /d/state.db", AdminTokenFile: "/d/admin.token", AgentTokenFile: "/d/agent.token",
	}
	got := s.String()
	for _, want := range []string{
		"agent-vault is ready\n",
		"  management API   http://127.0.0.1:14321\n",
		"  agents' proxy    http://127.0.0.1:14322\n",
		"  data dir         /d\n",
		"  state            sqlite, /d/state.db\n",
		"  admin token      /d/admin.token",
		"  agent token      /d/agent.token",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("summary lacks %q:\n%s", want, got)
		}
	}
	s.ProxyURL, s.AdminTokenFile, s.AgentTokenFile = "http://proxy.internal:3128", "", ""
	got = s.String()
	for _, want := range []string{"(agents are given http://proxy.internal:3128)", "set in the config (admin_token)", "agent token      none"} {
		if !strings.Contains(got, want) {
			t.Errorf("summary lacks %q:\n%s", want, got)
		}
	}
}

// The summary names the database, never its password.
func TestDescribeStateHidesThePassword(t *testing.T) {
	for _, dsn := range []string{
		"postgres://av:s3cretpw@db.example:5433/vault?sslmode=disable",
		"host=db.example port=5433 user=av password=s3cretpw dbname=vault sslmode=disable",
	} {
		got := describeState(&StateConfig{Backend: StatePostgres, DSN: dsn})
		if strings.Contains(got, "s3cretpw") || got != "postgres, database vault on db.example:5433" {
			t.Errorf("%q described as %q", dsn, got)
		}
	}
	if got := describeState(&StateConfig{Backend: StatePostgres, DSN: "postgres://av:s3cretpw@[bad"}); got != "postgres" {
		t.Errorf("unparsable DSN described as %q", got)
	}
	if got := describeState(&StateConfig{Backend: StateSQLite, Path: "/d/state.db"}); got != "sqlite, /d/state.db" {
		t.Errorf("sqlite described as %q", got)
	}
}

// printStartSummary prints once per distinct summary, and finds the
// token files.
func TestPrintStartSummary(t *testing.T) {
	dir := t.TempDir()
	const token = "ava_0123456789abcdef0123456789abcdef"
	os.WriteFile(filepath.Join(dir, "admin.token"), []byte(token+"\n"), 0o600)
	os.WriteFile(filepath.Join(dir, "agent.token"), []byte("avt_x\n"), 0o600)
	var out strings.Builder
	old := startSummaryOut
	startSummaryOut = &out
	lastSummary.text = ""
	t.Cleanup(func() { startSummaryOut = old; lastSummary.text = "" })

	a := &App{DataDir: dir, AdminToken: token, ProxyURL: DefaultProxyURL, State: &StateConfig{Backend: StateSQLite, Path: filepath.Join(dir, "state.db")}}
	a.printStartSummary()
	a.printStartSummary()
	got := out.String()
	if strings.Count(got, "agent-vault is ready") != 1 {
		t.Errorf("printed %d times:\n%s", strings.Count(got, "agent-vault is ready"), got)
	}
	for _, want := range []string{filepath.Join(dir, "admin.token"), filepath.Join(dir, "agent.token"), "sqlite, " + dir} {
		if !strings.Contains(got, want) {
			t.Errorf("summary lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, token) {
		t.Error("the summary shows the admin token")
	}
	// A config whose admin token is not the file's: the file is not named.
	a.AdminToken = "ava_another-token-set-in-the-config"
	a.printStartSummary()
	if got := out.String(); strings.Count(got, "agent-vault is ready") != 2 || !strings.HasSuffix(got[:strings.LastIndex(got, "agent token")], "set in the config (admin_token)\n  ") {
		t.Errorf("after a change:\n%s", got)
	}
}
