//go:build linux

package state

import (
	"context"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// cpuMeter measures the CPU a benchmark uses: this process's and, on
// PostgreSQL, its server's (the postmaster, the children it reaped and
// those alive).
type cpuMeter struct {
	postmaster int // 0: SQLite, or the server could not be found
	from       time.Duration
	ok         bool
}

func newCPUMeter(b *testing.B, db *DB) *cpuMeter {
	m := &cpuMeter{}
	if db.pg {
		var backend int
		if err := db.queryRow(context.Background(), "SELECT pg_backend_pid()").Scan(&backend); err != nil {
			b.Fatal(err)
		}
		if st, err := procStat(backend); err == nil {
			m.postmaster, _ = strconv.Atoi(st[1])
		}
	}
	return m
}

func (m *cpuMeter) start() { m.from, m.ok = m.total() }

// used is the CPU since start.
func (m *cpuMeter) used() (time.Duration, bool) {
	now, ok := m.total()
	return now - m.from, ok && m.ok
}

func (m *cpuMeter) total() (time.Duration, bool) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, false
	}
	total := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	if m.postmaster == 0 {
		return total, true
	}
	st, err := procStat(m.postmaster)
	if err != nil {
		return 0, false
	}
	total += ticks(st, 11, 12, 13, 14) // utime stime cutime cstime
	dirs, err := os.ReadDir("/proc")
	if err != nil {
		return 0, false
	}
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		if st, err := procStat(pid); err == nil && st[1] == strconv.Itoa(m.postmaster) {
			total += ticks(st, 11, 12)
		}
	}
	return total, true
}

// procStat returns /proc/pid/stat's fields after the command: [0] is
// the state, [1] the parent's pid, [11] utime and so on (man proc_pid_stat,
// numbered from 3).
func procStat(pid int) ([]string, error) {
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return nil, err
	}
	s := string(raw)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 15 {
		return nil, syscall.EINVAL
	}
	return f, nil
}

// ticks sums fields of clock ticks (USER_HZ, 100 on Linux).
func ticks(st []string, fields ...int) time.Duration {
	var n int64
	for _, i := range fields {
		v, _ := strconv.ParseInt(st[i], 10, 64)
		n += v
	}
	return time.Duration(n) * (time.Second / 100)
}
