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
