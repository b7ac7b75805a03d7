package caddymodule

// The activity log's wiring: the adapter of the state database to
// activity.Store, the Recorder and Retention kept in sharedState (so
// they outlive config reloads), the purge the sweeper starts, and the
// observer the proxy is given.

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/agentvault/caddy-agent-vault/caddymodule/activity"
	"github.com/agentvault/caddy-agent-vault/caddymodule/state"
	"github.com/agentvault/caddy-agent-vault/internal/periodic"
)

// Defaults and bounds of the App's activity fields.
const (
	defaultActivityRetention = 7 * 24 * time.Hour
	minActivityRetention     = time.Hour
	defaultActivityMaxRows   = 1_000_000
	minActivityMaxRows       = 1000
)

// activityPurgeTimeout bounds one purge: deleting a backlog of a large
// table can take longer than the sweeper's other calls may, so the
// purge runs on its own goroutine.
const activityPurgeTimeout = 2 * time.Minute

// proxyObserver is what the proxy tells of every request it served or
// refused: one entry, which Observe must not keep (it copies what it
// needs) and must handle without blocking or I/O.
type proxyObserver interface {
	Observe(e *activity.Entry)
}

// observers is a tee: the activity Recorder and the metrics.
type observers []proxyObserver

func (o observers) Observe(e *activity.Entry) {
	for _, x := range o {
		x.Observe(e)
	}
}

// proxyObservers is the tee the proxy is given: the activity Recorder
// (unless the activity log is disabled), and the metrics and the
// discovered hosts, which always observe.
func proxyObservers(disableActivity bool, rec, metrics, discovered proxyObserver) observers {
	if disableActivity {
		return observers{metrics, discovered}
	}
	return observers{rec, metrics, discovered}
}

// activityDB is activity.Store over the state database.
type activityDB struct{ db *state.DB }

// activityRows are the adapter's batches of rows, reused: a batch is
// hundreds of rows every fraction of a second under load, garbage the
// proxy's requests would otherwise pay for in collections.
var activityRows = sync.Pool{New: func() any { return new([]state.ActivityRow) }}

func (s activityDB) InsertActivity(ctx context.Context, es []activity.Entry) error {
	buf := activityRows.Get().(*[]state.ActivityRow)
	defer func() {
		clear(*buf) // the rows' strings are not kept alive by the pool
		activityRows.Put(buf)
	}()
	*buf = slices.Grow((*buf)[:0], len(es))[:len(es)]
	rows := *buf
	for i, e := range es {
		rows[i] = state.ActivityRow{ID: e.ID, At: e.At, Instance: e.Instance, Session: e.Session, Agent: e.Agent,
			Service: e.Service, Method: e.Method, Host: e.Host, Port: e.Port, Path: e.Path, Status: e.Status,
			Decision: string(e.Decision), Code: e.Code, Reason: e.Reason, BytesIn: e.BytesIn, BytesOut: e.BytesOut,
			Duration: e.Duration, Credentials: e.Credentials, Client: e.Client}
	}
	return fromState(s.db.InsertActivity(ctx, rows))
}

func (s activityDB) ListActivity(ctx context.Context, f activity.Filter) ([]activity.Entry, error) {
	sf := state.ActivityFilter{Session: f.Session, Agent: f.Agent, Service: f.Service, Host: f.Host,
		Decision: string(f.Decision), Code: f.Code, Status: f.Status, Since: f.Since, Limit: f.Limit}
	if f.Before != nil {
		sf.Before = f.Before
	}
	if f.After != nil {
		sf.After = f.After
	}
	rows, err := s.db.ListActivity(ctx, sf)
	if err != nil {
		return nil, fromState(err)
	}
	out := make([]activity.Entry, len(rows))
	for i, r := range rows {
		out[i] = activity.Entry{ID: r.ID, At: r.At, Instance: r.Instance, Session: r.Session, Agent: r.Agent,
			Service: r.Service, Method: r.Method, Host: r.Host, Port: r.Port, Path: r.Path, Status: r.Status,
			Decision: activity.Decision(r.Decision), Code: r.Code, Reason: r.Reason, BytesIn: r.BytesIn,
			BytesOut: r.BytesOut, Duration: r.Duration, Credentials: r.Credentials, Client: r.Client}
	}
	return out, nil
}

func (s activityDB) DeleteActivityBefore(ctx context.Context, t time.Time) (int, error) {
	n, err := s.db.DeleteActivityBefore(ctx, t)
	return n, fromState(err)
}

func (s activityDB) TrimActivity(ctx context.Context, keep int) (int, error) {
	n, err := s.db.TrimActivity(ctx, keep)
	return n, fromState(err)
}

// activityLog is the shared state's part of the activity log. It logs
// through the shared state's logger, which outlives config reloads.
type activityLog struct {
	rec       *activity.Recorder
	retention *activity.Retention
	log       *zap.Logger
	purging   atomic.Bool
	// lossGate paces logLosses; logged is what it logged last (guarded
	// by lossGate).
	lossGate periodic.Gate
	logged   activity.Stats
	// exchanges are the proxies' requests and relayed tunnels whose
	// entries are still to come: close waits for them (bounded).
	exchanges inFlight
}

func newActivityLog(db *state.DB, instance string, log *zap.Logger) *activityLog {
	store := activityDB{db}
	log = log.Named("activity")
	return &activityLog{
		rec:       activity.NewRecorder(store, activity.Options{Instance: instance, Logger: log}),
		retention: &activity.Retention{Store: store, Logger: log},
		log:       log,
		lossGate:  periodic.Gate{Every: auditLogEvery},
	}
}

// logLosses logs the Recorder's counts when entries were dropped or
// failed since the last time (at most once per auditLogEvery): a log
// that loses entries must not go unnoticed.
func (l *activityLog) logLosses() {
	l.lossGate.Run(context.Background(), func(context.Context, time.Time) error {
		st := l.rec.Stats()
		if st.Dropped == l.logged.Dropped && st.Failed == l.logged.Failed {
			return nil
		}
		l.logged = st
		l.log.Warn("activity entries lost", zap.Uint64("activity_dropped", st.Dropped), zap.Uint64("activity_failed", st.Failed),
			zap.Uint64("activity_written", st.Written), zap.Int("activity_queued", st.Queued))
		return nil
	})
}

// purge starts a purge by age and count unless one is running (the
// sweeper calls it every second; Retention runs it once per its Every).
func (l *activityLog) purge(keep time.Duration, maxRows int) {
	if !l.purging.CompareAndSwap(false, true) {
		return
	}
	go func() {
		defer l.purging.Store(false)
		ctx, cancel := context.WithTimeout(context.Background(), activityPurgeTimeout)
		defer cancel()
		if err := l.retention.Purge(ctx, keep, maxRows); err != nil {
			l.log.Warn("purging the activity log failed; retrying later", zap.Error(err))
		}
	}()
}

// exchangesDrain bounds how long close waits for the exchanges in
// flight. The sessions have ended by then, so their connections are
// closed and each exchange is only writing its entry: milliseconds; the
// bound is for one stuck elsewhere, which must not hold shutdown.
const exchangesDrain = 2 * time.Second

// close lets the exchanges in flight (cut short as the sessions ended
// and closed their connections) hand over their entries, for up to
// exchangesDrain, then flushes what the Recorder holds (bounded by
// ctx). The entries of exchanges that take longer are dropped and
// counted, as after any close.
func (l *activityLog) close(ctx context.Context) error {
	dctx, cancel := context.WithTimeout(ctx, exchangesDrain)
	left := l.exchanges.wait(dctx)
	cancel()
	if left > 0 {
		l.log.Warn("shutdown: exchanges still running; their activity entries will be lost", zap.Int("exchanges", left))
	}
	return l.rec.Close(ctx)
}

// ActivityStats returns the activity Recorder's counts (entries
// written, dropped on a full buffer, failed after retries, queued) of
// the shared state this config uses: for the metrics
// (agent_vault_activity_dropped_total, ..._written_total) and the UI.
func (a *App) ActivityStats() activity.Stats {
	if a.state == nil || a.state.activity == nil {
		return activity.Stats{}
	}
	return a.state.activity.rec.Stats()
}
