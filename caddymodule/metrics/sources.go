package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/agentvault/caddy-agent-vault/storebackends"
)

// Sources are what the scrape-time gauges read. Every func is called on
// each scrape and must be cheap and safe for concurrent use; a nil one
// leaves its metric out.
type Sources struct {
	// Stores describes the credential stores (GET /api/v1/stores).
	Stores func() []StoreState
	// SessionsActive counts the sessions that may be used now.
	SessionsActive func() int
	// TunnelsOpen counts the intercepted tunnels open now.
	TunnelsOpen func() int
	// Activity is the activity recorder's counts.
	Activity func() ActivityCounts
	// AuditDropped counts audit entries that could not be recorded.
	AuditDropped func() uint64
	// Now is the clock of the sync ages; nil is time.Now.
	Now func() time.Time
}

// StoreState is one credential store's health.
type StoreState struct {
	Store string
	// Status is one of storebackends' statuses.
	Status string
	// LastSync is the start of the last successful sync of a synced
	// store; zero for a store that is not synced or never synced (no
	// sync age is reported then).
	LastSync time.Time
}

// ActivityCounts are the activity recorder's totals since start.
type ActivityCounts struct {
	Written, Dropped uint64
}

// storeStatuses are the values of agent_vault_store_status's status
// label: every store reports each, 1 for its current one.
var storeStatuses = []string{storebackends.StatusOK, storebackends.StatusDegraded, storebackends.StatusStale, storebackends.StatusNeverSynced}

var (
	descSyncAge = prometheus.NewDesc(namespace+"_store_sync_age_seconds",
		"Time since the last successful sync of a synced credential store.", []string{"store"}, nil)
	descStoreStatus = prometheus.NewDesc(namespace+"_store_status",
		"A credential store's status: 1 for the current one (ok, degraded, stale, never_synced).", []string{"store", "status"}, nil)
	descSessions = prometheus.NewDesc(namespace+"_sessions_active",
		"Sessions that may be used now.", nil, nil)
	descTunnels = prometheus.NewDesc(namespace+"_tunnels_open",
		"Intercepted CONNECT tunnels open now.", nil, nil)
	descActivityWritten = prometheus.NewDesc(namespace+"_activity_written_total",
		"Activity entries written to the state database.", nil, nil)
	descActivityDropped = prometheus.NewDesc(namespace+"_activity_dropped_total",
		"Activity entries lost (a full buffer, or a batch the database kept refusing).", nil, nil)
	descAuditDropped = prometheus.NewDesc(namespace+"_audit_dropped_total",
		"Audit entries that could not be recorded.", nil, nil)
)

// scrapeCollector reads Sources at scrape time.
type scrapeCollector struct{ m *Metrics }

var _ prometheus.Collector = scrapeCollector{}

func (scrapeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descSyncAge, descStoreStatus, descSessions, descTunnels,
		descActivityWritten, descActivityDropped, descAuditDropped} {
		ch <- d
	}
}

func (c scrapeCollector) Collect(ch chan<- prometheus.Metric) {
	src := c.m.src.Load()
	if src.Stores != nil {
		now := time.Now
		if src.Now != nil {
			now = src.Now
		}
		t := now()
		for _, st := range src.Stores() {
			if !st.LastSync.IsZero() {
				ch <- prometheus.MustNewConstMetric(descSyncAge, prometheus.GaugeValue, durationSeconds(t.Sub(st.LastSync)), st.Store)
			}
			for _, s := range storeStatuses {
				v := 0.0
				if s == st.Status {
					v = 1
				}
				ch <- prometheus.MustNewConstMetric(descStoreStatus, prometheus.GaugeValue, v, st.Store, s)
			}
		}
	}
	gauge := func(d *prometheus.Desc, f func() int) {
		if f != nil {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(f()))
		}
	}
	gauge(descSessions, src.SessionsActive)
	gauge(descTunnels, src.TunnelsOpen)
	if src.Activity != nil {
		a := src.Activity()
		ch <- prometheus.MustNewConstMetric(descActivityWritten, prometheus.CounterValue, float64(a.Written))
		ch <- prometheus.MustNewConstMetric(descActivityDropped, prometheus.CounterValue, float64(a.Dropped))
	}
	if src.AuditDropped != nil {
		ch <- prometheus.MustNewConstMetric(descAuditDropped, prometheus.CounterValue, float64(src.AuditDropped()))
	}
}
