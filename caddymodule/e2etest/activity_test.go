package e2etest

import (
	"bufio"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/agentvault/caddy-agent-vault/caddymodule/apiwire"
)

// activityEntries polls GET /api/v1/activity?query on s until cond
// holds, and returns the list and its raw body.
func activityEntries(t *testing.T, s *server, query string, cond func([]apiwire.ActivityEntry) bool) ([]apiwire.ActivityEntry, string) {
	t.Helper()
	var list apiwire.ActivityList
	var body string
	ok := poll(15*time.Second, func() bool {
		r := s.must(s.admin(), "GET", "/api/v1/activity?"+query, nil, 200, &list)
		body = r.body
		return cond(list.Entries)
	})
	if !ok {
		t.Fatalf("GET /api/v1/activity?%s never held what was expected: %s", query, body)
	}
	return list.Entries, body
}

func findActivity(es []apiwire.ActivityEntry, match func(apiwire.ActivityEntry) bool) *apiwire.ActivityEntry {
	for i := range es {
		if match(es[i]) {
			return &es[i]
		}
	}
	return nil
}

// activityStream opens GET /api/v1/activity/stream?query on s and
// returns the activity events' data, in order. The stream answers once
// it has read the log, so every entry written after this returns is
// delivered.
func activityStream(t *testing.T, s *server, query string) <-chan apiwire.ActivityEntry {
	t.Helper()
	req, err := http.NewRequest("GET", "http://"+s.apiAddr+"/api/v1/activity/stream?"+query, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+s.adminToken())
	resp, err := (&http.Client{Transport: &http.Transport{Proxy: nil}}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("stream: %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	out := make(chan apiwire.ActivityEntry, 100)
	go func() {
		sc := bufio.NewScanner(resp.Body)
		event := ""
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "event: "):
				event = line[len("event: "):]
			case strings.HasPrefix(line, "data: ") && event == "activity":
				var e apiwire.ActivityEntry
				if json.Unmarshal([]byte(line[len("data: "):]), &e) == nil {
					out <- e
				}
			case line == "":
				event = ""
			}
		}
	}()
	return out
}

// waitStream waits for an entry match accepts.
func waitStream(t *testing.T, ch <-chan apiwire.ActivityEntry, what string, match func(apiwire.ActivityEntry) bool) apiwire.ActivityEntry {
	t.Helper()
	deadline := time.After(15 * time.Second)
	for {
		select {
		case e := <-ch:
			if match(e) {
				return e
			}
		case <-deadline:
			t.Fatalf("the stream did not deliver %s", what)
		}
	}
}

// An agent's requests through the proxy (curl under av-launch) are in
// the activity log: the forwarded one and the refused one, without the
// query or any secret; the live stream delivers a new one.
func TestActivityLog(t *testing.T) {
	ca := newTestCA(t)
	up := newUpstream(t, ca, true)
	other := newUpstream(t, ca, true)
	s := startServer(t, ca, serverOpts{})
	s.putCredential("GITHUB_TOKEN", githubSecret)
	s.putService("github", bearerService(up.hostPort(), "GITHUB_TOKEN"))

	out, errOut, code := s.launch(nil, "curl", "-sS", "--fail-with-body", "https://"+up.hostPort()+"/user?page=2&access_token=q")
	if code != 0 {
		t.Fatalf("av-launch curl: exit %d\n%s\n%s", code, out, errOut)
	}
	if _, _, code := s.launch(nil, "curl", "-sS", "--fail-with-body", "https://"+other.hostPort()+"/"); code == 0 {
		t.Fatal("curl to an uncovered host succeeded")
	}
	entries, body := activityEntries(t, s, "", func(es []apiwire.ActivityEntry) bool {
		return findActivity(es, func(e apiwire.ActivityEntry) bool { return e.Decision == "forwarded" && e.Path == "/user" }) != nil &&
			findActivity(es, func(e apiwire.ActivityEntry) bool { return e.Code == "uncovered_host" }) != nil
	})
	fwd := findActivity(entries, func(e apiwire.ActivityEntry) bool { return e.Decision == "forwarded" && e.Path == "/user" })
	if fwd.Service != "github" || fwd.Status != 200 || fwd.Session == "" || fwd.Instance == "" || fwd.Client != "127.0.0.1" ||
		len(fwd.Credentials) != 1 || fwd.Credentials[0] != "GITHUB_TOKEN" || fwd.Method != "GET" {
		t.Errorf("forwarded entry %+v", fwd)
	}
	ref := findActivity(entries, func(e apiwire.ActivityEntry) bool { return e.Code == "uncovered_host" })
	if ref.Decision != "refused" || ref.Status != 403 || ref.Method != "GET" || ref.Path != "/" || !strings.Contains(ref.Reason, "no service") {
		t.Errorf("refused entry %+v", ref)
	}
	for _, secret := range []string{githubSecret, "access_token", "page=2", s.adminToken()} {
		mustNotContain(t, "the activity list", body, secret)
	}
	refused, _ := activityEntries(t, s, "decision=refused", func(es []apiwire.ActivityEntry) bool { return len(es) > 0 })
	for _, e := range refused {
		if e.Decision != "refused" {
			t.Errorf("?decision=refused lists %+v", e)
		}
	}

	stream := activityStream(t, s, "service=github")
	if _, _, code := s.launch(nil, "curl", "-sS", "--fail-with-body", "https://"+up.hostPort()+"/streamed"); code != 0 {
		t.Fatal("curl failed")
	}
	waitStream(t, stream, "the new request", func(e apiwire.ActivityEntry) bool { return e.Path == "/streamed" && e.Decision == "forwarded" })
}

// In a cluster (two brokers on one PostgreSQL database), what broker B
// served is listed and streamed by broker A.
func TestClusterActivity(t *testing.T) {
	c := newCluster(t, 0)
	up := newUpstream(t, c.ca, true)
	brokers := c.start(t, 2)
	a, b := brokers[0], brokers[1]
	a.putService("docs", passthrough(up.hostPort()))
	within(t, time.Now(), 5*time.Second, "B knows service docs", func() bool {
		return strings.Contains(b.call(b.admin(), "GET", "/api/v1/services", nil).body, `"docs"`)
	})
	stream := activityStream(t, a, "decision=refused")
	sess := b.mintSession(b.admin(), apiwire.SessionRequest{TTL: "10m"})
	if code, _, body := askRefused(t, b, "uncovered.example:443", sess.Token); code != http.StatusForbidden {
		t.Fatalf("GET through B: %d %s", code, body)
	}
	var bInstance string
	entries, _ := activityEntries(t, a, "session="+sess.ID, func(es []apiwire.ActivityEntry) bool { return len(es) > 0 })
	bInstance = entries[0].Instance
	if entries[0].Host != "uncovered.example" || entries[0].Code != "uncovered_host" {
		t.Errorf("A lists %+v", entries[0])
	}
	got := waitStream(t, stream, "B's refusal", func(e apiwire.ActivityEntry) bool { return e.Session == sess.ID })
	if got.Instance != bInstance || got.Instance == "" {
		t.Errorf("streamed entry %+v, want instance %q", got, bInstance)
	}
	// A's own entries carry another instance: the two are told apart.
	sessA := a.mintSession(a.admin(), apiwire.SessionRequest{TTL: "10m"})
	askRefused(t, a, "uncovered.example:443", sessA.Token)
	mine, _ := activityEntries(t, a, "session="+sessA.ID, func(es []apiwire.ActivityEntry) bool { return len(es) > 0 })
	if mine[0].Instance == bInstance {
		t.Errorf("A's and B's entries name the same instance %q", bInstance)
	}
}
