package state

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"time"
)

// The stored access request statuses: the same words as apiwire's
// RequestPending, RequestApproved and RequestDenied (a test keeps them
// equal).
const (
	requestPending  = "pending"
	requestApproved = "approved"
	requestDenied   = "denied"
)

// AccessRequestRow is one access request as stored: an agent asking for
// a Service or a Host (one of them set). DecidedAt is nil while the
// request is pending.
type AccessRequestRow struct {
	ID             string
	Agent          string
	Session        string // the session it was asked through, if any
	Service        string
	Host           string
	Reason         string
	Status         string // pending, approved or denied
	CreatedAt      time.Time
	DecidedAt      *time.Time
	DecidedBy      string
	DecisionReason string
}

// AccessRequestFilter selects access requests: an empty field matches
// every value. Since, if set, keeps the requests created at or after
// it (an agent's own list starts at the agent's created_at: an older
// agent of the same name is someone else). Limit is clamped to
// 1..MaxPageLimit; 0 is DefaultPageLimit.
type AccessRequestFilter struct {
	Agent  string
	Status string
	Since  time.Time
	Limit  int
}

// ErrAgentGone is InsertAccessRequest's error for a request whose agent
// no longer exists, or exists as a new agent of the same name (created
// at another time): the request was asked by someone else.
var ErrAgentGone = errors.New("the agent was deleted")

// ErrTooManyPending is InsertAccessRequest's error for an agent that
// has as many pending requests as allowed already.
var ErrTooManyPending = errors.New("too many pending access requests")

const accessRequestColumns = "id, agent, session, service, host, reason, status, created_at, decided_at, decided_by, decision_reason"

// InsertAccessRequest stores a new pending request; an existing id is
// ErrConflict. Exactly one of Service and Host must be set, and Status
// must be pending (or empty, which stores pending) with no decision. In
// the same transaction, holding the agent's row, it checks that the
// agent still exists as the one the caller authenticated (created at
// agentCreatedAt; else ErrAgentGone: an agent deleted, and perhaps made
// again, while the request was on its way) and has fewer than
// maxPending pending requests (else ErrTooManyPending).
func (db *DB) InsertAccessRequest(ctx context.Context, r AccessRequestRow, agentCreatedAt time.Time, maxPending int) error {
	op := "insert access request " + r.ID
	switch {
	case r.ID == "" || r.Agent == "":
		return db.wrap(op, errors.New("an access request needs an id and an agent"))
	case (r.Service == "") == (r.Host == ""):
		return db.wrap(op, errors.New("an access request names exactly one of a service and a host"))
	case r.Status != "" && r.Status != requestPending:
		return db.wrap(op, fmt.Errorf("a new access request is pending, not %q", r.Status))
	case r.DecidedAt != nil || r.DecidedBy != "" || r.DecisionReason != "":
		return db.wrap(op, errors.New("a new access request has no decision"))
	case maxPending < 1:
		return db.wrap(op, fmt.Errorf("the most pending requests an agent may have is at least 1, not %d", maxPending))
	}
	created, err := storedNanos("created_at", r.CreatedAt)
	if err != nil {
		return db.wrap(op, err)
	}
	agentCreated, err := storedNanos("the agent's created_at", agentCreatedAt)
	if err != nil {
		return db.wrap(op, err)
	}
	return db.write(ctx, op, func(t *txn) error {
		var stored int64
		err := t.queryRow(ctx, "SELECT created_at FROM agents WHERE name = $1"+db.dialect.forUpdate, r.Agent).Scan(&stored)
		if errors.Is(err, sql.ErrNoRows) || (err == nil && stored != agentCreated) {
			return ErrAgentGone
		}
		if err != nil {
			return err
		}
		var pending int
		if err := t.queryRow(ctx, "SELECT COUNT(*) FROM access_requests WHERE agent = $1 AND status = $2", r.Agent, requestPending).Scan(&pending); err != nil {
			return err
		}
		if pending >= maxPending {
			return ErrTooManyPending
		}
		res, err := t.exec(ctx, `INSERT INTO access_requests (id, agent, session, service, host, reason, status, created_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING`,
			r.ID, r.Agent, r.Session, r.Service, r.Host, r.Reason, requestPending, created)
		if err != nil {
			return err
		}
		if n, err := affected(res); err != nil {
			return err
		} else if n == 0 {
			return ErrConflict
		}
		return nil
	})
}

// AccessRequest returns one request; ok is false when there is none.
func (db *DB) AccessRequest(ctx context.Context, id string) (AccessRequestRow, bool, error) {
	r, err := scanAccessRequest(db.queryRow(ctx, "SELECT "+accessRequestColumns+" FROM access_requests WHERE id = $1", id))
	if errors.Is(err, sql.ErrNoRows) {
		return AccessRequestRow{}, false, nil
	}
	if err != nil {
		return AccessRequestRow{}, false, db.wrap("get access request "+id, err)
	}
	return r, true, nil
}

// ListAccessRequests returns the requests f selects, newest first (by
// created_at, then id), at most f's clamped Limit of them.
func (db *DB) ListAccessRequests(ctx context.Context, f AccessRequestFilter) ([]AccessRequestRow, error) {
	var w where
	w.equal("agent", f.Agent)
	w.equal("status", f.Status)
	if !f.Since.IsZero() {
		w.conds = append(w.conds, "created_at >= "+w.arg(boundNanos(f.Since)))
	}
	rows, err := db.query(ctx, "SELECT "+accessRequestColumns+" FROM access_requests"+w.sql()+
		" ORDER BY created_at DESC, id DESC LIMIT "+strconv.Itoa(pageLimit(f.Limit)), w.args...)
	if err != nil {
		return nil, db.wrap("list access requests", err)
	}
	defer rows.Close()
	var out []AccessRequestRow
	for rows.Next() {
		r, err := scanAccessRequest(rows)
		if err != nil {
			return nil, db.wrap("list access requests", err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, db.wrap("list access requests", err)
	}
	return out, nil
}

// PendingAccessRequest returns the agent's oldest pending request for
// exactly that service and host (one of them empty); ok is false when
// there is none. A repeated ask is answered with it.
func (db *DB) PendingAccessRequest(ctx context.Context, agent, service, host string) (AccessRequestRow, bool, error) {
	r, err := scanAccessRequest(db.queryRow(ctx, "SELECT "+accessRequestColumns+` FROM access_requests
WHERE agent = $1 AND service = $2 AND host = $3 AND status = $4 ORDER BY created_at, id LIMIT 1`,
		agent, service, host, requestPending))
	if errors.Is(err, sql.ErrNoRows) {
		return AccessRequestRow{}, false, nil
	}
	if err != nil {
		return AccessRequestRow{}, false, db.wrap("get pending access request", err)
	}
	return r, true, nil
}

// DecideAccessRequest approves or denies a pending request (status is
// approved or denied), recording who decided, why and when, and returns
// the request as decided. ok is false when there is no such request. A
// request decided already is ErrConflict, and keeps its first decision:
// of two operators deciding at once exactly one wins.
func (db *DB) DecideAccessRequest(ctx context.Context, id, status, by, reason string, at time.Time) (AccessRequestRow, bool, error) {
	op := "decide access request " + id
	if status != requestApproved && status != requestDenied {
		return AccessRequestRow{}, false, db.wrap(op, fmt.Errorf("a decision is %s or %s, not %q", requestApproved, requestDenied, status))
	}
	decided, err := storedNanos("decided_at", at)
	if err != nil {
		return AccessRequestRow{}, false, db.wrap(op, err)
	}
	var out AccessRequestRow
	var found bool
	err = db.write(ctx, op, func(t *txn) error {
		res, err := t.exec(ctx, `UPDATE access_requests SET status = $2, decided_at = $3, decided_by = $4, decision_reason = $5
WHERE id = $1 AND status = $6`, id, status, decided, by, reason, requestPending)
		if err != nil {
			return err
		}
		n, err := affected(res)
		if err != nil {
			return err
		}
		out, err = scanAccessRequest(t.queryRow(ctx, "SELECT "+accessRequestColumns+" FROM access_requests WHERE id = $1", id))
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		}
		if err != nil {
			return err
		}
		found = true
		if n == 0 {
			return ErrConflict
		}
		return nil
	})
	if err != nil {
		return AccessRequestRow{}, found, err
	}
	return out, found, nil
}

// DeleteAccessRequestsBefore deletes the requests decided before t,
// and the pending ones created before t (nobody decided them in all
// that time, and an agent must not keep its quota of pending requests
// filled for ever), and returns how many.
func (db *DB) DeleteAccessRequestsBefore(ctx context.Context, t time.Time) (int, error) {
	return db.deleteCount(ctx, "delete old access requests",
		"DELETE FROM access_requests WHERE (status <> $2 AND decided_at < $1) OR (status = $2 AND created_at < $1)", boundNanos(t), requestPending)
}

func scanAccessRequest(r rowScanner) (AccessRequestRow, error) {
	var a AccessRequestRow
	var created int64
	var decided sql.NullInt64
	if err := r.Scan(&a.ID, &a.Agent, &a.Session, &a.Service, &a.Host, &a.Reason, &a.Status, &created, &decided, &a.DecidedBy, &a.DecisionReason); err != nil {
		return AccessRequestRow{}, err
	}
	a.CreatedAt, a.DecidedAt = fromNanos(created), fromNullNanos(decided)
	return a, nil
}
