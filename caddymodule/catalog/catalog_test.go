package catalog

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/agentvault/caddy-agent-vault/caddymodule/services"
)

func svc(name, host string) services.Service {
	return services.Service{Name: name, Host: host, Auth: services.Auth{Type: "bearer", Token: "T"}}
}

func TestPutDeleteSurviveReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "services.json")
	c, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Put(svc("b", "b.example.com")); err != nil {
		t.Fatal(err)
	}
	if err := c.Put(svc("a", "a.example.com")); err != nil {
		t.Fatal(err)
	}
	if err := c.Put(svc("a", "a2.example.com")); err != nil { // replace
		t.Fatal(err)
	}
	if found, err := c.Delete("b"); !found || err != nil {
		t.Fatalf("delete = %v, %v", found, err)
	}
	if found, _ := c.Delete("b"); found {
		t.Error("deleted twice")
	}
	again, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	got := again.Services().Services()
	if len(got) != 1 || got[0].Name != "a" || got[0].Host != "a2.example.com" {
		t.Fatalf("reopened catalog = %+v", got)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Errorf("file mode %v", st.Mode().Perm())
	}
}

func TestInvalidServiceChangesNothing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "services.json")
	c, _ := Open(path)
	if err := c.Put(svc("ok", "ok.example.com")); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(path)
	if err := c.Put(svc("bad", "https://x.example.com")); err == nil {
		t.Fatal("invalid service accepted")
	}
	after, _ := os.ReadFile(path)
	if string(before) != string(after) || len(c.Services().Services()) != 1 {
		t.Error("a refused service changed the catalog")
	}
}

func TestOpenRefusesBadFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "services.json")
	os.WriteFile(path, []byte(`[{"name":"x","host":"a..b","auth":{"type":"passthrough"}}]`), 0o600)
	if _, err := Open(path); err == nil {
		t.Fatal("invalid saved service accepted")
	}
	os.WriteFile(path, []byte(`{`), 0o600)
	if _, err := Open(path); err == nil {
		t.Fatal("malformed file accepted")
	}
}
