package agentvault

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/caddyserver/caddy/v2"
	_ "github.com/caddyserver/caddy/v2/modules/standard"
	"golang.org/x/sys/unix"

	"github.com/agentvault/caddy-agent-vault/caddymodule"
)

// The flags are Caddy's own definitions, parsed as Caddy parses them.
func TestVerbFlags(t *testing.T) {
	fl := verbFlags("run", []string{"-c", "cfg", "--adapter", "caddyfile", "--envfile", "a", "--envfile", "b", "--resume", "--pidfile", "p"})
	if fl == nil {
		t.Fatal("run flags did not parse")
	}
	if fl.str("config") != "cfg" || fl.str("adapter") != "caddyfile" || !fl.boolean("resume") || strings.Join(fl.list("envfile"), ",") != "a,b" {
		t.Errorf("run flags read as config=%q adapter=%q resume=%v envfile=%v", fl.str("config"), fl.str("adapter"), fl.boolean("resume"), fl.list("envfile"))
	}
	if fl.str("address") != "" {
		t.Error("a flag run does not define reads as set")
	}
	if fl := verbFlags("stop", []string{"--address", "unix//x.sock"}); fl == nil || fl.str("address") != "unix//x.sock" {
		t.Error("stop --address not read")
	}
	if verbFlags("no-such-verb", nil) != nil || verbFlags("run", []string{"--no-such-flag"}) != nil {
		t.Error("an unknown verb or flag parsed")
	}
	var none *cobraFlags
	if none.str("config") != "" || none.boolean("resume") || none.list("envfile") != nil {
		t.Error("nil flags read as set")
	}
}

// quietConfig adapts what Caddy would load; parseInstanceConfig finds
// the data dir the app will use.
func TestQuietConfigAndDataDir(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("AGENT_VAULT_DATA_DIR", filepath.Join(dir, "data"))
	raw := quietConfig("Caddyfile.example", "caddyfile")
	cfg, dataDir := parseInstanceConfig(raw)
	if dataDir != filepath.Join(dir, "data") {
		t.Fatalf("data dir %q from Caddyfile.example, want %q", dataDir, filepath.Join(dir, "data"))
	}
	if cfg.Admin == nil || !strings.HasPrefix(cfg.Admin.Listen, "unix/"+filepath.Join(dir, "data")) {
		t.Errorf("admin %+v, want the data dir's socket", cfg.Admin)
	}
	// Named like a Caddyfile: adapted without --adapter.
	named := filepath.Join(dir, "my.caddyfile")
	body, _ := os.ReadFile("Caddyfile.example")
	os.WriteFile(named, body, 0o600)
	if _, d := parseInstanceConfig(quietConfig(named, "")); d != dataDir {
		t.Errorf("*.caddyfile not adapted: data dir %q", d)
	}
	// JSON as is, placeholders resolved as the app resolves them.
	js := filepath.Join(dir, "c.json")
	os.WriteFile(js, []byte(`{"apps":{"agent_vault":{"data_dir":"{env.AGENT_VAULT_DATA_DIR}/x"}}}`), 0o600)
	if _, d := parseInstanceConfig(quietConfig(js, "")); d != filepath.Join(dir, "data", "x") {
		t.Errorf("JSON data dir %q", d)
	}
	// Nothing for Caddy to report twice: no app, stdin, missing, broken.
	os.WriteFile(js, []byte(`{"apps":{"http":{}}}`), 0o600)
	for _, c := range [][2]string{{js, ""}, {"-", ""}, {filepath.Join(dir, "missing"), ""}, {named, "no-such-adapter"}} {
		if _, d := parseInstanceConfig(quietConfig(c[0], c[1])); d != "" {
			t.Errorf("%v: data dir %q, want none", c, d)
		}
	}
	if _, d := parseInstanceConfig([]byte("{not json")); d != "" {
		t.Errorf("broken JSON: data dir %q", d)
	}
}

// The admin endpoint of a running process is refused: a unix socket
// that answers, or a TCP address held even with SO_REUSEPORT. A stale
// socket file and a disabled endpoint are not.
func TestCheckAdminFree(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "admin.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	admin := &caddy.AdminConfig{Listen: "unix/" + sock + "|0600"}
	if err := checkAdminFree(admin); err == nil || !strings.Contains(err.Error(), "admin socket "+sock+" already answers") {
		t.Errorf("answering socket: %v", err)
	}
	ln.Close()
	if _, err := os.Stat(sock); err != nil {
		t.Fatal("the stale socket file is gone:", err)
	}
	if err := checkAdminFree(admin); err != nil {
		t.Errorf("stale socket file: %v", err)
	}

	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		return c.Control(func(fd uintptr) { unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1) })
	}}
	tcp, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer tcp.Close()
	addr := tcp.Addr().String()
	if err := checkAdminFree(&caddy.AdminConfig{Listen: addr}); err == nil || !strings.Contains(err.Error(), "admin address "+addr+" is already in use") {
		t.Errorf("TCP admin address held with SO_REUSEPORT: %v", err)
	}
	if err := checkAdminFree(&caddy.AdminConfig{Disabled: true, Listen: addr}); err != nil {
		t.Errorf("disabled admin endpoint: %v", err)
	}
}

// stop and reload pointed at a data dir nobody holds fail with a clear
// message; pointed at one that is held, or at an address, they go on.
func TestRequireInstance(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "data")
	cfgFile := filepath.Join(t.TempDir(), "c.json")
	b, _ := json.Marshal(map[string]any{
		"admin": map[string]any{"disabled": true}, // not Caddy's default localhost:2019, which may be taken here
		"apps":  map[string]any{"agent_vault": map[string]any{"data_dir": dataDir}},
	})
	os.WriteFile(cfgFile, b, 0o600)

	err := requireInstance("stop", verbFlags("stop", []string{"--config", cfgFile}))
	if want := "no agent-vault instance is running on data_dir " + dataDir + ": nothing to stop"; err == nil || err.Error() != want {
		t.Errorf("stop with nothing running: %v, want %q", err, want)
	}
	if _, err := os.Stat(dataDir); !os.IsNotExist(err) {
		t.Errorf("the check created the data dir (%v)", err)
	}
	if err := requireInstance("stop", verbFlags("stop", []string{"--config", cfgFile, "--address", "localhost:2019"})); err != nil {
		t.Errorf("stop --address: %v", err)
	}
	if err := requireInstance("stop", verbFlags("stop", nil)); err != nil {
		t.Errorf("stop without --config: %v", err)
	}

	// What `run` does: lock for the life of the process (this test
	// binary's), then stop and reload find it running.
	if err := claimInstance(startConfig(verbFlags("run", []string{"--config", cfgFile}))); err != nil {
		t.Fatalf("run's claim: %v", err)
	}
	if _, running, _ := caddymodule.RunningInstance(dataDir); !running {
		t.Fatal("run's claim holds no lock")
	}
	for _, verb := range []string{"stop", "reload"} {
		if err := requireInstance(verb, verbFlags(verb, []string{"--config", cfgFile})); err != nil {
			t.Errorf("%s with the instance running: %v", verb, err)
		}
	}
	// Skipped with --envfile: the environment is not loaded yet.
	if err := claimInstance(startConfig(verbFlags("run", []string{"--config", cfgFile, "--envfile", "/nonexistent"}))); err != nil {
		t.Errorf("run --envfile: %v", err)
	}
}
