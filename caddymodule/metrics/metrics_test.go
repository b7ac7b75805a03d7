package metrics

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/agentvault/caddy-agent-vault/caddymodule/activity"
)

func forwarded(service string, creds ...string) *activity.Entry {
	return &activity.Entry{Service: service, Method: "GET", Host: "api.example.com", Status: 200,
		Decision: activity.Forwarded, Duration: 30 * time.Millisecond, Credentials: creds}
}

func refused(code string, status int) *activity.Entry {
	return &activity.Entry{Method: "GET", Host: "x.example.com", Status: status, Decision: activity.Refused, Code: code}
}

func TestObserveMovesCounters(t *testing.T) {
	m := New(Sources{})
	m.Observe(forwarded("github", "gh_token"))
	m.Observe(forwarded("github"))
	m.Observe(refused(activity.CodeUncoveredHost, 403))
	// Resolved, then refused (a stale store): nothing was injected.
	stale := refused(activity.CodeStoreStale, 503)
	stale.Service, stale.Credentials = "github", []string{"gh_token"}
	m.Observe(stale)
	m.Observe(&activity.Entry{Service: "github", Status: 502, Decision: activity.Failed, Code: activity.CodeUpstream})
	// A relayed tunnel is forwarded too, but its duration is the
	// tunnel's lifetime, not a request's.
	m.Observe(&activity.Entry{Method: "CONNECT", Host: "relay.example.com", Port: 443, Status: 200,
		Decision: activity.Forwarded, Duration: time.Hour})

	for _, c := range []struct {
		name string
		got  float64
		want float64
	}{
		{"forwarded github 200", testutil.ToFloat64(m.requests.WithLabelValues("github", "forwarded", "200")), 2},
		{"relayed tunnel", testutil.ToFloat64(m.requests.WithLabelValues("", "forwarded", "200")), 1},
		{"refused 403", testutil.ToFloat64(m.requests.WithLabelValues("", "refused", "403")), 1},
		{"failed 502", testutil.ToFloat64(m.requests.WithLabelValues("github", "failed", "502")), 1},
		{"injections github", testutil.ToFloat64(m.injections.WithLabelValues("github")), 1},
		{"refusals uncovered_host", testutil.ToFloat64(m.refusals.WithLabelValues("uncovered_host")), 1},
		{"refusals upstream", testutil.ToFloat64(m.refusals.WithLabelValues("upstream")), 1},
		{"refusals store_stale", testutil.ToFloat64(m.refusals.WithLabelValues("store_stale")), 1},
	} {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
	// The histogram counts forwarded requests only.
	h := histogram(t, m, "agent_vault_upstream_duration_seconds", "github")
	if h.GetSampleCount() != 2 || h.GetSampleSum() < 0.059 || h.GetSampleSum() > 0.061 {
		t.Errorf("upstream histogram: count %d sum %v, want 2 and 0.06", h.GetSampleCount(), h.GetSampleSum())
	}
	if n := testutil.CollectAndCount(m.upstream); n != 1 {
		t.Errorf("upstream histogram has %d series, want 1 (refusals, failures and tunnels are not timed)", n)
	}
}

func TestLabelsBounded(t *testing.T) {
	m := New(Sources{})
	m.Observe(&activity.Entry{Status: 9999, Decision: "bogus", Code: "made-up <code>"})
	m.Observe(&activity.Entry{Status: -1, Decision: activity.Refused, Code: ""})
	if v := testutil.ToFloat64(m.requests.WithLabelValues("", "unknown", "0")); v != 1 {
		t.Errorf("out-of-range status and unknown decision: %v, want 1", v)
	}
	if v := testutil.ToFloat64(m.refusals.WithLabelValues(otherCode)); v != 2 {
		t.Errorf("unknown and empty codes are %q: %v, want 2", otherCode, v)
	}
	if n := testutil.CollectAndCount(m.refusals); n != 1 {
		t.Errorf("refusals has %d series, want 1", n)
	}
}

func TestScrapeGauges(t *testing.T) {
	now := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	m := New(Sources{
		Stores: func() []StoreState {
			return []StoreState{
				{Store: "builtin", Status: "ok"},
				{Store: "vault", Status: "degraded", LastSync: now.Add(-90 * time.Second)},
			}
		},
		SessionsActive: func() int { return 3 },
		TunnelsOpen:    func() int { return 2 },
		Activity:       func() ActivityCounts { return ActivityCounts{Written: 40, Dropped: 5} },
		AuditDropped:   func() uint64 { return 7 },
		Now:            func() time.Time { return now },
	})
	fams := scrape(t, m)
	want := map[string]float64{
		`agent_vault_store_sync_age_seconds{store="vault"}`:             90,
		`agent_vault_store_status{status="ok",store="builtin"}`:         1,
		`agent_vault_store_status{status="degraded",store="builtin"}`:   0,
		`agent_vault_store_status{status="degraded",store="vault"}`:     1,
		`agent_vault_store_status{status="ok",store="vault"}`:           0,
		`agent_vault_store_status{status="never_synced",store="vault"}`: 0,
		`agent_vault_sessions_active`:                                   3,
		`agent_vault_tunnels_open`:                                      2,
		`agent_vault_activity_written_total`:                            40,
		`agent_vault_activity_dropped_total`:                            5,
		`agent_vault_audit_dropped_total`:                               7,
	}
	got := flatten(fams)
	for k, v := range want {
		if g, ok := got[k]; !ok || g != v {
			t.Errorf("%s = %v (present %v), want %v", k, g, ok, v)
		}
	}
	if _, ok := got[`agent_vault_store_sync_age_seconds{store="builtin"}`]; ok {
		t.Error("a store that is not synced has no sync age")
	}

	// A config reload's sources replace the old ones.
	m.SetSources(Sources{SessionsActive: func() int { return 1 }})
	got = flatten(scrape(t, m))
	if got["agent_vault_sessions_active"] != 1 {
		t.Errorf("after SetSources: sessions_active = %v, want 1", got["agent_vault_sessions_active"])
	}
	if _, ok := got["agent_vault_tunnels_open"]; ok {
		t.Error("a nil source leaves its metric out")
	}
}

// TestExposition: the handler's answer is valid Prometheus text with
// the observed series in it.
func TestExposition(t *testing.T) {
	m := New(Sources{SessionsActive: func() int { return 1 }})
	m.Observe(forwarded("openai", "openai_key"))
	m.Observe(refused(activity.CodeAuth, 407))
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("status %d", rec.Code)
	}
	if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("Content-Type %q, want text/plain", ct)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(rec.Body.String()))
	if err != nil {
		t.Fatalf("exposition does not parse: %v\n%s", err, rec.Body)
	}
	got := flatten(fams)
	for _, k := range []string{
		`agent_vault_proxy_requests_total{decision="forwarded",service="openai",status="200"}`,
		`agent_vault_proxy_requests_total{decision="refused",service="",status="407"}`,
		`agent_vault_injections_total{service="openai"}`,
		`agent_vault_refusals_total{code="auth"}`,
		`agent_vault_upstream_duration_seconds_count{service="openai"}`,
		`agent_vault_sessions_active`,
	} {
		if got[k] != 1 {
			t.Errorf("%s = %v, want 1", k, got[k])
		}
	}
}

// TestPrivateRegistry: two Metrics (two app lifetimes) never collide,
// as they would on the global registry.
func TestPrivateRegistry(t *testing.T) {
	a, b := New(Sources{}), New(Sources{})
	a.Observe(forwarded("s"))
	if n := testutil.CollectAndCount(b.requests); n != 0 {
		t.Errorf("b sees %d series of a", n)
	}
}

func scrape(t *testing.T, m *Metrics) map[string]*dto.MetricFamily {
	t.Helper()
	list, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[string]*dto.MetricFamily, len(list))
	for _, f := range list {
		out[f.GetName()] = f
	}
	return out
}

func histogram(t *testing.T, m *Metrics, name, service string) *dto.Histogram {
	t.Helper()
	for _, mt := range scrape(t, m)[name].GetMetric() {
		for _, l := range mt.GetLabel() {
			if l.GetName() == "service" && l.GetValue() == service {
				return mt.GetHistogram()
			}
		}
	}
	t.Fatalf("no %s{service=%q}", name, service)
	return nil
}

// flatten maps `name{label="v",...}` (labels sorted, as the text format
// and dto have them) to values; histograms give name_count.
func flatten(fams map[string]*dto.MetricFamily) map[string]float64 {
	out := make(map[string]float64)
	for name, f := range fams {
		for _, mt := range f.GetMetric() {
			var ls []string
			for _, l := range mt.GetLabel() {
				ls = append(ls, l.GetName()+`="`+l.GetValue()+`"`)
			}
			key := func(n string) string {
				if len(ls) == 0 {
					return n
				}
				return n + "{" + strings.Join(ls, ",") + "}"
			}
			switch {
			case mt.Counter != nil:
				out[key(name)] = mt.GetCounter().GetValue()
			case mt.Gauge != nil:
				out[key(name)] = mt.GetGauge().GetValue()
			case mt.Histogram != nil:
				out[key(name+"_count")] = float64(mt.GetHistogram().GetSampleCount())
			}
		}
	}
	return out
}
