package caddymodule

import (
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"

	"github.com/agentvault/caddy-agent-vault/caddymodule/activity"
	"github.com/agentvault/caddy-agent-vault/caddymodule/metrics"
)

// metrics_token: placeholders expanded, the admin token's rule, and
// errors that never repeat the token.
func TestCheckMetricsToken(t *testing.T) {
	t.Setenv("AGENT_VAULT_TEST_METRICS_TOKEN", "scrape-"+strings.Repeat("a1", 10))
	for _, tc := range []struct {
		token, want, err string
	}{
		{"", "", ""},
		{"{env.AGENT_VAULT_TEST_METRICS_TOKEN}", "scrape-" + strings.Repeat("a1", 10), ""},
		{"{env.AGENT_VAULT_TEST_METRICS_UNSET}", "", ""},
		{"short-secret", "", "metrics_token: the metrics token is 12 bytes long: use at least 16"},
		{"with a space in the middle", "", "space"},
		{"avt_" + strings.Repeat("0", 40), "", "prefix of agent tokens"},
	} {
		a := App{MetricsToken: tc.token}
		err := a.checkMetricsToken(caddy.NewReplacer())
		switch {
		case tc.err == "" && (err != nil || a.MetricsToken != tc.want):
			t.Errorf("%q: %v, token %q, want %q", tc.token, err, a.MetricsToken, tc.want)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%q: %v, want an error saying %q", tc.token, err, tc.err)
		case err != nil && strings.Contains(err.Error(), tc.token):
			t.Errorf("%q: the error repeats the token: %v", tc.token, err)
		}
	}
}

// The metrics outlive config reloads: one registry (no registration
// twice), counters kept, and the gauges read the config that runs,
// also after a reload that failed to start.
func TestReloadKeepsMetrics(t *testing.T) {
	cfg := brokerConfig{dir: t.TempDir(), api: freeAddr(t), proxy: freeAddr(t), ttl: 60}
	runBroker(t, cfg)
	a := activeApp(t)
	a.state.metrics.Observe(&activity.Entry{Service: "svc", Status: 200, Decision: activity.Forwarded})
	count := func(m *metrics.Metrics) float64 {
		t.Helper()
		fams, err := m.Registry().Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range fams {
			if f.GetName() == "agent_vault_proxy_requests_total" {
				return f.GetMetric()[0].GetCounter().GetValue()
			}
		}
		return 0
	}
	reading := func(want *App) {
		t.Helper()
		a.state.measure.mu.Lock()
		defer a.state.measure.mu.Unlock()
		if n := len(a.state.measure.apps); n == 0 || a.state.measure.apps[n-1] != want {
			t.Fatalf("the metrics read another config than the running one (%d started)", n)
		}
	}
	reading(a)

	bad := cfg
	bad.ttl, bad.extraApps = 61, `, "test_failstart": {}`
	for range 5 { // apps start in map order: sometimes the new agent_vault app starts and stops
		if err := caddy.Load(bad.json(), true); err == nil {
			t.Fatal("a config whose app fails to start was loaded")
		}
	}
	reading(a)

	next := cfg
	next.ttl = 62
	if err := caddy.Load(next.json(), true); err != nil {
		t.Fatal(err)
	}
	b := activeApp(t)
	if b == a || b.state.metrics != a.state.metrics {
		t.Fatal("the reload made new metrics")
	}
	reading(b)
	if got := count(b.state.metrics); got != 1 {
		t.Fatalf("after the reload agent_vault_proxy_requests_total = %v, want 1", got)
	}
}
