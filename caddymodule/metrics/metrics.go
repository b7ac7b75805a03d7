// Package metrics exposes what the broker does in the Prometheus text
// format: counters and a latency histogram moved by every activity
// entry (Observe), and gauges read at scrape time from the app.
//
// Its Registry is private (never Prometheus's global default one, where
// Caddy registers its own metrics) and outlives config reloads: the app
// keeps one Metrics in its shared state and each config hands it its
// current Sources.
package metrics

import (
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/agentvault/caddy-agent-vault/caddymodule/activity"
)

// namespace prefixes every metric name.
const namespace = "agent_vault"

// upstreamBuckets are the upstream latency histogram's bounds, in
// seconds: API calls take milliseconds to a few seconds, model
// completions up to minutes.
var upstreamBuckets = []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300}

// Metrics is the broker's metrics. Observe is safe for concurrent use
// and cheap; Sources may be replaced at any time (SetSources).
type Metrics struct {
	reg        *prometheus.Registry
	requests   *prometheus.CounterVec   // service, decision, status
	injections *prometheus.CounterVec   // service
	refusals   *prometheus.CounterVec   // code
	upstream   *prometheus.HistogramVec // service
	handler    http.Handler
	src        atomic.Pointer[Sources]
}

// New builds the metrics and their registry, reading src at scrape time.
func New(src Sources) *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "proxy_requests_total",
			Help: "Requests the proxy took (and refusals it made), by service (empty: none matched), decision and HTTP status.",
		}, []string{"service", "decision", "status"}),
		injections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "injections_total",
			Help: "Requests sent upstream with at least one credential put in, by service.",
		}, []string{"service"}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "refusals_total",
			Help: "Requests refused or failed, by reason code.",
		}, []string{"code"}),
		upstream: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "upstream_duration_seconds",
			Help:    "Duration of forwarded HTTP requests (not CONNECT tunnels), from arrival to the end of the answer, by service.",
			Buckets: upstreamBuckets,
		}, []string{"service"}),
	}
	m.SetSources(src)
	m.handler = promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
	m.reg.MustRegister(m.requests, m.injections, m.refusals, m.upstream, scrapeCollector{m})
	return m
}

// SetSources replaces what the scrape-time gauges read (a config
// reload's credential stores and proxy).
func (m *Metrics) SetSources(src Sources) { m.src.Store(&src) }

// Registry is the private registry, for tests and Handler.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the registry in the Prometheus text format. A
// collector's error is reported in the answer, not a crash.
func (m *Metrics) Handler() http.Handler { return m.handler }

// Observe counts one activity entry. Its label values are bounded: the
// service comes from the catalog (empty when none matched), the
// decision and code are checked against their closed sets, the status
// is a number in 0..599.
func (m *Metrics) Observe(e *activity.Entry) {
	decision := string(e.Decision)
	if !e.Decision.Valid() {
		decision = "unknown"
	}
	m.requests.WithLabelValues(e.Service, decision, statusLabel(e.Status)).Inc()
	// A refused request sent nothing upstream, whatever it resolved.
	if len(e.Credentials) > 0 && e.Decision != activity.Refused {
		m.injections.WithLabelValues(e.Service).Inc()
	}
	if e.Decision == activity.Forwarded {
		// A relayed tunnel's duration is its whole lifetime: not a
		// request's, so it stays out of the histogram.
		if e.Method != http.MethodConnect {
			m.upstream.WithLabelValues(e.Service).Observe(e.Duration.Seconds())
		}
		return
	}
	m.refusals.WithLabelValues(codeLabel(e.Code)).Inc()
}

// statusLabels are the status values as strings, made once so Observe
// allocates nothing for them.
var statusLabels = func() (s [600]string) {
	for i := range s {
		s[i] = strconv.Itoa(i)
	}
	return s
}()

// statusLabel is status as a label; anything outside 0..599 is "0".
func statusLabel(status int) string {
	if status < 0 || status >= len(statusLabels) {
		return statusLabels[0]
	}
	return statusLabels[status]
}

// knownCodes is activity.Codes as a set.
var knownCodes = func() map[string]bool {
	m := make(map[string]bool, len(activity.Codes))
	for _, c := range activity.Codes {
		m[c] = true
	}
	return m
}()

// otherCode labels a code outside the closed set (a bug elsewhere; it
// must not grow the label set).
const otherCode = "other"

func codeLabel(code string) string {
	if knownCodes[code] {
		return code
	}
	return otherCode
}

// durationSeconds is d in seconds for a gauge; never negative.
func durationSeconds(d time.Duration) float64 {
	return max(d, 0).Seconds()
}
