package e2etest

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"syscall"
	"time"
)

// Benchmarks and load runs address their upstream by a DNS name, as a
// real deployment would, so the proxy and the floor resolve it through
// the system resolver (and the egress policy checks what it resolved
// to). The name is mapped to 127.0.0.1 by a hosts file bind-mounted over
// /etc/hosts in a private mount namespace: nothing outside this process
// tree sees it, and no traffic leaves loopback.

// benchName is the upstream's name in benchmarks.
const benchName = "api.bench.test"

const (
	// hostsEnv is set in the namespaced child: the hosts file to
	// bind-mount over /etc/hosts.
	hostsEnv = "AGENT_VAULT_E2E_HOSTS"
	// noNamespaceEnv, if set, keeps benchmarks out of a namespace (they
	// then use the 127.0.0.1 literal).
	noNamespaceEnv = "AGENT_VAULT_E2E_NO_NAMESPACE"
)

// benchHost is the host benchmarks put in service definitions and
// URLs: benchName when it resolves to loopback here, else 127.0.0.1.
var benchHost = "127.0.0.1"

// benchHostNote says how benchHost was chosen, for the reports.
var benchHostNote = "services use the 127.0.0.1 literal"

// benchNamespace runs from TestMain. When benchmarks were asked for
// (-test.bench) it re-executes this binary in a new mount namespace and
// exits with the child's status; in that child it mounts the hosts
// file. If either step is impossible it says so and carries on with the
// IP literal.
func benchNamespace() {
	if hosts := os.Getenv(hostsEnv); hosts != "" {
		mountBenchHosts(hosts)
		return
	}
	flag.Parse()
	if f := flag.Lookup("test.bench"); f == nil || f.Value.String() == "" {
		return // plain tests: nothing to do
	}
	if os.Getenv(noNamespaceEnv) != "" {
		fallbackNote(noNamespaceEnv + " is set")
		return
	}
	code, err := runInHostsNamespace(os.Args[1:], nil)
	switch {
	case errors.Is(err, errChildFailed):
		fmt.Fprintln(os.Stderr, "benchmark child:", err)
		os.Exit(1)
	case err != nil:
		fallbackNote(err.Error())
		return
	}
	os.Exit(code)
}

// errChildFailed wraps a namespaced child that ran but could not report
// an exit status.
var errChildFailed = errors.New("namespaced child failed")

// runInHostsNamespace re-executes this test binary with args in a new
// mount namespace where benchName resolves to 127.0.0.1 (the child's
// TestMain mounts the hosts file: see mountBenchHosts), with extraEnv
// added, and returns its exit code. An error means the child could not
// be started there (nothing ran) or ended without a status.
func runInHostsNamespace(args, extraEnv []string) (int, error) {
	dir, err := os.MkdirTemp("", "agent-vault-bench-hosts-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	hosts := filepath.Join(dir, "hosts")
	orig, _ := os.ReadFile("/etc/hosts") // keep localhost and friends
	content := append(orig, []byte("\n# agent-vault benchmarks (private mount namespace)\n127.0.0.1\t"+benchName+"\n")...)
	if err := os.WriteFile(hosts, content, 0o644); err != nil {
		return 0, err
	}
	exe, err := os.Executable()
	if err != nil {
		return 0, err
	}
	cmd := exec.Command(exe, args...)
	cmd.Env = append(append(os.Environ(), extraEnv...), hostsEnv+"="+hosts)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	// Go unshares in the child before exec and marks / private (as
	// unshare(1) does), so the bind mount never reaches this namespace.
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("unshare unavailable: %w", err)
	}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGQUIT)
	go func() {
		for s := range sigs {
			cmd.Process.Signal(s)
		}
	}()
	err = cmd.Wait()
	signal.Stop(sigs)
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, nil
	case errors.As(err, &ee) && ee.ExitCode() >= 0:
		return ee.ExitCode(), nil
	default:
		return 1, fmt.Errorf("%w: %v", errChildFailed, err)
	}
}

// mountBenchHosts runs in the namespaced child. The mount namespace was
// unshared before exec, so every thread of this process shares it.
func mountBenchHosts(hosts string) {
	if err := syscall.Mount(hosts, "/etc/hosts", "", syscall.MS_BIND, ""); err != nil {
		fallbackNote("bind-mounting a hosts file over /etc/hosts failed: " + err.Error())
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	addrs, err := net.DefaultResolver.LookupHost(ctx, benchName)
	if err != nil || !slices.Equal(addrs, []string{"127.0.0.1"}) {
		fallbackNote(fmt.Sprintf("%s resolves to %v (%v) despite the hosts file", benchName, addrs, err))
		return
	}
	benchHost = benchName
	benchHostNote = "services use " + benchName + " -> 127.0.0.1 (hosts file bind-mounted in a private mount namespace)"
}

func fallbackNote(why string) {
	benchHostNote = "FALLBACK: no private DNS names (" + why + "); services use the 127.0.0.1 literal"
	fmt.Fprintln(os.Stderr, "bench:", benchHostNote)
}
