//go:build unix

package launcher

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// syncBuffer is a bytes.Buffer that can be read while the launcher writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// waitScript runs until $1 exists.
const waitScript = `while [ ! -e "$1" ]; do sleep 0.02; done`

// runUntil runs cfg against api with a child that waits for a marker,
// creates the marker once until() holds, and returns what Run returned.
func runUntil(t *testing.T, api *fakeAPI, cfg Config, what string, until func() bool) (int, error, *syncBuffer) {
	t.Helper()
	marker := filepath.Join(t.TempDir(), "done")
	stderr := new(syncBuffer)
	cfg.Addr, cfg.Env, cfg.Stderr = api.srv.URL, baseEnv(), stderr
	if cfg.Token == "" {
		cfg.Token = testAdminToken
	}
	if cfg.TempDir == "" {
		cfg.TempDir = t.TempDir()
	}
	cfg.Command = []string{"/bin/sh", "-c", waitScript, "sh", marker}
	type result struct {
		code int
		err  error
	}
	done := make(chan result, 1)
	go func() {
		code, err := Run(context.Background(), cfg)
		done <- result{code, err}
	}()
	waitFor(t, what, 10*time.Second, until)
	if err := os.WriteFile(marker, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-done:
		assertNoSecrets(t, "stderr", stderr.String())
		return r.code, r.err, stderr
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return")
	}
	return 0, nil, nil
}

func TestRunRenewsLease(t *testing.T) {
	api := newFakeAPI(t)
	api.set(func(f *fakeAPI) { f.session.LeaseTimeout = "150ms" }) // renewed every 50ms
	code, err, stderr := runUntil(t, api, Config{}, "three renewals", func() bool { return api.renewCount() >= 3 })
	if code != 0 || err != nil {
		t.Fatalf("Run = %d, %v; stderr: %s", code, err, stderr)
	}
	if s := stderr.String(); s != "" {
		t.Errorf("stderr = %q, want nothing", s)
	}
	creates, _ := api.calls()
	if len(creates) != 1 || creates[0].raw["lease"] != true {
		t.Errorf("create = %+v, want a leased session asked for", creates)
	}
	// Renewals of our session only, every one before the revocation (Run
	// stops the renewal, and waits for it, before revoking).
	reqs := api.allRequests()
	n := len(reqs)
	if n < 5 || reqs[0] != "POST /api/v1/sessions" || reqs[n-1] != "DELETE /api/v1/sessions/"+testSessionID {
		t.Fatalf("requests = %q", reqs)
	}
	for _, r := range reqs[1 : n-1] {
		if r != "POST /api/v1/sessions/"+testSessionID+"/renew" {
			t.Errorf("unexpected request %q in %q", r, reqs)
		}
	}
}

// A renewal answered 410 means the broker ended the session: one warning,
// no more renewals, the child keeps running and its exit code counts.
func TestRunRenewalGoneWarnsOnce(t *testing.T) {
	api := newFakeAPI(t)
	api.set(func(f *fakeAPI) {
		f.session.LeaseTimeout = "90ms" // renewed every 30ms
		f.renewStatus = http.StatusGone
	})
	const warning = "av-launch: warning: the broker ended the session: session " + testSessionID + " has ended;"
	code, err, stderr := runUntil(t, api, Config{}, "a renewal", func() bool { return api.renewCount() >= 1 })
	if code != 0 || err != nil {
		t.Fatalf("Run = %d, %v; stderr: %s", code, err, stderr)
	}
	// Run's return waited for the renewal to end: its warning is out.
	if !strings.Contains(stderr.String(), warning) {
		t.Errorf("stderr = %q, want %q", stderr.String(), warning)
	}
	if n := strings.Count(stderr.String(), "the broker ended the session"); n != 1 {
		t.Errorf("warned %d times: %q", n, stderr.String())
	}
	if n := api.renewCount(); n != 1 {
		t.Errorf("renewals = %d, want 1 (none after the 410)", n)
	}
}

// Long enough for several renewal intervals: the 410 warning must still
// come once, and the renewals must stop at the first 410.
func TestRunRenewalGoneWhileChildRuns(t *testing.T) {
	api := newFakeAPI(t)
	api.set(func(f *fakeAPI) {
		f.session.LeaseTimeout = "60ms" // renewed every 20ms
		f.renewStatus = http.StatusGone
	})
	stderr := new(syncBuffer)
	code, err := Run(context.Background(), Config{
		Addr: api.srv.URL, Token: testAdminToken, Env: baseEnv(), TempDir: t.TempDir(), Stderr: stderr,
		Command: []string{"/bin/sh", "-c", "sleep 0.3"}, // 15 intervals
	})
	if code != 0 || err != nil {
		t.Fatalf("Run = %d, %v; stderr: %s", code, err, stderr)
	}
	if n := strings.Count(stderr.String(), "the broker ended the session"); n != 1 {
		t.Errorf("warned %d times: %q", n, stderr.String())
	}
	if n := api.renewCount(); n != 1 {
		t.Errorf("renewals = %d, want 1", n)
	}
}

// A server that does not lease the session av-launch asked to lease:
// fail closed. The session is revoked, nothing runs, exit 2.
func TestRunWithoutLeaseFails(t *testing.T) {
	for _, lease := range []string{"", "soon", "0s"} {
		api := newFakeAPI(t)
		api.set(func(f *fakeAPI) { f.session.LeaseTimeout = lease })
		marker := filepath.Join(t.TempDir(), "ran")
		tmp := t.TempDir()
		code, _, err := launch(t, api, Config{TempDir: tmp, Command: []string{"/bin/sh", "-c", `touch "$1"`, "sh", marker}})
		if code != ExitSetup || err == nil || !strings.HasPrefix(err.Error(), "the server did not lease the session") || !strings.Contains(err.Error(), "the session was revoked") {
			t.Errorf("lease_timeout %q: Run = %d, %v", lease, code, err)
		}
		if _, err := os.Stat(marker); err == nil {
			t.Errorf("lease_timeout %q: the command ran in a session without a lease", lease)
		}
		if _, deletes := api.calls(); len(deletes) != 1 || deletes[0] != testSessionID {
			t.Errorf("lease_timeout %q: deletes = %q, want the session revoked", lease, deletes)
		}
		if api.renewCount() != 0 {
			t.Error("renewed a session without a lease")
		}
		assertEmptyDir(t, tmp)
	}
}
