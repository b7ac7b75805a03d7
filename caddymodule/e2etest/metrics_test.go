package e2etest

import (
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/agentvault/caddy-agent-vault/caddymodule/apiwire"
)

// An operator scrapes GET /metrics with curl after an agent's requests
// went through the proxy: the forwarded, injected and refused requests
// are counted. The metrics token (the Caddyfile.example line, enabled)
// reads the metrics and nothing else; a viewer reads them too; a
// request without credentials is 401, an agent's token 403.
func TestMetrics(t *testing.T) {
	ca := newTestCA(t)
	up := newUpstream(t, ca, true)
	example, err := os.ReadFile(filepath.Join(repoRoot, "Caddyfile.example"))
	if err != nil {
		t.Fatal(err)
	}
	const line = "# metrics_token {env.AGENT_VAULT_METRICS_TOKEN}"
	if !strings.Contains(string(example), line) {
		t.Fatalf("Caddyfile.example has no %q line", line)
	}
	config := filepath.Join(t.TempDir(), "Caddyfile")
	if err := os.WriteFile(config, []byte(strings.Replace(string(example), line, line[2:], 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	metricsToken := "scrape-" + strings.Repeat("5a", 16)
	s := startServer(t, ca, serverOpts{config: config, extraEnv: []string{"AGENT_VAULT_METRICS_TOKEN=" + metricsToken}})

	s.putCredential("GITHUB_TOKEN", githubSecret)
	s.putService("github", map[string]any{"host": up.hostPort() + "/echo/*", "auth": map[string]any{"type": "bearer", "token": "GITHUB_TOKEN"}})
	out, errOut, code := s.launch(nil, "sh", "-c",
		`curl -sS --fail-with-body https://`+up.hostPort()+`/echo/a && curl -sS --fail-with-body https://`+up.hostPort()+`/echo/b && `+
			`curl -sS -o /dev/null -w 'refused:%{http_code}\n' https://`+up.hostPort()+`/user`)
	if code != 0 {
		t.Fatalf("av-launch: exit %d\nstdout: %s\nstderr: %s\nserver: %s", code, out, errOut, s.logs.String())
	}
	mustContain(t, "agent output", out, "refused:403")

	scrape := func(token string) map[string]float64 {
		t.Helper()
		cmd := exec.Command("curl", "-sS", "--fail-with-body", "--noproxy", "*", "-H", "Authorization: Bearer "+token, "http://"+s.apiAddr+"/metrics")
		cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}
		text, err := cmd.Output()
		if err != nil {
			t.Fatalf("curl /metrics: %v\n%s", err, text)
		}
		mustNotContain(t, "metrics", string(text), githubSecret)
		parser := expfmt.NewTextParser(model.UTF8Validation)
		fams, err := parser.TextToMetricFamilies(strings.NewReader(string(text)))
		if err != nil {
			t.Fatalf("GET /metrics does not parse: %v\n%s", err, text)
		}
		got := make(map[string]float64)
		for name, f := range fams {
			for _, m := range f.GetMetric() {
				var ls []string
				for _, l := range m.GetLabel() {
					ls = append(ls, l.GetName()+`="`+l.GetValue()+`"`)
				}
				key := name + "{" + strings.Join(ls, ",") + "}"
				switch {
				case m.Counter != nil:
					got[key] = m.GetCounter().GetValue()
				case m.Gauge != nil:
					got[key] = m.GetGauge().GetValue()
				case m.Histogram != nil:
					got[strings.Replace(key, name, name+"_count", 1)] = float64(m.GetHistogram().GetSampleCount())
				}
			}
		}
		return got
	}
	got := scrape(metricsToken)
	for k, v := range map[string]float64{
		`agent_vault_proxy_requests_total{decision="forwarded",service="github",status="200"}`: 2,
		`agent_vault_injections_total{service="github"}`:                                       2,
		`agent_vault_upstream_duration_seconds_count{service="github"}`:                        2,
		`agent_vault_refusals_total{code="uncovered_host"}`:                                    1,
		`agent_vault_store_status{status="ok",store="builtin"}`:                                1,
	} {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
	for _, k := range []string{"agent_vault_sessions_active{}", "agent_vault_tunnels_open{}", "agent_vault_audit_dropped_total{}"} {
		if _, ok := got[k]; !ok {
			t.Errorf("no %s", k)
		}
	}

	// Who may read it.
	s.createOperator("vera", operatorPassword, "viewer")
	viewer := s.login("vera", operatorPassword)
	scrape(viewer.Token)
	scrape(s.adminToken())
	if r := s.call(cred{}, "GET", "/metrics", nil); r.status != http.StatusUnauthorized {
		t.Errorf("no credentials: %s, want 401", r)
	}
	agent := s.createAgent("ci", []string{"github"}, "")
	if r := s.call(bearer(agent.Token), "GET", "/metrics", nil); r.status != http.StatusForbidden {
		t.Errorf("an agent's token: %s, want 403", r)
	}
	// The metrics token opens nothing else.
	for _, p := range []string{"/api/v1/credentials", "/api/v1/stores", "/api/v1/sessions", "/api/v1/audit"} {
		if r := s.call(bearer(metricsToken), "GET", p, nil); r.status != http.StatusUnauthorized {
			t.Errorf("the metrics token on GET %s: %s, want 401", p, r)
		}
	}
	if r := s.call(bearer(metricsToken), "POST", "/api/v1/sessions", apiwire.SessionRequest{}); r.status != http.StatusUnauthorized {
		t.Errorf("the metrics token minting a session: %s, want 401", r)
	}
}
