// Package state is agent-vault's state database: the catalog of
// services, agent sessions (and their leases), the built-in store's
// sealed records, Caddy's storage for a cluster, and who may do what:
// agents and their token hashes, operators and their logins, access
// requests and the audit trail. One schema and one set of queries serve
// two backends: SQLite (a file, one broker) and PostgreSQL (shared by a
// cluster of brokers).
//
// Callers keep their in-memory copies of services, sessions and
// credentials and persist through DB. A write to them announces a Change
// after it commits; on PostgreSQL the announcement travels with the
// transaction (pg_notify) to every broker, so each one re-reads what
// changed within about a second. A full reload every ReloadInterval
// heals whatever a broker missed.
//
// Agents, operators, logins, access requests and the audit trail have
// no Change: the API reads them from the database on every request, so
// a rotated token or a deleted operator stops working on every broker
// at once.
//
// Times are stored as BIGINT unix nanoseconds and bytes as base64 TEXT,
// so that the same migrations run unchanged on both backends; a time
// written must lie between 1677 and 2262 and not be the zero time, or
// the write is refused. Queries are written once, with PostgreSQL's $N
// placeholders and $now for the database's clock (see dialect.go).
//
// Errors name the backend ("state sqlite: ...", "state postgres: ...")
// and never contain the DSN's password.
package state
