package state

import (
	"context"
	"time"
)

// ServiceRow is one catalog entry: Doc is the services.Service JSON.
type ServiceRow struct {
	Name      string
	Doc       []byte
	UpdatedAt time.Time
}

// ListServices returns every service, by name.
func (db *DB) ListServices(ctx context.Context) ([]ServiceRow, error) {
	rows, err := db.query(ctx, "SELECT name, doc, updated_at FROM services ORDER BY name")
	if err != nil {
		return nil, db.wrap("list services", err)
	}
	defer rows.Close()
	var out []ServiceRow
	for rows.Next() {
		var r ServiceRow
		var doc string
		var updated int64
		if err := rows.Scan(&r.Name, &doc, &updated); err != nil {
			return nil, db.wrap("list services", err)
		}
		r.Doc, r.UpdatedAt = []byte(doc), fromNanos(updated)
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, db.wrap("list services", err)
	}
	return out, nil
}

// PutService creates or replaces a service and announces
// Change{TopicServices, name}.
func (db *DB) PutService(ctx context.Context, name string, doc []byte) error {
	return db.write(ctx, "put service "+name, func(t *txn) error {
		updated, err := storedNanos("updated_at", db.s.Now())
		if err != nil {
			return err
		}
		if _, err := t.exec(ctx, `INSERT INTO services (name, doc, updated_at) VALUES ($1, $2, $3)
ON CONFLICT (name) DO UPDATE SET doc = excluded.doc, updated_at = excluded.updated_at`,
			name, string(doc), updated); err != nil {
			return err
		}
		t.publish(Change{Topic: TopicServices, Key: name})
		return nil
	})
}

// DeleteService removes a service, reporting whether there was one, and
// announces the change when there was.
func (db *DB) DeleteService(ctx context.Context, name string) (bool, error) {
	var found bool
	err := db.write(ctx, "delete service "+name, func(t *txn) (err error) {
		found, err = t.execAnnounced(ctx, Change{Topic: TopicServices, Key: name}, "DELETE FROM services WHERE name = $1", name)
		return err
	})
	return found, err
}
