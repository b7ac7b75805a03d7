// Package discovered keeps the hosts agents tried that no service in
// their session's scope covers: how often, since when, from which
// agents and sessions, and with which auth scheme (a name such as
// "Bearer", never a value). Operators read them to decide which
// services to define.
//
// The proxy tells the Tracker of every refusal (Observe, no I/O, no
// blocking); the Tracker aggregates them in memory and a caller merges
// the aggregate into the Store every so often (Flush), so the proxy
// never waits on the database and a flood of attempts on one host is
// one row update.
package discovered

import (
	"context"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/agentvault/caddy-agent-vault/caddymodule/activity"
	"github.com/agentvault/caddy-agent-vault/internal/recent"
)

// MaxNames bounds each host's lists of schemes, agents and sessions
// (the most recent ones are kept).
const MaxNames = 8

// DefaultMaxPending bounds the hosts aggregated between two flushes:
// attempts on further hosts are dropped and counted (Dropped).
const DefaultMaxPending = 1000

// Host is what is known of one host and port.
type Host struct {
	Host      string
	Port      int
	FirstSeen time.Time
	LastSeen  time.Time
	Count     int64
	Schemes   []string // newest last
	Agents    []string
	Sessions  []string
}

// Store keeps the hosts of every broker: Merge adds an aggregate to
// what is stored (counts add up, times widen, lists merge).
type Store interface {
	MergeDiscovered(ctx context.Context, hs []Host) error
}

// Tracker aggregates refused attempts on uncovered hosts until Flush.
type Tracker struct {
	store      Store
	maxPending int

	mu      sync.Mutex
	pending map[string]*Host // by host:port
	dropped atomic.Uint64
}

// NewTracker returns a Tracker merging into store, aggregating at most
// maxPending hosts between flushes (0: DefaultMaxPending).
func NewTracker(store Store, maxPending int) *Tracker {
	if maxPending <= 0 {
		maxPending = DefaultMaxPending
	}
	return &Tracker{store: store, maxPending: maxPending, pending: make(map[string]*Host)}
}

// Observe takes a proxy activity entry; only refusals of uncovered
// hosts count.
func (t *Tracker) Observe(e *activity.Entry) {
	if e.Code != activity.CodeUncoveredHost || e.Host == "" || e.Port <= 0 {
		return
	}
	key := net.JoinHostPort(e.Host, strconv.Itoa(e.Port))
	t.mu.Lock()
	defer t.mu.Unlock()
	h, ok := t.pending[key]
	if !ok {
		if len(t.pending) >= t.maxPending {
			t.dropped.Add(1)
			return
		}
		h = &Host{Host: e.Host, Port: e.Port, FirstSeen: e.At, LastSeen: e.At}
		t.pending[key] = h
	}
	h.Count++
	if e.At.Before(h.FirstSeen) {
		h.FirstSeen = e.At
	}
	if e.At.After(h.LastSeen) {
		h.LastSeen = e.At
	}
	h.Schemes = recent.Add(h.Schemes, e.AuthScheme, MaxNames)
	h.Agents = recent.Add(h.Agents, e.Agent, MaxNames)
	h.Sessions = recent.Add(h.Sessions, e.Session, MaxNames)
}

// Dropped is how many attempts were not kept because the aggregate
// was full.
func (t *Tracker) Dropped() uint64 { return t.dropped.Load() }

// Flush merges the aggregate into the store. On failure it is kept
// (merged with what arrived meanwhile) for the next Flush.
func (t *Tracker) Flush(ctx context.Context) error {
	t.mu.Lock()
	if len(t.pending) == 0 {
		t.mu.Unlock()
		return nil
	}
	batch := t.pending
	t.pending = make(map[string]*Host)
	t.mu.Unlock()

	hs := make([]Host, 0, len(batch))
	for _, h := range batch {
		hs = append(hs, *h)
	}
	err := t.store.MergeDiscovered(ctx, hs)
	if err != nil {
		t.putBack(batch)
	}
	return err
}

// putBack returns a batch that was not stored to the aggregate: what
// it saw happened before what arrived since.
func (t *Tracker) putBack(batch map[string]*Host) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for key, old := range batch {
		h, ok := t.pending[key]
		if !ok {
			if len(t.pending) >= t.maxPending {
				t.dropped.Add(uint64(old.Count))
				continue
			}
			t.pending[key] = old
			continue
		}
		h.Count += old.Count
		h.FirstSeen = minTime(h.FirstSeen, old.FirstSeen)
		h.LastSeen = maxTime(h.LastSeen, old.LastSeen)
		h.Schemes = recent.Merge(old.Schemes, h.Schemes, MaxNames)
		h.Agents = recent.Merge(old.Agents, h.Agents, MaxNames)
		h.Sessions = recent.Merge(old.Sessions, h.Sessions, MaxNames)
	}
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
