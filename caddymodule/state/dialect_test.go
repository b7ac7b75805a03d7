package state

import "testing"

func TestRebind(t *testing.T) {
	for in, want := range map[string]string{
		"SELECT 1":                           "SELECT 1",
		"WHERE a = $1 AND b = $2":            "WHERE a = ?1 AND b = ?2",
		"VALUES ($10, $2, $1)":               "VALUES (?10, ?2, ?1)",
		"SELECT '$1', \"$2\", $3":            "SELECT '$1', \"$2\", ?3",
		"SELECT 'it''s $1', $2":              "SELECT 'it''s $1', ?2",
		"SELECT $1 -- not $2\n, $3":          "SELECT ?1 -- not $2\n, ?3",
		"SELECT $ , $a, $":                   "SELECT $ , $a, $",
		"SELECT 'unterminated $1":            "SELECT 'unterminated $1",
		"SELECT $1 -- trailing comment $2":   "SELECT ?1 -- trailing comment $2",
		"UPDATE t SET x = $2 WHERE id = $1;": "UPDATE t SET x = ?2 WHERE id = ?1;",
	} {
		if got := rebind(in); got != want {
			t.Errorf("rebind(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestDialectNow(t *testing.T) {
	sqlite, pg := sqliteDialect.now, postgresDialect.now
	for _, c := range []struct{ in, sqlite, pg string }{
		{"SELECT 1", "SELECT 1", "SELECT 1"},
		{"SET e = $now + $3 WHERE e <= $now", "SET e = " + sqlite + " + ?3 WHERE e <= " + sqlite, "SET e = " + pg + " + $3 WHERE e <= " + pg},
		{"SELECT '$now', $nowhere, $now_x -- $now\n", "SELECT '$now', $nowhere, $now_x -- $now\n", "SELECT '$now', $nowhere, $now_x -- $now\n"},
		{"SELECT $now", "SELECT " + sqlite, "SELECT " + pg},
		{"SELECT $1", "SELECT ?1", "SELECT $1"},
	} {
		if got := sqliteDialect.sql(c.in); got != c.sqlite {
			t.Errorf("sqlite %q = %q, want %q", c.in, got, c.sqlite)
		}
		if got := postgresDialect.sql(c.in); got != c.pg {
			t.Errorf("postgres %q = %q, want %q", c.in, got, c.pg)
		}
	}
}
