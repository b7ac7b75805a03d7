package state

import (
	"context"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"time"
)

// AdminTokenLogin is the operator name of a login the admin token
// opened (the web UI's admin sign-in): no operator may have it, and
// such a login needs no operators row.
const AdminTokenLogin = "admin-token"

// OperatorRow is one operator as stored. PasswordHash is an argon2id
// PHC string, never the password; Role is the caller's (viewer, admin,
// owner), checked by the caller when it reads it back.
type OperatorRow struct {
	Name         string
	PasswordHash string
	Role         string
	CreatedAt    time.Time
	UpdatedAt    time.Time
}

// How a login's secret is carried (operator_logins.via). A login has
// one secret of each: the bearer token API clients send, and the
// cookie's secret, which browsers send to every port of the host and
// which is therefore worth less (the API decides how much).
const (
	LoginViaBearer = "bearer"
	LoginViaCookie = "cookie"
)

// LoginRow is one secret of an operator login as stored: the SHA-256
// of the secret, never the secret. The secrets of one login share its
// ID, operator and times.
type LoginRow struct {
	ID        string
	TokenHash [32]byte
	Via       string // LoginViaBearer or LoginViaCookie
	Operator  string
	CreatedAt time.Time
	ExpiresAt time.Time
}

const operatorColumns = "name, password_hash, role, created_at, updated_at"

// InsertOperator stores a new operator; an existing name is ErrConflict.
func (db *DB) InsertOperator(ctx context.Context, o OperatorRow) error {
	op := "insert operator " + o.Name
	if o.PasswordHash == "" || o.Role == "" {
		return db.wrap(op, errors.New("an operator needs a password hash and a role"))
	}
	created, err := storedNanos("created_at", o.CreatedAt)
	if err != nil {
		return db.wrap(op, err)
	}
	updated, err := storedNanos("updated_at", o.UpdatedAt)
	if err != nil {
		return db.wrap(op, err)
	}
	return db.write(ctx, op, func(t *txn) error {
		r, err := t.exec(ctx, `INSERT INTO operators (`+operatorColumns+`) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING`,
			o.Name, o.PasswordHash, o.Role, created, updated)
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

// Operator returns one operator; ok is false when there is none.
func (db *DB) Operator(ctx context.Context, name string) (OperatorRow, bool, error) {
	o, err := scanOperator(db.queryRow(ctx, "SELECT "+operatorColumns+" FROM operators WHERE name = $1", name))
	if errors.Is(err, sql.ErrNoRows) {
		return OperatorRow{}, false, nil
	}
	if err != nil {
		return OperatorRow{}, false, db.wrap("get operator "+name, err)
	}
	return o, true, nil
}

// ListOperators returns every operator, by name.
func (db *DB) ListOperators(ctx context.Context) ([]OperatorRow, error) {
	rows, err := db.query(ctx, "SELECT "+operatorColumns+" FROM operators ORDER BY name")
	if err != nil {
		return nil, db.wrap("list operators", err)
	}
	defer rows.Close()
	var out []OperatorRow
	for rows.Next() {
		o, err := scanOperator(rows)
		if err != nil {
			return nil, db.wrap("list operators", err)
		}
		out = append(out, o)
	}
	if err := rows.Err(); err != nil {
		return nil, db.wrap("list operators", err)
	}
	return out, nil
}

// UpdateOperator sets the operator's role and/or password hash (nil
// keeps the stored one) and updated_at, and returns the operator as the
// update committed it; ok is false when there is no such operator. A
// new password hash deletes the operator's logins in the same
// transaction: whoever held the old password is logged out everywhere.
// With both nil it only reads the operator.
func (db *DB) UpdateOperator(ctx context.Context, name string, role *string, passwordHash *string, at time.Time) (OperatorRow, bool, error) {
	op := "update operator " + name
	if (role != nil && *role == "") || (passwordHash != nil && *passwordHash == "") {
		return OperatorRow{}, false, db.wrap(op, errors.New("an empty role or password hash"))
	}
	if role == nil && passwordHash == nil {
		return db.Operator(ctx, name)
	}
	updated, err := storedNanos("updated_at", at)
	if err != nil {
		return OperatorRow{}, false, db.wrap(op, err)
	}
	nullable := func(s *string) sql.NullString {
		if s == nil {
			return sql.NullString{}
		}
		return sql.NullString{String: *s, Valid: true}
	}
	var out OperatorRow
	var found bool
	err = db.write(ctx, op, func(t *txn) error {
		found = false
		// The operator's row first: a login being stored for it
		// (InsertLogin holds the row) commits before this goes on, and
		// so is among the logins deleted below.
		r, err := t.exec(ctx, "UPDATE operators SET role = COALESCE($2, role), password_hash = COALESCE($3, password_hash), updated_at = $4 WHERE name = $1",
			name, nullable(role), nullable(passwordHash), updated)
		if err != nil {
			return err
		}
		if n, err := affected(r); err != nil || n == 0 {
			return err
		}
		if out, err = scanOperator(t.queryRow(ctx, "SELECT "+operatorColumns+" FROM operators WHERE name = $1", name)); err != nil {
			return err
		}
		found = true
		if passwordHash == nil {
			return nil
		}
		_, err = t.exec(ctx, "DELETE FROM operator_logins WHERE operator = $1", name)
		return err
	})
	if err != nil || !found {
		return OperatorRow{}, false, err
	}
	return out, true, nil
}

// RehashOperatorPassword replaces the operator's password hash by
// newHash, a hash of the same password with current parameters (see
// identity.NeedsRehash), if it is still oldHash, the one a login just
// matched. Unlike UpdateOperator's password change it ends no login and
// leaves updated_at alone: nothing changed for anyone. It reports
// whether the hash was replaced (false: the operator is gone, or their
// password changed meanwhile, which wins).
func (db *DB) RehashOperatorPassword(ctx context.Context, name, oldHash, newHash string) (bool, error) {
	op := "rehash the password of operator " + name
	if oldHash == "" || newHash == "" {
		return false, db.wrap(op, errors.New("an empty password hash"))
	}
	var done bool
	err := db.write(ctx, op, func(t *txn) error {
		r, err := t.exec(ctx, "UPDATE operators SET password_hash = $3 WHERE name = $1 AND password_hash = $2", name, oldHash, newHash)
		if err != nil {
			return err
		}
		n, err := affected(r)
		done = n > 0
		return err
	})
	return done, err
}

// DeleteOperator deletes an operator and their logins in one
// transaction, reporting whether the operator existed.
func (db *DB) DeleteOperator(ctx context.Context, name string) (bool, error) {
	var found bool
	err := db.write(ctx, "delete operator "+name, func(t *txn) error {
		// The row first, for the reason UpdateOperator gives.
		r, err := t.exec(ctx, "DELETE FROM operators WHERE name = $1", name)
		if err != nil {
			return err
		}
		n, err := affected(r)
		if found = n > 0; err != nil || !found {
			return err
		}
		_, err = t.exec(ctx, "DELETE FROM operator_logins WHERE operator = $1", name)
		return err
	})
	return found, err
}

// InsertLogin stores a login's secrets (one LoginRow each, with the
// same ID, operator and times, one LoginViaBearer and one
// LoginViaCookie) for an operator whose password the caller has just
// checked against checkedPasswordHash. They are stored only while the
// operator still exists with that password hash, read under a lock on
// the operator's row: a password change or a deletion that commits
// between the check and this insert would otherwise leave a login made
// with the old password (or for a name a new operator may take). Either
// case, and an existing token hash or login id, is ErrConflict; the
// caller treats it as a failed login.
func (db *DB) InsertLogin(ctx context.Context, secrets []LoginRow, checkedPasswordHash string) error {
	if len(secrets) == 0 {
		return db.wrap("insert login", errors.New("a login needs its secrets"))
	}
	first := secrets[0]
	op := "insert login for " + first.Operator
	if checkedPasswordHash == "" && first.Operator != AdminTokenLogin {
		return db.wrap(op, errors.New("the password hash the login was checked against is required"))
	}
	if len(secrets) != 2 || secrets[0].Via == secrets[1].Via {
		return db.wrap(op, errors.New("a login has one bearer and one cookie secret"))
	}
	for _, l := range secrets {
		switch {
		case l.ID == "" || l.Operator == "":
			return db.wrap(op, errors.New("a login needs an id and an operator"))
		case l.Via != LoginViaBearer && l.Via != LoginViaCookie:
			return db.wrap(op, fmt.Errorf("a login's secret is carried by %s or %s, not %q", LoginViaBearer, LoginViaCookie, l.Via))
		case l.ID != first.ID || l.Operator != first.Operator || !l.CreatedAt.Equal(first.CreatedAt) || !l.ExpiresAt.Equal(first.ExpiresAt):
			return db.wrap(op, errors.New("a login's secrets share its id, operator and times"))
		case l.TokenHash == [32]byte{}:
			return db.wrap(op, errors.New("a login's secret needs its hash"))
		}
	}
	if secrets[0].TokenHash == secrets[1].TokenHash {
		return db.wrap(op, errors.New("a login's two secrets must differ"))
	}
	created, err := storedNanos("created_at", first.CreatedAt)
	if err != nil {
		return db.wrap(op, err)
	}
	expires, err := storedNanos("expires_at", first.ExpiresAt)
	if err != nil {
		return db.wrap(op, err)
	}
	if expires <= created {
		return db.wrap(op, fmt.Errorf("expires_at %s is not after created_at", first.ExpiresAt.UTC().Format(time.RFC3339Nano)))
	}
	return db.write(ctx, op, func(t *txn) error {
		if first.Operator != AdminTokenLogin {
			var current string
			err := t.queryRow(ctx, "SELECT password_hash FROM operators WHERE name = $1"+db.dialect.forUpdate, first.Operator).Scan(&current)
			if errors.Is(err, sql.ErrNoRows) {
				return ErrConflict
			}
			if err != nil {
				return err
			}
			if current != checkedPasswordHash {
				return ErrConflict
			}
		}
		var taken int
		if err := t.queryRow(ctx, "SELECT COUNT(*) FROM operator_logins WHERE login_id = $1", first.ID).Scan(&taken); err != nil {
			return err
		}
		if taken > 0 {
			return ErrConflict
		}
		for _, l := range secrets {
			r, err := t.exec(ctx, "INSERT INTO operator_logins (token_hash, login_id, via, operator, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
				hex.EncodeToString(l.TokenHash[:]), l.ID, l.Via, l.Operator, created, expires)
			if err != nil {
				return err
			}
			if n, err := affected(r); err != nil {
				return err
			} else if n == 0 {
				return ErrConflict
			}
		}
		return nil
	})
}

// LoginByTokenHash returns the login secret that hashes to hash (its
// Via says which of the login's secrets it is) and its operator as
// stored now (so a role change counts at once); ok is false when the
// login or its operator is gone. An expired login is returned as it
// is: the caller compares ExpiresAt with its own clock.
func (db *DB) LoginByTokenHash(ctx context.Context, hash [32]byte) (LoginRow, OperatorRow, bool, error) {
	var l LoginRow
	var o OperatorRow
	var lCreated, lExpires, oCreated, oUpdated int64
	var found int
	err := db.queryRow(ctx, `SELECT l.login_id, l.via, l.operator, l.created_at, l.expires_at, COALESCE(o.name, ''), COALESCE(o.password_hash, ''), COALESCE(o.role, ''), COALESCE(o.created_at, 0), COALESCE(o.updated_at, 0), CASE WHEN o.name IS NULL THEN 0 ELSE 1 END
FROM operator_logins l LEFT JOIN operators o ON o.name = l.operator WHERE l.token_hash = $1`, hex.EncodeToString(hash[:])).
		Scan(&l.ID, &l.Via, &l.Operator, &lCreated, &lExpires, &o.Name, &o.PasswordHash, &o.Role, &oCreated, &oUpdated, &found)
	if errors.Is(err, sql.ErrNoRows) {
		return LoginRow{}, OperatorRow{}, false, nil
	}
	if err != nil {
		return LoginRow{}, OperatorRow{}, false, db.wrap("get login", err)
	}
	l.TokenHash = hash
	l.CreatedAt, l.ExpiresAt = fromNanos(lCreated), fromNanos(lExpires)
	switch {
	case found == 1:
		o.CreatedAt, o.UpdatedAt = fromNanos(oCreated), fromNanos(oUpdated)
	case l.Operator == AdminTokenLogin:
		// The admin token's own logins have no operators row: they act
		// as owner (the caller checks the admin token is still set).
		o = OperatorRow{Name: AdminTokenLogin, Role: "owner", CreatedAt: l.CreatedAt, UpdatedAt: l.CreatedAt}
	default:
		// The operator is gone: the login grants nothing.
		return LoginRow{}, OperatorRow{}, false, nil
	}
	return l, o, true, nil
}

// DeleteLogin deletes a login, both of its secrets (a logout);
// deleting one that is gone is no error.
func (db *DB) DeleteLogin(ctx context.Context, id string) error {
	if id == "" {
		return db.wrap("delete login", errors.New("no login id"))
	}
	_, err := db.exec(ctx, "DELETE FROM operator_logins WHERE login_id = $1", id)
	return db.wrap("delete login", err)
}

// DeleteLoginsExpiredBefore deletes the logins that expired before t
// and returns how many.
func (db *DB) DeleteLoginsExpiredBefore(ctx context.Context, t time.Time) (int, error) {
	return db.deleteCount(ctx, "delete expired logins", "DELETE FROM operator_logins WHERE expires_at < $1", boundNanos(t))
}

// deleteCount runs a DELETE and returns how many rows it removed.
func (db *DB) deleteCount(ctx context.Context, op, query string, args ...any) (int, error) {
	r, err := db.exec(ctx, query, args...)
	if err != nil {
		return 0, db.wrap(op, err)
	}
	n, err := affected(r)
	if err != nil {
		return 0, db.wrap(op, err)
	}
	return int(n), nil
}

func scanOperator(r rowScanner) (OperatorRow, error) {
	var o OperatorRow
	var created, updated int64
	if err := r.Scan(&o.Name, &o.PasswordHash, &o.Role, &created, &updated); err != nil {
		return OperatorRow{}, err
	}
	o.CreatedAt, o.UpdatedAt = fromNanos(created), fromNanos(updated)
	return o, nil
}
