package e2etest

// Issue 10, av-launch without the admin token: with an agent token
// (AGENT_VAULT_TOKEN, --token-file, or the local agent's agent.token that
// `make run` writes), with a session minted elsewhere
// (--session-token-file), refusing an empty or unknown --services, and a
// leased session that ends when av-launch is SIGKILLed.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/agentvault/caddy-agent-vault/caddymodule/apiwire"
)

// launchWorld is a server with an upstream behind service github
// (credential GITHUB_TOKEN) and a passthrough service npm.
type launchWorld struct {
	s  *server
	up *upstream
}

func newLaunchWorld(t *testing.T) launchWorld {
	ca := newTestCA(t)
	up := newUpstream(t, ca, true)
	drainHits(t, up)
	s := startServer(t, ca, serverOpts{})
	s.putCredential("GITHUB_TOKEN", githubSecret)
	s.putService("github", bearerService(up.hostPort(), "GITHUB_TOKEN"))
	s.putService("npm", passthrough("registry.npm.example"))
	return launchWorld{s: s, up: up}
}

// curlAndEnv is a child that fetches the upstream, then prints its
// environment (placeholders and proxy URL, never a secret).
func (w launchWorld) curlAndEnv() []string {
	return []string{"sh", "-c", `curl -sS --fail-with-body https://` + w.up.hostPort() + `/user && echo && env`}
}

// newSessionsOf lists the sessions of agent that are not in before.
func newSessionsOf(list []apiwire.SessionInfo, before []apiwire.SessionInfo, agent string) []apiwire.SessionInfo {
	var out []apiwire.SessionInfo
	for _, se := range list {
		if se.Agent == agent && !slices.ContainsFunc(before, func(b apiwire.SessionInfo) bool { return b.ID == se.ID }) {
			out = append(out, se)
		}
	}
	return out
}

func TestLaunchWithAgentToken(t *testing.T) {
	w := newLaunchWorld(t)
	s := w.s
	a := s.createAgent("ci-bot", []string{"github"}, "1h")
	tokenFile := writeSecretFile(t, "agent.token", a.Token+"\n")

	for _, how := range []struct {
		name string
		env  []string
		args []string
	}{
		{"AGENT_VAULT_TOKEN", []string{"AGENT_VAULT_TOKEN=" + a.Token}, nil},
		{"--token-file", nil, []string{"--token-file", tokenFile}},
	} {
		t.Run(how.name, func(t *testing.T) {
			before := s.sessionList()
			hits := w.up.count()
			run := s.runLaunch(launchEnv(t, how.env...), append(append(how.args, "--ttl", "10m", "--"), w.curlAndEnv()...)...)
			if run.code != 0 {
				t.Fatalf("av-launch with ci-bot's token: %s\nserver: %s", run, s.logs.String())
			}
			mustContain(t, "child output", run.stdout, `"login":"octocat"`)
			if w.up.count() != hits+1 || w.up.last(t).Header.Get("Authorization") != "Bearer "+githubSecret {
				t.Fatalf("the upstream did not get GITHUB_TOKEN injected (hits %d -> %d)", hits, w.up.count())
			}
			mustNotContain(t, "child env", run.stdout, a.Token)
			mustNotContain(t, "child env", run.stdout, githubSecret)
			mustContain(t, "child env", run.stdout, "GITHUB_TOKEN=agvph_")
			// The session was ci-bot's, leased, scoped to what ci-bot may
			// use, and ended when the child exited.
			mine := newSessionsOf(s.sessionList(), before, "ci-bot")
			if len(mine) != 1 {
				t.Fatalf("av-launch left %d new sessions of ci-bot, want 1: %+v", len(mine), mine)
			}
			se := mine[0]
			if se.LeaseExpiresAt == nil {
				t.Errorf("av-launch's session %s has no lease", se.ID)
			}
			if !slices.Equal(se.Services, []string{"github"}) {
				t.Errorf("av-launch's session has services %v, want [github]", se.Services)
			}
			if se.Status != apiwire.SessionRevoked {
				t.Errorf("av-launch's session is %s after the child exited, want revoked", se.Status)
			}
		})
	}

	// Out of scope: the server refuses, av-launch says why and starts nothing.
	marker := filepath.Join(t.TempDir(), "ran")
	run := s.runLaunch(launchEnv(t, "AGENT_VAULT_TOKEN="+a.Token), "--services", "npm", "--", "sh", "-c", "touch "+marker)
	if run.code == 0 {
		t.Fatalf("av-launch --services npm with ci-bot (github only) succeeded: %s", run)
	}
	mustContain(t, "av-launch error", run.stderr, "npm")
	if _, err := os.Stat(marker); err == nil {
		t.Error("the child ran although the session was refused")
	}
	// An agent token that the server does not know: 401, said so.
	run = s.runLaunch(launchEnv(t, "AGENT_VAULT_TOKEN=avt_"+randomB64(32)), "--", "sh", "-c", "touch "+marker)
	if run.code == 0 {
		t.Fatalf("av-launch with an unknown token succeeded: %s", run)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Error("the child ran with an unknown token")
	}
	mustContain(t, "av-launch error", run.stderr, "401")
}

// `make run` runs Caddyfile.example: its `local_agent local` creates the
// agent local (every service) with its token in <data dir>/agent.token,
// which av-launch uses when given no token.
func TestLaunchLocalAgentDefault(t *testing.T) {
	example, err := os.ReadFile(filepath.Join(repoRoot, "Caddyfile.example"))
	if err != nil {
		t.Fatal(err)
	}
	mustContain(t, "Caddyfile.example", string(example), "local_agent local")
	w := newLaunchWorld(t)
	s := w.s
	path := filepath.Join(s.dataDir, "agent.token")
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatalf("agent.token: %v\n%s", err, s.logs.String())
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("agent.token has mode %v, want 0600", fi.Mode().Perm())
	}
	b, _ := os.ReadFile(path)
	token := strings.TrimSpace(string(b))
	if !strings.HasPrefix(token, "avt_") || tokenBits(token) < 128 {
		t.Fatalf("agent.token holds %q, want an avt_ token of >= 128 bits", token)
	}
	var local apiwire.Agent
	s.must(s.admin(), "GET", "/api/v1/agents/local", nil, 200, &local)
	if !slices.Equal(local.Services, []string{apiwire.AllServices}) {
		t.Errorf("agent local has services %v, want [*]", local.Services)
	}

	// av-launch with no token option: agent.token of the data dir, not
	// admin.token (which is there too).
	before := s.sessionList()
	run := s.runLaunch(launchEnv(t, "AGENT_VAULT_DATA_DIR="+s.dataDir), append([]string{"--"}, w.curlAndEnv()...)...)
	if run.code != 0 {
		t.Fatalf("av-launch with the data dir's agent.token: %s", run)
	}
	if w.up.last(t).Header.Get("Authorization") != "Bearer "+githubSecret {
		t.Fatal("the upstream did not get GITHUB_TOKEN")
	}
	if mine := newSessionsOf(s.sessionList(), before, "local"); len(mine) != 1 || !slices.Contains(mine[0].Services, "github") {
		t.Fatalf("av-launch's session is not local's (github included): %+v", newSessionsOf(s.sessionList(), before, ""))
	}
	mustNotContain(t, "child env", run.stdout, token)
	mustNotContain(t, "child env", run.stdout, s.adminToken())

	// A restart keeps the agent and its token: no second local, no new file.
	s.stop()
	s2 := startServer(t, newTestCA(t), serverOpts{dataDir: s.dataDir})
	b2, _ := os.ReadFile(path)
	if strings.TrimSpace(string(b2)) != token {
		t.Fatal("agent.token changed across a restart")
	}
	s2.must(bearer(token), "GET", "/api/v1/sessions", nil, 200, nil)
	entries, _ := s2.auditAll(url.Values{"action": {"agent.create"}, "target": {"local"}})
	if len(findAudit(entries, "agent.create", "local")) != 1 {
		t.Errorf("agent local was created %d times, want once: %+v", len(findAudit(entries, "agent.create", "local")), entries)
	}

	// agent.token gone, agent there: the server never rotates by itself
	// (other brokers hold the token); it warns how to get a new one.
	s2.stop()
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	s3 := startServer(t, newTestCA(t), serverOpts{dataDir: s.dataDir})
	if _, err := os.Stat(path); err == nil {
		t.Error("the server wrote a new agent.token for an existing agent (a rotation behind the operator's back)")
	}
	s3.must(bearer(token), "GET", "/api/v1/sessions", nil, 200, nil)
	mustContain(t, "server log", s3.logs.String(), "agent-vault agent rotate local")
}

// An orchestrator mints the session; av-launch only uses it.
func TestLaunchPreMintedSession(t *testing.T) {
	w := newLaunchWorld(t)
	s := w.s
	a := s.createAgent("orchestrated", []string{"github"}, "")
	sess := s.mintSession(bearer(a.Token), apiwire.SessionRequest{TTL: "10m"})
	answer, _ := json.Marshal(sess)

	for _, form := range []struct{ name, content string }{
		{"bare token", sess.Token + "\n"},
		{"JSON answer", string(answer)},
	} {
		t.Run(form.name, func(t *testing.T) {
			f := writeSecretFile(t, "session", form.content)
			before := s.sessionList()
			auditBefore, _ := s.auditAll(url.Values{})
			hits := w.up.count()
			// No AGENT_VAULT_TOKEN, no token file, a HOME without a data dir.
			run := s.runLaunch(launchEnv(t), append([]string{"--session-token-file", f, "--"}, w.curlAndEnv()...)...)
			if run.code != 0 {
				t.Fatalf("av-launch --session-token-file: %s\nserver: %s", run, s.logs.String())
			}
			if w.up.count() != hits+1 || w.up.last(t).Header.Get("Authorization") != "Bearer "+githubSecret {
				t.Fatal("the upstream did not get GITHUB_TOKEN through the pre-minted session")
			}
			mustContain(t, "child env", run.stdout, "av:"+sess.Token+"@")
			mustContain(t, "child env", run.stdout, "GITHUB_TOKEN="+sess.Placeholders["GITHUB_TOKEN"])
			// av-launch created, renewed and revoked nothing.
			after := s.sessionList()
			if len(after) != len(before) {
				t.Errorf("av-launch with a pre-minted session changed the session list: %d -> %d", len(before), len(after))
			}
			if se, ok := s.sessionInfo(sess.ID); !ok || se.Status != apiwire.SessionActive {
				t.Errorf("the pre-minted session is %+v after av-launch exited, want active", se)
			}
			auditAfter, _ := s.auditAll(url.Values{})
			if len(auditAfter) < len(auditBefore) {
				t.Fatalf("the audit trail shrank: %d -> %d entries", len(auditBefore), len(auditAfter))
			}
			for _, e := range auditAfter[:len(auditAfter)-len(auditBefore)] {
				if strings.HasPrefix(e.Action, "session.") {
					t.Errorf("av-launch with a pre-minted session caused %s %s", e.Action, e.Target)
				}
			}
		})
	}
	// A session token that is not (or no longer) valid: an error, nothing runs.
	marker := filepath.Join(t.TempDir(), "ran")
	s.must(s.admin(), "DELETE", "/api/v1/sessions/"+sess.ID, nil, http.StatusNoContent, nil)
	f := writeSecretFile(t, "revoked", sess.Token)
	run := s.runLaunch(launchEnv(t), "--session-token-file", f, "--", "sh", "-c", "touch "+marker)
	if run.code == 0 {
		t.Fatalf("av-launch with a revoked session succeeded: %s", run)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Error("the child ran with a revoked session")
	}
}

// --services with nothing in it, an empty name or an unknown one is an
// error: exit non-zero, the child never runs, no session is left.
func TestLaunchRefusesBadServices(t *testing.T) {
	w := newLaunchWorld(t)
	s := w.s
	a := s.createAgent("everything", []string{apiwire.AllServices}, "")
	for _, list := range []string{"", ",", " ", "github,,npm", "github,", "nosuch", "github,nosuch"} {
		marker := filepath.Join(t.TempDir(), "ran")
		before := s.sessionList()
		run := s.runLaunch(launchEnv(t, "AGENT_VAULT_TOKEN="+a.Token), "--services", list, "--", "sh", "-c", "touch "+marker)
		if run.code == 0 {
			t.Errorf("av-launch --services %q: exit 0, want an error", list)
		}
		if strings.TrimSpace(run.stderr) == "" {
			t.Errorf("av-launch --services %q: no message", list)
		}
		if _, err := os.Stat(marker); err == nil {
			t.Errorf("av-launch --services %q: the child ran", list)
		}
		for _, se := range newSessionsOf(s.sessionList(), before, "everything") {
			if se.Status == apiwire.SessionActive {
				t.Errorf("av-launch --services %q left session %s active", list, se.ID)
			}
		}
		if strings.Contains(list, "nosuch") {
			mustContain(t, "av-launch error", run.stderr, "nosuch")
		}
	}
}

// SIGKILL av-launch while its child runs: the child dies with it, the
// lease lapses (30s by default) and the broker ends the session within
// 40s, closing its tunnels; the next av-launch removes the dead one's
// temp CA files.
func TestLeaseEndsWhenLauncherKilled(t *testing.T) {
	t.Parallel() // mostly waiting for the lease
	w := newLaunchWorld(t)
	s := w.s
	a := s.createAgent("leased", []string{apiwire.AllServices}, "")
	tmp := t.TempDir()
	work := t.TempDir()
	pidFile, proxyFile := filepath.Join(work, "pid"), filepath.Join(work, "proxy")
	child := `echo "$HTTPS_PROXY" > ` + proxyFile + `.tmp && mv ` + proxyFile + `.tmp ` + proxyFile +
		` && echo $$ > ` + pidFile + `.tmp && mv ` + pidFile + `.tmp ` + pidFile + ` && exec sleep 300`
	cmd := exec.Command(bin("av-launch"), "--addr", "http://"+s.apiAddr, "--ttl", "1h", "--", "sh", "-c", child)
	cmd.Env = launchEnv(t, "AGENT_VAULT_TOKEN="+a.Token, "TMPDIR="+tmp)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() { cmd.Process.Kill(); <-exited })
	childPid := 0
	if _, err := fmt.Sscan(waitFile(t, pidFile, 30*time.Second), &childPid); err != nil || childPid <= 0 {
		t.Fatalf("child pid: %v\n%s", err, out.String())
	}
	t.Cleanup(func() { killProcess(childPid) })
	token := proxyToken(t, waitFile(t, proxyFile, 5*time.Second))

	var se apiwire.SessionInfo
	for _, x := range s.sessionList() {
		if x.Agent == "leased" && x.Status == apiwire.SessionActive {
			se = x
		}
	}
	if se.ID == "" || se.LeaseExpiresAt == nil {
		t.Fatalf("av-launch's session is not listed active with a lease: %+v", s.sessionList())
	}
	if d := time.Until(*se.LeaseExpiresAt); d > 31*time.Second || d < 0 {
		t.Errorf("lease_expires_at is %v away, want within the default 30s lease", d)
	}
	// av-launch renews: the lease moves forward while it lives.
	first := *se.LeaseExpiresAt
	if !poll(25*time.Second, func() bool {
		x, ok := s.sessionInfo(se.ID)
		return ok && x.LeaseExpiresAt != nil && x.LeaseExpiresAt.After(first)
	}) {
		t.Fatalf("the lease of %s was not renewed within 25s (lease_expires_at stays %v)\n%s", se.ID, first, out.String())
	}
	if x, _ := s.sessionInfo(se.ID); x.Status != apiwire.SessionActive {
		t.Fatalf("the session ended while av-launch renewed it: %+v", x)
	}
	stale, _ := os.ReadDir(tmp)
	if len(stale) == 0 {
		t.Fatal("av-launch wrote no CA file into TMPDIR; the stale-file check would prove nothing")
	}
	// A tunnel of the session (an idle upgraded connection: it ends only
	// when someone closes it), open when the lease lapses.
	st := idleTunnel(t, s, session{ID: se.ID, Token: token, CAPEM: getCA(t, s)}, w.up.hostPort(), 2*time.Minute)

	killed := time.Now()
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-exited
	if !poll(10*time.Second, func() bool { return processGone(childPid) }) {
		t.Fatalf("the child (pid %d) still runs 10s after av-launch was killed", childPid)
	}
	t.Logf("child gone %v after the kill", time.Since(killed).Round(time.Millisecond))
	within(t, killed, 40*time.Second, "the leased session revoked after av-launch's SIGKILL", func() bool {
		x, ok := s.sessionInfo(se.ID)
		return ok && x.Status == apiwire.SessionRevoked
	})
	if code, body, _ := connectStatus(s.proxyAddr, w.up.hostPort(), token); code != http.StatusProxyAuthRequired {
		t.Errorf("the lapsed session at the proxy: %d %q, want 407", code, body)
	}
	select {
	case at := <-st.ended:
		if d := at.Sub(killed); d < 15*time.Second {
			t.Errorf("the session's tunnel ended %v after the kill, before its lease could lapse (a test fault?)", d)
		}
	case <-time.After(5 * time.Second):
		t.Error("the session's open tunnel stayed open after its lease lapsed")
	}
	entries, _ := s.auditAll(url.Values{"action": {"session.lease_expired"}})
	if len(findAudit(entries, "session.lease_expired", se.ID)) != 1 {
		t.Errorf("no session.lease_expired audit entry for %s: %+v", se.ID, entries)
	}

	// The next av-launch removes the dead one's temp files, and its own at exit.
	run := s.runLaunch(launchEnv(t, "AGENT_VAULT_TOKEN="+a.Token, "TMPDIR="+tmp), "--", "true")
	if run.code != 0 {
		t.Fatalf("second av-launch: %s", run)
	}
	left, _ := os.ReadDir(tmp)
	for _, e := range left {
		t.Errorf("%s is still in TMPDIR after the next av-launch (stale files of a dead av-launch are removed at start)", e.Name())
	}
}

// A session minted through the API without a lease keeps its TTL: no
// renewal needed, none possible.
func TestUnleasedSessionKeepsTTL(t *testing.T) {
	t.Parallel()
	w := newLaunchWorld(t)
	s := w.s
	plain := s.mintSession(s.admin(), apiwire.SessionRequest{TTL: "10m"})
	if plain.LeaseTimeout != "" || plain.LeaseExpiresAt != nil {
		t.Errorf("a session minted without lease has lease_timeout %q lease_expires_at %v", plain.LeaseTimeout, plain.LeaseExpiresAt)
	}
	if r := s.call(s.admin(), "POST", "/api/v1/sessions/"+plain.ID+"/renew", nil); r.status != http.StatusConflict {
		t.Errorf("renewing a session without a lease: %s, want 409", r)
	}
	leased := s.mintSession(s.admin(), apiwire.SessionRequest{TTL: "10m", Lease: true})
	if d, err := time.ParseDuration(leased.LeaseTimeout); err != nil || d != 30*time.Second || leased.LeaseExpiresAt == nil {
		t.Errorf("a leased session: lease_timeout %q lease_expires_at %v, want 30s and a time", leased.LeaseTimeout, leased.LeaseExpiresAt)
	}
	s.must(s.admin(), "DELETE", "/api/v1/sessions/"+leased.ID, nil, http.StatusNoContent, nil)
	if r := s.call(s.admin(), "POST", "/api/v1/sessions/"+leased.ID+"/renew", nil); r.status != http.StatusGone {
		t.Errorf("renewing a revoked session: %s, want 410", r)
	}
	// 35s later (past any lease), the unleased session still works.
	<-time.After(35 * time.Second) // wall-clock time passing is the point, not a wait for another goroutine
	if code, _, _ := connectStatus(s.proxyAddr, w.up.hostPort(), plain.Token); code != http.StatusOK {
		t.Errorf("an unleased session 35s after it was minted: CONNECT %d, want 200", code)
	}
}

// idleTunnel opens an intercepted tunnel with sess's token, upgrades a
// request to /ws (the upstream then waits for bytes that never come)
// and watches for its end; hold bounds the test, not the tunnel.
func idleTunnel(t *testing.T, s *server, sess session, target string, hold time.Duration) stream {
	t.Helper()
	resp, conn := rawConnect(t, s.proxyAddr, target, basicAuth(sess.Token))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("CONNECT %s: %d", target, resp.StatusCode)
	}
	conn.SetDeadline(time.Now().Add(hold))
	tc, err := tlsOverTunnel(t, conn, sess, target[:strings.LastIndex(target, ":")])
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(tc, "GET /ws HTTP/1.1\r\nHost: "+target+"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
	br := bufio.NewReader(tc)
	r, err := http.ReadResponse(br, nil)
	if err != nil || r.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade in a tunnel: %v %v", r, err)
	}
	return watchEnd("idle upgraded connection in a CONNECT tunnel", br)
}
