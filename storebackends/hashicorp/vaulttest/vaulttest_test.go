package vaulttest

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
)

// TestDevServer exercises every helper against a real server. It
// builds the server first if needed (never skips).
func TestDevServer(t *testing.T) {
	s := Start(t)
	ctx := context.Background()

	if !strings.HasPrefix(s.Addr, "http://127.0.0.1:") {
		t.Fatalf("Addr = %q, want a loopback URL", s.Addr)
	}
	t.Setenv("VAULT_ADDR", "http://127.0.0.1:1")
	t.Setenv("VAULT_TOKEN", "from-the-environment")
	t.Setenv("VAULT_NAMESPACE", "from-the-environment")
	if c := s.NewClient(t, ""); c.Address() != s.Addr || c.Token() != "" || c.Namespace() != "" {
		t.Fatalf("client took address/token/namespace from the environment: %q %q %q", c.Address(), c.Token(), c.Namespace())
	}
	health, err := s.Client.Sys().Health()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(health.Version, "1.21.0") {
		t.Errorf("Vault version %q, want 1.21.0", health.Version)
	}
	if strings.Contains(s.Output(), s.RootToken) {
		t.Error("Output() shows the root token")
	}

	t.Run("KVv2", func(t *testing.T) {
		kv := s.Client.KVv2("secret")
		if v := s.PutKV2(t, "secret", "app/db", map[string]any{"password": "one"}); v != 1 {
			t.Fatalf("first version = %d, want 1", v)
		}
		if v := s.PutKV2(t, "secret", "app/db", map[string]any{"password": "two"}); v != 2 {
			t.Fatalf("second version = %d, want 2", v)
		}
		got, err := kv.Get(ctx, "app/db")
		if err != nil {
			t.Fatal(err)
		}
		if got.Data["password"] != "two" || got.VersionMetadata.Version != 2 {
			t.Fatalf("read %v version %d, want password two, version 2", got.Data, got.VersionMetadata.Version)
		}

		s.DeleteKV2(t, "secret", "app/db")
		deleted, err := kv.Get(ctx, "app/db")
		if err == nil && (len(deleted.Data) != 0 || deleted.VersionMetadata.DeletionTime.IsZero()) {
			t.Fatalf("latest version still readable after delete: %+v", deleted.VersionMetadata)
		}
		old, err := kv.GetVersion(ctx, "app/db", 1)
		if err != nil || old.Data["password"] != "one" {
			t.Fatalf("version 1 after deleting version 2: %v, %v", old, err)
		}

		s.DestroyKV2(t, "secret", "app/db", []int{1})
		destroyed, err := kv.GetVersion(ctx, "app/db", 1)
		if err == nil && (len(destroyed.Data) != 0 || !destroyed.VersionMetadata.Destroyed) {
			t.Fatalf("version 1 still readable after destroy: %+v", destroyed.VersionMetadata)
		}
	})

	t.Run("KVv2Mount", func(t *testing.T) {
		s.EnableKVv2(t, "kv2")
		if v := s.PutKV2(t, "kv2", "x", map[string]any{"k": "v"}); v != 1 {
			t.Fatalf("version = %d, want 1", v)
		}
	})

	t.Run("KVv1", func(t *testing.T) {
		s.EnableKVv1(t, "kv1")
		mounts, err := s.Client.Sys().ListMounts()
		if err != nil {
			t.Fatal(err)
		}
		if m := mounts["kv1/"]; m == nil || m.Type != "kv" || m.Options["version"] != "1" {
			t.Fatalf("kv1/ mount = %+v, want kv version 1", m)
		}
		s.PutKV1(t, "kv1", "app/api", map[string]any{"key": "abc"})
		got, err := s.Client.KVv1("kv1").Get(ctx, "app/api")
		if err != nil || got.Data["key"] != "abc" {
			t.Fatalf("KV v1 read: %v, %v", got, err)
		}
	})

	t.Run("AppRole", func(t *testing.T) {
		s.PutKV2(t, "secret", "agent/token", map[string]any{"value": "s3cret"})
		s.WritePolicy(t, "agent-read", `path "secret/data/agent/*" { capabilities = ["read"] }`)
		s.EnableAppRole(t, "approle")
		roleID, secretID := s.CreateAppRole(t, "approle", "agent", []string{"agent-read"}, "1h")

		c := s.NewClient(t, "")
		if c.Token() != "" {
			t.Fatal("NewClient with no token picked one up")
		}
		login, err := c.Logical().Write("auth/approle/login", map[string]any{"role_id": roleID, "secret_id": secretID})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(login.Auth.TokenPolicies, "agent-read") || login.Auth.LeaseDuration != 3600 {
			t.Fatalf("login policies %v, TTL %ds; want agent-read, 3600s", login.Auth.TokenPolicies, login.Auth.LeaseDuration)
		}
		c.SetToken(login.Auth.ClientToken)
		got, err := c.KVv2("secret").Get(ctx, "agent/token")
		if err != nil || got.Data["value"] != "s3cret" {
			t.Fatalf("AppRole token read: %v, %v", got, err)
		}
		_, err = c.KVv2("secret").Put(ctx, "agent/token", map[string]any{"value": "x"})
		var respErr *api.ResponseError
		if !errors.As(err, &respErr) || respErr.StatusCode != http.StatusForbidden {
			t.Fatalf("write with a read-only policy: %v, want 403", err)
		}

		if _, err := c.Logical().Write("auth/approle/login", map[string]any{"role_id": roleID, "secret_id": "wrong"}); err == nil {
			t.Fatal("login with a wrong secret ID succeeded")
		}
	})

	t.Run("CreateToken", func(t *testing.T) {
		token := s.CreateToken(t, []string{"agent-read"}, "10m", false)
		self, err := s.NewClient(t, token).Auth().Token().LookupSelf()
		if err != nil {
			t.Fatal(err)
		}
		policies, _ := self.TokenPolicies()
		ttl, _ := self.TokenTTL()
		renewable, _ := self.TokenIsRenewable()
		if !slices.Contains(policies, "agent-read") || ttl <= 0 || ttl > 10*time.Minute || renewable {
			t.Fatalf("token policies %v, ttl %v, renewable %t; want agent-read, <=10m, false", policies, ttl, renewable)
		}
	})

	t.Run("PauseResume", func(t *testing.T) {
		c := s.NewClient(t, s.RootToken)
		c.SetClientTimeout(time.Second)
		s.Pause(t)
		start := time.Now()
		_, err := c.Sys().Health()
		if err == nil {
			s.Resume(t)
			t.Fatal("health check succeeded against a paused server")
		}
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("paused server: got %v, want a timeout", err)
		}
		if elapsed := time.Since(start); elapsed < time.Second {
			t.Errorf("failed after %v, before the 1s timeout", elapsed)
		}
		s.Resume(t)
		if _, err := c.Sys().Health(); err != nil {
			t.Fatalf("after Resume: %v", err)
		}
	})

	t.Run("Stop", func(t *testing.T) {
		s.Stop(t)
		c := s.NewClient(t, s.RootToken)
		c.SetClientTimeout(time.Second)
		if _, err := c.Sys().Health(); err == nil || errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("after Stop: %v, want connection refused", err)
		}
		s.Stop(t) // idempotent; cleanup calls it again too
	})
}

func TestBinaryIsCached(t *testing.T) {
	first, err := Binary()
	if err != nil {
		t.Fatal(err)
	}
	second, err := Binary()
	if err != nil || second != first {
		t.Fatalf("second call: %q, %v; want %q", second, err, first)
	}
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	cacheDir := filepath.Join(root, ".cache", "vault")
	if d := os.Getenv("AGENT_VAULT_VAULT_CACHE"); d != "" {
		cacheDir = d
	}
	rel, err := filepath.Rel(cacheDir, first)
	if err != nil {
		t.Fatal(err)
	}
	dir, name := filepath.Split(rel)
	if name != "vault" || len(strings.Trim(dir, "/")) != 16 {
		t.Fatalf("binary at %s, want <cache dir>/<16 hex>/vault", rel)
	}
	fi, err := os.Stat(first)
	if err != nil || fi.Mode().Perm()&0o100 == 0 {
		t.Fatalf("binary not executable: %v, %v", fi, err)
	}
}

func TestHashInputs(t *testing.T) {
	base := hashInputs([][]byte{[]byte("go1.26.8"), []byte("mod"), []byte("sum")})
	if len(base) != 16 {
		t.Fatalf("key %q, want 16 hex digits", base)
	}
	for _, other := range [][][]byte{
		{[]byte("go1.26.9"), []byte("mod"), []byte("sum")},
		{[]byte("go1.26.8"), []byte("mod"), []byte("sum2")},
		{[]byte("go1.26.8"), []byte("modsum"), []byte("")}, // same bytes, other boundaries
	} {
		if hashInputs(other) == base {
			t.Errorf("inputs %q share the key of the base inputs", other)
		}
	}
	if hashInputs([][]byte{[]byte("go1.26.8"), []byte("mod"), []byte("sum")}) != base {
		t.Error("key is not deterministic")
	}
}

func TestTailBufferKeepsTheEnd(t *testing.T) {
	b := &tailBuffer{max: 8}
	b.Write([]byte("0123456"))
	b.Write([]byte("789ab"))
	if got := string(b.Bytes()); got != "456789ab" {
		t.Fatalf("kept %q, want the last 8 bytes", got)
	}
}

func TestChildEnvHidesVaultSettings(t *testing.T) {
	t.Setenv("VAULT_TOKEN", "secret")
	t.Setenv("VAULT_ADDR", "https://vault.example.com")
	env := childEnv("/tmp/home")
	for _, kv := range env {
		if strings.HasPrefix(kv, "VAULT_") {
			t.Errorf("child sees %s", kv)
		}
		if strings.HasPrefix(kv, "HOME=") && kv != "HOME=/tmp/home" {
			t.Errorf("child sees %s", kv)
		}
	}
	if !slices.Contains(env, "HOME=/tmp/home") {
		t.Error("child HOME not set")
	}
}

// TestBuildRenamesIntoPlace runs the build step on a tiny module: the
// binary appears only complete, and failed or killed builds leave
// nothing behind.
func TestBuildRenamesIntoPlace(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatal(err)
	}
	src := t.TempDir()
	writeFile(t, filepath.Join(src, "go.mod"), "module hello\n\ngo 1.26.0\n")
	writeFile(t, filepath.Join(src, "main.go"), "package main\n\nfunc main() { println(\"hello\") }\n")
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "vault-123.tmp"), "half a binary from a killed build")
	bin := filepath.Join(dir, "vault")

	var log bytes.Buffer
	if err := build(goBin, src, dir, bin, &log); err != nil {
		t.Fatalf("build: %v\n%s", err, &log)
	}
	out, err := exec.Command(bin).CombinedOutput()
	if err != nil || string(out) != "hello\n" {
		t.Fatalf("built binary: %q, %v", out, err)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "*.tmp")); len(left) != 0 {
		t.Errorf("temporary files left: %v", left)
	}

	writeFile(t, filepath.Join(src, "main.go"), "package main\n\nfunc main() { syntax error }\n")
	failed := filepath.Join(dir, "broken")
	log.Reset()
	if err := build(goBin, src, dir, failed, &log); err == nil {
		t.Fatal("build of broken code succeeded")
	}
	if !strings.Contains(log.String(), "syntax error") {
		t.Errorf("compiler output not passed on: %q", &log)
	}
	if _, err := os.Stat(failed); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("failed build left %s: %v", failed, err)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "*.tmp")); len(left) != 0 {
		t.Errorf("temporary files left: %v", left)
	}
}

func TestLockFileExcludes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "build.lock")
	unlock, err := lockFile(path)
	if err != nil {
		t.Fatal(err)
	}
	tryLock := func() error {
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		return syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
	}
	if err := tryLock(); !errors.Is(err, syscall.EWOULDBLOCK) {
		t.Fatalf("lock while held: %v, want EWOULDBLOCK", err)
	}
	unlock()
	if err := tryLock(); err != nil {
		t.Fatalf("lock after unlock: %v", err)
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}
