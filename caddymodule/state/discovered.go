package state

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/agentvault/caddy-agent-vault/internal/recent"
)

// Bounds of the discovered hosts: at most MaxDiscoveredHosts rows (the
// least recently seen go first), and at most MaxDiscoveredNames of the
// most recent schemes, agents and sessions each.
const (
	MaxDiscoveredHosts = 10_000
	MaxDiscoveredNames = 8
)

// DiscoveredHost is a host agents tried that no service covered: since
// when, how often, with which auth schemes (names only) and from which
// agents and sessions (the most recent few, newest last).
type DiscoveredHost struct {
	Host      string
	Port      int
	FirstSeen time.Time
	LastSeen  time.Time
	Count     int64
	Schemes   []string
	Agents    []string
	Sessions  []string
}

func (h DiscoveredHost) key() string { return net.JoinHostPort(h.Host, strconv.Itoa(h.Port)) }

// MergeDiscovered adds what a broker saw since its last merge to the
// stored rows, in one transaction: counts add up, first and last seen
// widen, the name lists merge (bounded); then the least recently seen
// rows beyond MaxDiscoveredHosts are deleted. Brokers merging the same
// host at once are serialised by the row lock.
func (db *DB) MergeDiscovered(ctx context.Context, hs []DiscoveredHost) error {
	if len(hs) == 0 {
		return nil
	}
	const op = "merge discovered hosts"
	for _, h := range hs {
		if h.Host == "" || h.Port <= 0 || h.Port > 65535 || h.Count <= 0 {
			return db.wrap(op, errors.New("a discovered host needs a host, a port and a count"))
		}
		if _, err := storedNanos("first_seen", h.FirstSeen); err != nil {
			return db.wrap(op, err)
		}
		if _, err := storedNanos("last_seen", h.LastSeen); err != nil {
			return db.wrap(op, err)
		}
	}
	// One order for every broker: two merging the same hosts at once
	// wait for each other instead of deadlocking.
	hs = slices.SortedFunc(slices.Values(hs), func(a, b DiscoveredHost) int { return strings.Compare(a.key(), b.key()) })
	return db.write(ctx, op, func(t *txn) error {
		for _, h := range hs {
			if err := db.mergeDiscovered(ctx, t, h); err != nil {
				return err
			}
		}
		var n int
		if err := t.queryRow(ctx, "SELECT COUNT(*) FROM discovered_hosts").Scan(&n); err != nil {
			return err
		}
		if n <= MaxDiscoveredHosts {
			return nil
		}
		_, err := t.exec(ctx, `DELETE FROM discovered_hosts WHERE key IN
(SELECT key FROM discovered_hosts ORDER BY last_seen ASC, key ASC LIMIT `+strconv.Itoa(n-MaxDiscoveredHosts)+`)`)
		return err
	})
}

func (db *DB) mergeDiscovered(ctx context.Context, t *txn, h DiscoveredHost) error {
	first, last := h.FirstSeen.UnixNano(), h.LastSeen.UnixNano()
	if _, err := t.exec(ctx, `INSERT INTO discovered_hosts (key, host, port, first_seen, last_seen, count, schemes, agents, sessions)
VALUES ($1, $2, $3, $4, $5, 0, '[]', '[]', '[]') ON CONFLICT DO NOTHING`, h.key(), h.Host, h.Port, first, last); err != nil {
		return err
	}
	var (
		old                      DiscoveredHost
		oldFirst, oldLast        int64
		schemes, agents, session string
	)
	err := t.queryRow(ctx, "SELECT first_seen, last_seen, count, schemes, agents, sessions FROM discovered_hosts WHERE key = $1"+db.dialect.forUpdate,
		h.key()).Scan(&oldFirst, &oldLast, &old.Count, &schemes, &agents, &session)
	if err != nil {
		return err
	}
	for _, l := range []struct {
		doc string
		to  *[]string
	}{{schemes, &old.Schemes}, {agents, &old.Agents}, {session, &old.Sessions}} {
		if json.Unmarshal([]byte(l.doc), l.to) != nil {
			*l.to = nil // a list that does not decode starts again
		}
	}
	merged := func(older, newer []string) string {
		b, _ := json.Marshal(recent.Merge(older, newer, MaxDiscoveredNames))
		if string(b) == "null" {
			return "[]"
		}
		return string(b)
	}
	_, err = t.exec(ctx, `UPDATE discovered_hosts SET first_seen = $2, last_seen = $3, count = $4, schemes = $5, agents = $6, sessions = $7 WHERE key = $1`,
		h.key(), min(first, oldFirst), max(last, oldLast), old.Count+h.Count,
		merged(old.Schemes, h.Schemes), merged(old.Agents, h.Agents), merged(old.Sessions, h.Sessions))
	return err
}

// DiscoveredFilter pages the discovered hosts, most recently seen
// first: Before, when set, keeps only hosts seen before the cursor
// (At: last seen, ID: host:port). Limit is clamped like every list's.
// Rows move to the front as they are seen again, so a walk through the
// pages while agents keep trying may see a host twice or miss one.
type DiscoveredFilter struct {
	Before *Cursor
	Limit  int
}

// ListDiscovered returns the discovered hosts f selects.
func (db *DB) ListDiscovered(ctx context.Context, f DiscoveredFilter) ([]DiscoveredHost, error) {
	const op = "list discovered hosts"
	var w where
	if f.Before != nil {
		at := w.arg(boundNanos(f.Before.At))
		w.conds = append(w.conds, "(last_seen < "+at+" OR (last_seen = "+at+" AND key < "+w.arg(f.Before.ID)+"))")
	}
	rows, err := db.query(ctx, "SELECT host, port, first_seen, last_seen, count, schemes, agents, sessions FROM discovered_hosts"+w.sql()+
		" ORDER BY last_seen DESC, key DESC LIMIT "+strconv.Itoa(pageLimit(f.Limit)), w.args...)
	if err != nil {
		return nil, db.wrap(op, err)
	}
	defer rows.Close()
	var out []DiscoveredHost
	for rows.Next() {
		var (
			h                        DiscoveredHost
			first, last              int64
			schemes, agents, session string
		)
		if err := rows.Scan(&h.Host, &h.Port, &first, &last, &h.Count, &schemes, &agents, &session); err != nil {
			return nil, db.wrap(op, err)
		}
		h.FirstSeen, h.LastSeen = fromNanos(first), fromNanos(last)
		json.Unmarshal([]byte(schemes), &h.Schemes)
		json.Unmarshal([]byte(agents), &h.Agents)
		json.Unmarshal([]byte(session), &h.Sessions)
		out = append(out, h)
	}
	if err := rows.Err(); err != nil {
		return nil, db.wrap(op, err)
	}
	return out, nil
}

// Key is the host's position in ListDiscovered's order, for a cursor.
func (h DiscoveredHost) Key() string { return h.key() }
