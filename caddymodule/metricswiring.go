package caddymodule

// The metrics' wiring: the metrics token's check, and the sources the
// scrape-time gauges read (this config's stores and proxies; the
// metrics themselves live in sharedState and outlive the config).

import (
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/agentvault/caddy-agent-vault/caddymodule/activity"
	"github.com/agentvault/caddy-agent-vault/caddymodule/credentials"
	"github.com/agentvault/caddy-agent-vault/caddymodule/identity"
	"github.com/agentvault/caddy-agent-vault/caddymodule/metrics"
	"github.com/agentvault/caddy-agent-vault/caddymodule/sessions"
)

// checkMetricsToken expands placeholders in metrics_token and checks
// it by the admin token's rule; empty means none.
func (a *App) checkMetricsToken(repl *caddy.Replacer) error {
	var err error
	if a.MetricsToken, err = repl.ReplaceOrErr(a.MetricsToken, false, true); err != nil {
		return fmt.Errorf("metrics_token: %v", err)
	}
	if a.MetricsToken == "" {
		return nil
	}
	if err := identity.ValidMetricsToken(a.MetricsToken); err != nil {
		return fmt.Errorf("metrics_token: %v", err)
	}
	return nil
}

// tunnelTables are the tunnel tables of a config's proxies (a config
// may have several proxy handlers); they register while provisioned.
type tunnelTables struct {
	mu     sync.Mutex
	tables []*tunnelTable
}

func (a *App) addTunnels(t *tunnelTable) {
	if a.tunnels == nil { // provisioning is not concurrent
		a.tunnels = new(tunnelTables)
	}
	a.tunnels.mu.Lock()
	a.tunnels.tables = append(a.tunnels.tables, t)
	a.tunnels.mu.Unlock()
}

// open counts the intercepted tunnels open now (none without a proxy).
func (ts *tunnelTables) open() int {
	if ts == nil {
		return 0
	}
	ts.mu.Lock()
	defer ts.mu.Unlock()
	n := 0
	for _, t := range ts.tables {
		n += t.count()
	}
	return n
}

// measured says which config the metrics read: the last one started
// and not stopped. A reload starts the new config, then stops the old
// one; a reload that fails stops the new one, and the old one is read
// again.
type measured struct {
	m    *metrics.Metrics
	mu   sync.Mutex
	apps []*App // started, oldest first
}

func (ms *measured) start(a *App) {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	ms.apps = append(ms.apps, a)
	ms.m.SetSources(a.metricsSources())
}

func (ms *measured) stop(a *App) {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	ms.apps = slices.DeleteFunc(ms.apps, func(x *App) bool { return x == a })
	if n := len(ms.apps); n > 0 {
		ms.m.SetSources(ms.apps[n-1].metricsSources())
	} else {
		ms.m.SetSources(metrics.Sources{})
	}
}

// metricsSources are what this config's metrics read at scrape time.
func (a *App) metricsSources() metrics.Sources {
	sh := a.state
	return metrics.Sources{
		Stores:         func() []metrics.StoreState { return storeStates(a.creds, time.Now()) },
		SessionsActive: func() int { return activeSessions(sh.sessions, time.Now()) },
		TunnelsOpen:    a.tunnels.open,
		AuditDropped:   func() uint64 { return sh.audit.Stats().Dropped },
		Activity:       func() metrics.ActivityCounts { return activityCounts(sh.activity.rec.Stats()) },
	}
}

// activityCounts are the Recorder's counts as the metrics report them:
// an entry is lost whether the buffer was full or its batch failed.
func activityCounts(st activity.Stats) metrics.ActivityCounts {
	return metrics.ActivityCounts{Written: st.Written, Dropped: st.Dropped + st.Failed}
}

// storeStates is what GET /api/v1/stores says of each store, for the
// metrics.
func storeStates(creds *credentials.Set, now time.Time) []metrics.StoreState {
	list, _ := creds.Status(now)
	out := make([]metrics.StoreState, 0, len(list))
	for _, st := range list {
		s := metrics.StoreState{Store: st.Store, Status: st.Status}
		if st.SyncStatus != nil {
			s.LastSync = st.LastSuccess
		}
		out = append(out, s)
	}
	return out
}

// activeSessions counts the sessions that may be used now.
func activeSessions(reg *sessions.Registry, now time.Time) int {
	n := 0
	for _, s := range reg.List() {
		if s.Active(now) {
			n++
		}
	}
	return n
}
