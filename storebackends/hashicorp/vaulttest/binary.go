package vaulttest

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
)

// testvaultRel is where the testvault module lives, relative to the
// repository root.
const testvaultRel = "storebackends/hashicorp/testvault"

// Binary returns the path of the Vault server binary built from the
// testvault module, building it first if the cache has none for the
// current go.mod/go.sum/main.go and Go toolchain.
//
// The binary is cached in .cache/vault/<key>/vault under the repository
// root. Building takes about ten minutes on a small machine; its output
// goes to the process's stderr so CI shows progress. A file lock makes
// concurrent callers (parallel test packages) wait for one build instead
// of running several, and the binary is renamed into place only once
// complete, so an interrupted build never leaves a truncated binary.
func Binary() (string, error) { return binaryOnce() }

// binaryOnce memoizes Binary for the life of the process: the inputs
// cannot change under a running test binary.
var binaryOnce = sync.OnceValues(func() (string, error) {
	root, err := repoRoot()
	if err != nil {
		return "", err
	}
	return cachedBinary(root)
})

// repoRoot finds the repository root from this source file's path, so
// it works from any test package's working directory.
func repoRoot() (string, error) {
	_, file, _, ok := runtime.Caller(0)
	if !ok || !filepath.IsAbs(file) {
		return "", errors.New("vaulttest: cannot locate the repository from the package source path (built with -trimpath?)")
	}
	root := filepath.Join(filepath.Dir(file), "..", "..", "..")
	if _, err := os.Stat(filepath.Join(root, testvaultRel, "go.mod")); err != nil {
		return "", fmt.Errorf("vaulttest: testvault module not found under %s: %w", root, err)
	}
	return filepath.Clean(root), nil
}

func cachedBinary(root string) (string, error) {
	src := filepath.Join(root, testvaultRel)
	goBin, err := exec.LookPath("go")
	if err != nil {
		return "", fmt.Errorf("vaulttest: the go command is needed to build Vault: %w", err)
	}
	key, err := cacheKey(goBin, src)
	if err != nil {
		return "", err
	}
	cacheDir := filepath.Join(root, ".cache", "vault")
	// CI clones the repository afresh each run; a cache outside the
	// clone (set by .ci/run) spares it the 10-minute build.
	if d := os.Getenv("AGENT_VAULT_VAULT_CACHE"); d != "" {
		cacheDir = d
	}
	dir := filepath.Join(cacheDir, key)
	bin := filepath.Join(dir, "vault")
	if isFile(bin) {
		return bin, nil
	}

	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("vaulttest: %w", err)
	}
	unlock, err := lockFile(filepath.Join(cacheDir, "build.lock"))
	if err != nil {
		return "", err
	}
	defer unlock()
	// Another process may have finished the build while we waited.
	if isFile(bin) {
		return bin, nil
	}
	if err := build(goBin, src, dir, bin, os.Stderr); err != nil {
		return "", err
	}
	return bin, nil
}

// cacheKey names a build by everything that determines its result: the
// testvault module's files and the toolchain that compiles them.
func cacheKey(goBin, src string) (string, error) {
	cmd := exec.Command(goBin, "env", "GOVERSION", "GOOS", "GOARCH")
	cmd.Dir = src // the module's go line may select another toolchain
	toolchain, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("vaulttest: go env: %w", err)
	}
	inputs := [][]byte{toolchain}
	for _, name := range []string{"go.mod", "go.sum", "main.go"} {
		b, err := os.ReadFile(filepath.Join(src, name))
		if err != nil {
			return "", fmt.Errorf("vaulttest: %w", err)
		}
		inputs = append(inputs, b)
	}
	return hashInputs(inputs), nil
}

// hashInputs returns the first 16 hex digits of a SHA-256 over the
// length-prefixed inputs (the prefixes keep boundaries unambiguous).
func hashInputs(inputs [][]byte) string {
	h := sha256.New()
	for _, in := range inputs {
		fmt.Fprintf(h, "%d\n", len(in))
		h.Write(in)
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// build compiles Vault into a temporary file in dir and renames it to
// bin once complete, writing progress and compiler output to log. The
// caller holds the build lock.
func build(goBin, src, dir, bin string, log io.Writer) error {
	// Leftovers of a build that was killed: nobody else is building.
	stale, _ := filepath.Glob(filepath.Join(dir, "vault-*.tmp"))
	for _, f := range stale {
		os.Remove(f)
	}
	tmp, err := os.CreateTemp(dir, "vault-*.tmp")
	if err != nil {
		return fmt.Errorf("vaulttest: %w", err)
	}
	tmp.Close()
	defer os.Remove(tmp.Name()) // no-op after the rename

	fmt.Fprintf(log, "vaulttest: building the Vault test server into %s\n"+
		"vaulttest: this takes ~10 minutes once per go.sum/toolchain change; `make vault-test-server` does it ahead of time\n", bin)
	cmd := exec.Command(goBin, "build", "-ldflags=-s -w", "-o", tmp.Name(), ".")
	cmd.Dir = src
	cmd.Stdout = log
	cmd.Stderr = log
	cmd.SysProcAttr = dieWithParent()
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("vaulttest: building Vault in %s: %w", src, err)
	}
	if err := os.Rename(tmp.Name(), bin); err != nil {
		return fmt.Errorf("vaulttest: %w", err)
	}
	fmt.Fprintf(log, "vaulttest: built %s\n", bin)
	return nil
}

// lockFile takes an exclusive flock on path, waiting for it if needed.
// flock locks belong to the open file, so this also serializes callers
// within one process.
func lockFile(path string) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("vaulttest: %w", err)
	}
	for {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX)
		if !errors.Is(err, syscall.EINTR) {
			break
		}
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("vaulttest: locking %s: %w", path, err)
	}
	return func() { f.Close() }, nil // closing releases the lock
}

// isFile reports whether path is an existing, non-empty regular file.
func isFile(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Size() > 0
}
