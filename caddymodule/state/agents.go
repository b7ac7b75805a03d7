package state

import (
	"context"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"
)

// allServices, as an agent's only service, allows it every service,
// present and future: the stored form of apiwire.AllServices (a test
// keeps the two equal; state depends on nothing of the API).
const allServices = "*"

// AgentRow is one agent as stored. Its token is never stored, only the
// token's SHA-256.
type AgentRow struct {
	Name      string
	TokenHash [32]byte
	// Services the agent may open sessions for, or ["*"] (allServices).
	Services      []string
	MaxSessionTTL time.Duration
	CreatedAt     time.Time
	UpdatedAt     time.Time
}

const agentColumns = "name, token_hash, services, max_session_ttl, created_at, updated_at"

// checkAgentServices refuses a services list that cannot mean what a
// reader would take it to: empty, with an empty or repeated name, or
// allServices next to names (is that every service or those?).
func checkAgentServices(services []string) error {
	if len(services) == 0 {
		return errors.New("services must not be empty")
	}
	for i, s := range services {
		switch {
		case s == "":
			return errors.New("services: an empty service name")
		case s == allServices && len(services) > 1:
			return fmt.Errorf("services: %q must be the only entry", allServices)
		case slices.Contains(services[:i], s):
			return fmt.Errorf("services: %q is listed twice", s)
		}
	}
	return nil
}

// InsertAgent stores a new agent. An existing name or token hash is
// ErrConflict (an agent is never overwritten). Services must be valid
// (see checkAgentServices) and MaxSessionTTL positive.
func (db *DB) InsertAgent(ctx context.Context, a AgentRow) error {
	op := "insert agent " + a.Name
	if err := checkAgentServices(a.Services); err != nil {
		return db.wrap(op, err)
	}
	if a.MaxSessionTTL <= 0 {
		return db.wrap(op, fmt.Errorf("max_session_ttl must be positive, got %v", a.MaxSessionTTL))
	}
	svc, err := json.Marshal(a.Services)
	if err != nil {
		return db.wrap(op, err)
	}
	created, err := storedNanos("created_at", a.CreatedAt)
	if err != nil {
		return db.wrap(op, err)
	}
	updated, err := storedNanos("updated_at", a.UpdatedAt)
	if err != nil {
		return db.wrap(op, err)
	}
	return db.write(ctx, op, func(t *txn) error {
		r, err := t.exec(ctx, `INSERT INTO agents (`+agentColumns+`) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING`,
			a.Name, hex.EncodeToString(a.TokenHash[:]), string(svc), int64(a.MaxSessionTTL), created, updated)
		if err != nil {
			return err
		}
		if n, err := affected(r); err != nil {
			return err
		} else if n == 0 {
			return ErrConflict
		}
		return nil
	})
}

// Agent returns one agent; ok is false when there is none.
func (db *DB) Agent(ctx context.Context, name string) (AgentRow, bool, error) {
	a, err := scanAgent(db.queryRow(ctx, "SELECT "+agentColumns+" FROM agents WHERE name = $1", name))
	if errors.Is(err, sql.ErrNoRows) {
		return AgentRow{}, false, nil
	}
	if err != nil {
		return AgentRow{}, false, db.wrap("get agent "+name, err)
	}
	return a, true, nil
}

// AgentByTokenHash returns the agent whose token hashes to hash; ok is
// false when there is none (an unknown or rotated token).
func (db *DB) AgentByTokenHash(ctx context.Context, hash [32]byte) (AgentRow, bool, error) {
	a, err := scanAgent(db.queryRow(ctx, "SELECT "+agentColumns+" FROM agents WHERE token_hash = $1", hex.EncodeToString(hash[:])))
	if errors.Is(err, sql.ErrNoRows) {
		return AgentRow{}, false, nil
	}
	if err != nil {
		// Not the hash: an error message is no place for it.
		return AgentRow{}, false, db.wrap("get agent by token", err)
	}
	return a, true, nil
}

// ListAgents returns every agent, by name.
func (db *DB) ListAgents(ctx context.Context) ([]AgentRow, error) {
	rows, err := db.query(ctx, "SELECT "+agentColumns+" FROM agents ORDER BY name")
	if err != nil {
		return nil, db.wrap("list agents", err)
	}
	defer rows.Close()
	var out []AgentRow
	for rows.Next() {
		a, err := scanAgent(rows)
		if err != nil {
			return nil, db.wrap("list agents", err)
		}
		out = append(out, a)
	}
	if err := rows.Err(); err != nil {
		return nil, db.wrap("list agents", err)
	}
	return out, nil
}

// UpdateAgent replaces an agent's services and maximum session TTL and
// sets updated_at, and returns the agent as the update committed it;
// ok is false when there is no such agent. A nil services keeps the
// stored ones and a zero maxTTL the stored one, so that a PATCH of one
// field does not write back a stale copy of the other (and undo a
// narrowing, or a GrantAgentService, that committed in between); the
// row returned is what the caller must judge the agent's sessions by.
func (db *DB) UpdateAgent(ctx context.Context, name string, services []string, maxTTL time.Duration, at time.Time) (AgentRow, bool, error) {
	op := "update agent " + name
	var svc sql.NullString
	if services != nil {
		if err := checkAgentServices(services); err != nil {
			return AgentRow{}, false, db.wrap(op, err)
		}
		b, err := json.Marshal(services)
		if err != nil {
			return AgentRow{}, false, db.wrap(op, err)
		}
		svc = sql.NullString{String: string(b), Valid: true}
	}
	if maxTTL < 0 {
		return AgentRow{}, false, db.wrap(op, fmt.Errorf("max_session_ttl must be positive, got %v", maxTTL))
	}
	ttl := sql.NullInt64{Int64: int64(maxTTL), Valid: maxTTL > 0}
	updated, err := storedNanos("updated_at", at)
	if err != nil {
		return AgentRow{}, false, db.wrap(op, err)
	}
	var out AgentRow
	var found bool
	err = db.write(ctx, op, func(t *txn) error {
		found = false
		r, err := t.exec(ctx, `UPDATE agents SET services = COALESCE($2, services),
max_session_ttl = COALESCE($3, max_session_ttl), updated_at = $4 WHERE name = $1`, name, svc, ttl, updated)
		if err != nil {
			return err
		}
		if n, err := affected(r); err != nil || n == 0 {
			return err
		}
		out, err = db.agentIn(ctx, t, name)
		found = err == nil
		return err
	})
	if err != nil || !found {
		return AgentRow{}, false, err
	}
	return out, true, nil
}

// agentIn reads an agent inside the transaction t.
func (db *DB) agentIn(ctx context.Context, t *txn, name string) (AgentRow, error) {
	return scanAgent(t.queryRow(ctx, "SELECT "+agentColumns+" FROM agents WHERE name = $1", name))
}

// RotateAgentToken replaces an agent's token hash in one UPDATE, so the
// old token stops working on every broker at once (they read agents
// from the database on every request), and returns the agent as
// rotated; ok is false when there is no such agent. A hash another
// agent has is ErrConflict. With revokeSessions, every session of the
// agent not revoked yet is revoked (at at) in the same transaction, as
// DeleteAgent does: their ids are returned and announced. Without it
// the agent's sessions live on until they expire or their lease lapses.
func (db *DB) RotateAgentToken(ctx context.Context, name string, hash [32]byte, at time.Time, revokeSessions bool) (AgentRow, bool, []string, error) {
	op := "rotate agent token " + name
	updated, err := storedNanos("updated_at", at)
	if err != nil {
		return AgentRow{}, false, nil, db.wrap(op, err)
	}
	var out AgentRow
	var found bool
	var revoked []string
	err = db.write(ctx, op, func(t *txn) error {
		found, revoked = false, nil
		r, err := t.exec(ctx, "UPDATE agents SET token_hash = $2, updated_at = $3 WHERE name = $1", name, hex.EncodeToString(hash[:]), updated)
		if isUniqueViolation(err) {
			return ErrConflict
		}
		if err != nil {
			return err
		}
		if n, err := affected(r); err != nil || n == 0 {
			return err
		}
		if out, err = db.agentIn(ctx, t, name); err != nil {
			return err
		}
		found = true
		if !revokeSessions {
			return nil
		}
		revoked, err = revokeAgentSessions(ctx, t, name, updated)
		return err
	})
	if err != nil || !found {
		return AgentRow{}, false, nil, err
	}
	return out, true, revoked, nil
}

// revokeAgentSessions revokes (at revokedAt) every session of agent
// not revoked yet, inside t, and returns their ids, sorted, announcing
// each. RETURNING names exactly the rows the statement revoked, a
// session inserted meanwhile by another broker included.
func revokeAgentSessions(ctx context.Context, t *txn, agent string, revokedAt int64) ([]string, error) {
	rows, err := t.query(ctx, "UPDATE sessions SET revoked_at = $2 WHERE agent = $1 AND revoked_at IS NULL RETURNING id", agent, revokedAt)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var revoked []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		revoked = append(revoked, id)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if err := rows.Close(); err != nil {
		return nil, err
	}
	slices.Sort(revoked)
	for _, id := range revoked {
		t.publish(Change{Topic: TopicSessions, Key: id})
	}
	return revoked, nil
}

// DeleteAgent deletes an agent and, in the same transaction, revokes
// (at at) every session of that agent not revoked yet and deletes the
// agent's pending access requests, so that nothing it asked for can be
// approved for a later agent of the same name. It returns whether the
// agent existed and the ids of the sessions it revoked, and announces
// Change{TopicSessions, id} for each. An unknown agent changes nothing.
func (db *DB) DeleteAgent(ctx context.Context, name string, at time.Time) (found bool, revoked []string, err error) {
	op := "delete agent " + name
	revokedAt, err := storedNanos("revoked_at", at)
	if err != nil {
		return false, nil, db.wrap(op, err)
	}
	err = db.write(ctx, op, func(t *txn) error {
		revoked = nil
		r, err := t.exec(ctx, "DELETE FROM agents WHERE name = $1", name)
		if err != nil {
			return err
		}
		n, err := affected(r)
		if found = n > 0; err != nil || !found {
			return err
		}
		if revoked, err = revokeAgentSessions(ctx, t, name, revokedAt); err != nil {
			return err
		}
		_, err = t.exec(ctx, "DELETE FROM access_requests WHERE agent = $1 AND status = $2", name, requestPending)
		return err
	})
	if err != nil {
		return false, nil, err
	}
	return found, revoked, nil
}

// GrantAgentService adds service to an agent's services, unless they
// have it or allServices already, reporting whether the agent exists.
// The read and the write are one transaction holding the agent's row
// (FOR UPDATE on PostgreSQL; SQLite's transactions are exclusive), so
// concurrent grants from several brokers all land. updated_at moves only
// when the services change.
func (db *DB) GrantAgentService(ctx context.Context, name, service string, at time.Time) (bool, error) {
	op := "grant agent " + name + " service " + service
	if service == "" || service == allServices {
		return false, db.wrap(op, fmt.Errorf("cannot grant %q: grant a service by name", service))
	}
	updated, err := storedNanos("updated_at", at)
	if err != nil {
		return false, db.wrap(op, err)
	}
	var found bool
	err = db.write(ctx, op, func(t *txn) error {
		var doc string
		err := t.queryRow(ctx, "SELECT services FROM agents WHERE name = $1"+db.dialect.forUpdate, name).Scan(&doc)
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		}
		if err != nil {
			return err
		}
		found = true
		var services []string
		if err := json.Unmarshal([]byte(doc), &services); err != nil {
			return fmt.Errorf("agent %s: services: %w", name, err)
		}
		if slices.Contains(services, service) || slices.Contains(services, allServices) {
			return nil
		}
		b, err := json.Marshal(append(services, service))
		if err != nil {
			return err
		}
		_, err = t.exec(ctx, "UPDATE agents SET services = $2, updated_at = $3 WHERE name = $1", name, string(b), updated)
		return err
	})
	return found, err
}

func scanAgent(r rowScanner) (AgentRow, error) {
	var a AgentRow
	var hash, services string
	var ttl, created, updated int64
	if err := r.Scan(&a.Name, &hash, &services, &ttl, &created, &updated); err != nil {
		return AgentRow{}, err
	}
	b, err := hex.DecodeString(hash)
	if err != nil || len(b) != len(a.TokenHash) {
		return AgentRow{}, fmt.Errorf("agent %s: malformed token_hash", a.Name)
	}
	copy(a.TokenHash[:], b)
	if err := json.Unmarshal([]byte(services), &a.Services); err != nil {
		return AgentRow{}, fmt.Errorf("agent %s: services: %w", a.Name, err)
	}
	if err := checkAgentServices(a.Services); err != nil {
		// Fail closed: a list that does not say what it allows allows
		// nothing rather than something.
		return AgentRow{}, fmt.Errorf("agent %s: %w", a.Name, err)
	}
	if ttl <= 0 {
		return AgentRow{}, fmt.Errorf("agent %s: max_session_ttl %d is not positive", a.Name, ttl)
	}
	a.MaxSessionTTL = time.Duration(ttl)
	a.CreatedAt, a.UpdatedAt = fromNanos(created), fromNanos(updated)
	return a, nil
}
