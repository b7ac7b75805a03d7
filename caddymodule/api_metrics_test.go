package caddymodule

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/agentvault/caddy-agent-vault/caddymodule/activity"
	"github.com/agentvault/caddy-agent-vault/caddymodule/apiwire"
	"github.com/agentvault/caddy-agent-vault/caddymodule/services"
	"github.com/agentvault/caddy-agent-vault/storebackends"
)

// scrapeMetrics reads GET /metrics as c and parses the text format
// into `name{label="v",...}` → value (histograms as name_count).
func (pl *pipeline) scrapeMetrics(t testing.TB, c apiCall) map[string]float64 {
	t.Helper()
	a := pl.must(t, c, "GET", "/metrics", nil, http.StatusOK, nil)
	if ct := a.header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Fatalf("GET /metrics: Content-Type %q", ct)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(a.body))
	if err != nil {
		t.Fatalf("GET /metrics does not parse: %v\n%s", err, a.body)
	}
	out := make(map[string]float64)
	for name, f := range fams {
		for _, m := range f.GetMetric() {
			key := name
			if ls := labelText(m); ls != "" {
				key += "{" + ls + "}"
			}
			switch {
			case m.Counter != nil:
				out[key] = m.GetCounter().GetValue()
			case m.Gauge != nil:
				out[key] = m.GetGauge().GetValue()
			case m.Histogram != nil:
				out[strings.Replace(key, name, name+"_count", 1)] = float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return out
}

func labelText(m *dto.Metric) string {
	var ls []string
	for _, l := range m.GetLabel() {
		ls = append(ls, l.GetName()+`="`+l.GetValue()+`"`)
	}
	return strings.Join(ls, ",")
}

func wantSeries(t testing.TB, got map[string]float64, want map[string]float64) {
	t.Helper()
	for k, v := range want {
		if g, ok := got[k]; !ok || g != v {
			t.Errorf("%s = %v (present %v), want %v", k, g, ok, v)
		}
	}
}

// A forwarded request with a credential put in, one without, and
// refusals move their series; the scrape-time gauges are there.
func TestPipelineMetrics(t *testing.T) {
	up := upstreamTLS(t, nil)
	plain := upstreamHTTP(t, nil)
	pl := newPipeline(t, pipelineConfig{
		services: []services.Service{
			bearer("github", up.hostPort+"/gh/*", "TOKEN"),
			{Name: "open", Host: up.hostPort + "/open/*", Auth: services.Auth{Type: services.AuthPassthrough}},
			bearer("tls-only", plain.hostPort, "TOKEN"),
		},
		stores: []storebackends.Store{builtin("TOKEN", bearerSecret)},
	})
	agent := pl.agent(t, pl.session(t), false)
	wantStatus(t, get(t, agent, up.https("/gh/repos")), http.StatusOK)
	wantStatus(t, get(t, agent, up.https("/gh/user")), http.StatusOK)
	wantStatus(t, get(t, agent, up.https("/open/x")), http.StatusOK)
	wantRefusal(t, get(t, agent, up.https("/elsewhere")), http.StatusForbidden, "no service")
	wantRefusal(t, get(t, agent, plain.http("/x")), http.StatusForbidden, "cleartext")
	// A wrong session token: 407, counted with the code auth.
	stranger := pl.agent(t, agentSession{token: "avs_" + strings.Repeat("0", 43)}, false)
	if a := get(t, stranger, plain.http("/x")); a.status != http.StatusProxyAuthRequired {
		t.Fatalf("a wrong session token: %d, want 407", a.status)
	}

	got := pl.scrapeMetrics(t, pl.admin())
	wantSeries(t, got, map[string]float64{
		`agent_vault_proxy_requests_total{decision="forwarded",service="github",status="200"}`: 2,
		`agent_vault_proxy_requests_total{decision="forwarded",service="open",status="200"}`:   1,
		`agent_vault_proxy_requests_total{decision="refused",service="",status="403"}`:         1,
		`agent_vault_proxy_requests_total{decision="refused",service="tls-only",status="403"}`: 1,
		`agent_vault_injections_total{service="github"}`:                                       2,
		`agent_vault_refusals_total{code="uncovered_host"}`:                                    1,
		`agent_vault_refusals_total{code="cleartext"}`:                                         1,
		`agent_vault_refusals_total{code="auth"}`:                                              1,
		`agent_vault_proxy_requests_total{decision="refused",service="",status="407"}`:         1,
		`agent_vault_upstream_duration_seconds_count{service="github"}`:                        2,
		`agent_vault_upstream_duration_seconds_count{service="open"}`:                          1,
		`agent_vault_sessions_active`:                                                          1,
		`agent_vault_store_status{status="ok",store="builtin"}`:                                1,
		`agent_vault_store_status{status="stale",store="builtin"}`:                             0,
		`agent_vault_audit_dropped_total`:                                                      0,
	})
	for _, k := range []string{`agent_vault_injections_total{service="open"}`, `agent_vault_injections_total{service="tls-only"}`} {
		if _, ok := got[k]; ok {
			t.Errorf("%s: nothing was injected there", k)
		}
	}
	if _, ok := got["agent_vault_activity_written_total"]; !ok {
		t.Error("no agent_vault_activity_written_total")
	}
	// The agent's client keeps its tunnel open between requests.
	if got["agent_vault_tunnels_open"] < 1 {
		t.Errorf("agent_vault_tunnels_open = %v, want at least 1", got["agent_vault_tunnels_open"])
	}
	// No secret, no token in the exposition.
	body := pl.must(t, pl.admin(), "GET", "/metrics", nil, http.StatusOK, nil).body
	for _, s := range []string{bearerSecret, pl.adminToken} {
		if strings.Contains(body, s) {
			t.Errorf("GET /metrics holds a secret %q", s)
		}
	}
}

// Who may read GET /metrics: a viewer or better, the admin token and
// the metrics token; nobody else. The metrics token opens nothing else.
func TestAPIMetricsAuth(t *testing.T) {
	pl, _ := identityPipeline(t)
	pl.createOperator(t, "vera", testPassword, "viewer")
	viewer := pl.login(t, "vera", testPassword)
	agent := pl.createAgent(t, "ci", []string{"github"}, "")

	pl.scrapeMetrics(t, pl.admin())
	pl.scrapeMetrics(t, asToken(viewer.Token))
	pl.scrapeMetrics(t, asToken(pl.metricsToken))

	wantAPIError(t, "no credentials", pl.call(t, apiCall{}, "GET", "/metrics", nil), http.StatusUnauthorized)
	wantAPIError(t, "a wrong token", pl.call(t, asToken("metrics-"+strings.Repeat("0", 32)), "GET", "/metrics", nil), http.StatusUnauthorized)
	wantAPIError(t, "the metrics token with one byte more", pl.call(t, asToken(pl.metricsToken+"x"), "GET", "/metrics", nil), http.StatusUnauthorized)
	wantAPIError(t, "an agent token", pl.call(t, asToken(agent.Token), "GET", "/metrics", nil), http.StatusForbidden)
	sess := pl.mint(t, asToken(agent.Token), apiwire.SessionRequest{Services: []string{"github"}})
	wantAPIError(t, "a session token", pl.call(t, asToken(sess.Token), "GET", "/metrics", nil), http.StatusForbidden)

	// Every other route refuses the metrics token as an unknown token.
	for _, r := range [][2]string{
		{"GET", "/api/v1/credentials"}, {"GET", "/api/v1/stores"}, {"PUT", "/api/v1/credentials/X"},
		{"DELETE", "/api/v1/credentials/X"}, {"GET", "/api/v1/services"}, {"PUT", "/api/v1/services/x"},
		{"DELETE", "/api/v1/services/x"}, {"GET", "/api/v1/session"}, {"GET", "/api/v1/sessions"},
		{"POST", "/api/v1/sessions"}, {"DELETE", "/api/v1/sessions/x"}, {"POST", "/api/v1/sessions/x/renew"},
		{"GET", "/api/v1/agents"}, {"POST", "/api/v1/agents"}, {"GET", "/api/v1/agents/ci"},
		{"PATCH", "/api/v1/agents/ci"}, {"DELETE", "/api/v1/agents/ci"}, {"POST", "/api/v1/agents/ci/rotate"},
		{"GET", "/api/v1/operators"}, {"POST", "/api/v1/operators"}, {"GET", "/api/v1/operators/vera"},
		{"PATCH", "/api/v1/operators/vera"}, {"DELETE", "/api/v1/operators/vera"},
		{"POST", "/api/v1/requests"}, {"GET", "/api/v1/requests"}, {"POST", "/api/v1/requests/x/approve"},
		{"POST", "/api/v1/requests/x/deny"}, {"GET", "/api/v1/audit"}, {"GET", "/api/v1/activity"},
		{"GET", "/api/v1/activity/stream"}, {"GET", "/api/v1/services/match?url=https://x"}, {"POST", "/api/v1/logout"},
	} {
		wantAPIError(t, "the metrics token on "+r[0]+" "+r[1], pl.call(t, asToken(pl.metricsToken), r[0], r[1], "{}"), http.StatusUnauthorized)
	}
}

// With disable_activity_log, a proxied request and a refusal leave no
// activity entry, while the metrics still count them.
func TestPipelineActivityLogDisabled(t *testing.T) {
	up := upstreamTLS(t, nil)
	pl := newPipeline(t, pipelineConfig{
		services:           []services.Service{bearer("github", up.hostPort+"/gh/*", "TOKEN")},
		stores:             []storebackends.Store{builtin("TOKEN", bearerSecret)},
		disableActivityLog: true,
	})
	agent := pl.agent(t, pl.session(t), false)
	wantStatus(t, get(t, agent, up.https("/gh/repos")), http.StatusOK)
	wantRefusal(t, get(t, agent, up.https("/elsewhere")), http.StatusForbidden, "no service")
	// The proxy observed both (the harness's own observer, told last).
	findEntry(t, pl, "the forwarded request", func(e activity.Entry) bool { return e.Decision == activity.Forwarded })
	findEntry(t, pl, "the refusal", func(e activity.Entry) bool { return e.Decision == activity.Refused })

	got := pl.scrapeMetrics(t, pl.admin())
	wantSeries(t, got, map[string]float64{
		`agent_vault_proxy_requests_total{decision="forwarded",service="github",status="200"}`: 1,
		`agent_vault_proxy_requests_total{decision="refused",service="",status="403"}`:         1,
		`agent_vault_activity_written_total`:                                                   0,
	})
	// The Recorder was given nothing: flushing it writes nothing, and
	// the API lists nothing.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := pl.activity.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if st := pl.activity.Stats(); st != (activity.Stats{}) {
		t.Errorf("Recorder stats %+v, want zero", st)
	}
	var list apiwire.ActivityList
	pl.must(t, pl.admin(), "GET", "/api/v1/activity", nil, http.StatusOK, &list)
	if len(list.Entries) != 0 {
		t.Errorf("activity entries %+v, want none", list.Entries)
	}
}
