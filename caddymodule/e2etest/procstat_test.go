package e2etest

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// What benchmarks observe of a child process from the outside: CPU
// time, resident memory and open descriptors from /proc, and (for the
// agent-vault server) goroutines and profiles from Caddy's admin
// endpoint, which Caddyfile.example puts on a unix socket in the data
// dir.

// clockTick is USER_HZ, the unit of utime and stime in /proc/<pid>/stat
// (100 on every Linux architecture Go supports).
const clockTick = 10 * time.Millisecond

// procCPU is the process's user plus system CPU time so far.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name is in parentheses and may hold spaces: fields
	// are counted from the last ')'. After it come field 3 (state) on;
	// utime and stime are fields 14 and 15.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("odd /proc/%d/stat", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("short /proc/%d/stat", pid)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("bad utime/stime in /proc/%d/stat", pid)
	}
	return time.Duration(ut+st) * clockTick, nil
}

// procStatusKiB reads a "Name: N kB" line of /proc/<pid>/status.
func procStatusKiB(pid int, name string) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && k == name {
			return strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", name, pid)
}

// procRSSKiB is VmRSS.
func procRSSKiB(pid int) (int64, error) { return procStatusKiB(pid, "VmRSS") }

// procFDs counts the process's open file descriptors.
func procFDs(pid int) (int, error) {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	return len(ents), err
}

// procNofile is the process's soft RLIMIT_NOFILE, from /proc/<pid>/limits.
func procNofile(pid int) (string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid))
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "Max open files") {
			f := strings.Fields(strings.TrimPrefix(line, "Max open files"))
			if len(f) > 0 {
				return f[0], nil
			}
		}
	}
	return "", fmt.Errorf("no open files limit in /proc/%d/limits", pid)
}

// raiseNofile lifts this process's RLIMIT_NOFILE to at least want (as
// root the hard limit can go up too). Children started afterwards
// inherit it: after an explicit Setrlimit, Go no longer restores the
// original soft limit in children. It returns the soft limit in force.
func raiseNofile(want uint64) (uint64, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, err
	}
	if lim.Cur >= want {
		// Still set it, so children get this soft limit and not the
		// one this process started with.
		return lim.Cur, syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
	n := syscall.Rlimit{Cur: want, Max: max(lim.Max, want)}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &n); err == nil {
		return want, nil
	}
	n = syscall.Rlimit{Cur: lim.Max, Max: lim.Max} // not root: as far as allowed
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &n); err != nil {
		return lim.Cur, err
	}
	return lim.Max, nil
}

// adminClient talks to a Caddy admin endpoint on a unix socket. It
// keeps no connection open between calls, so it adds nothing to the
// server's descriptor count at rest.
func adminClient(sock string) *http.Client {
	return &http.Client{
		Transport: &http.Transport{
			Proxy:             nil,
			DisableKeepAlives: true,
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", sock)
			},
		},
	}
}

// adminGet fetches path from the admin endpoint on sock.
func adminGet(sock, path string, timeout time.Duration) ([]byte, error) {
	c := adminClient(sock)
	c.Timeout = timeout
	resp, err := c.Get("http://caddy-admin" + path)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %d %s", path, resp.StatusCode, bytes.TrimSpace(b))
	}
	return b, nil
}

// serverGoroutines is the server's goroutine count from its admin
// endpoint's goroutine profile. The admin request itself is served by
// one or two of them, the same in every measurement.
func serverGoroutines(sock string) (int, error) {
	b, err := adminGet(sock, "/debug/pprof/goroutine?debug=1", 30*time.Second)
	if err != nil {
		return 0, err
	}
	line, _, _ := bytes.Cut(b, []byte("\n"))
	const prefix = "goroutine profile: total "
	if !bytes.HasPrefix(line, []byte(prefix)) {
		return 0, fmt.Errorf("unexpected goroutine profile: %q", line)
	}
	return strconv.Atoi(string(line[len(prefix):]))
}

// goMem is what the server's runtime says of its memory.
type goMem struct{ heapInuse, stackInuse int64 } // bytes

// serverGoMem reads HeapInuse and StackInuse (runtime.MemStats, at the
// end of the heap profile) just after a forced GC: ?gc=1 runs one
// before the profile is written.
func serverGoMem(sock string) (goMem, error) {
	b, err := adminGet(sock, "/debug/pprof/heap?gc=1&debug=1", 60*time.Second)
	if err != nil {
		return goMem{}, err
	}
	var m goMem
	var haveHeap, haveStack bool
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "# HeapInuse = "); ok {
			m.heapInuse, err = strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			haveHeap = err == nil
		}
		if v, ok := strings.CutPrefix(line, "# Stack = "); ok { // "inuse / sys"
			inuse, _, _ := strings.Cut(v, " / ")
			m.stackInuse, err = strconv.ParseInt(strings.TrimSpace(inuse), 10, 64)
			haveStack = err == nil
		}
	}
	if !haveHeap || !haveStack {
		return m, fmt.Errorf("no HeapInuse or Stack in the heap profile")
	}
	return m, nil
}

// serverCPUProfile records a CPU profile of the server for d into file.
func serverCPUProfile(sock string, d time.Duration, file string) error {
	b, err := adminGet(sock, fmt.Sprintf("/debug/pprof/profile?seconds=%d", int(d.Seconds())), d+time.Minute)
	if err != nil {
		return err
	}
	return os.WriteFile(file, b, 0o644)
}
