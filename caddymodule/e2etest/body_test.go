package e2etest

// Placeholders in request bodies, through real clients under
// av-launch: curl's JSON, form and multipart bodies reach a bound
// service with the secret (and a Content-Length that fits it); toward
// a service that does not use the credential they are refused and the
// upstream is never reached; python3 sends a placeholder split across
// chunks of a chunked upload.

import (
	"strings"
	"testing"
)

func TestBodyPlaceholdersJourney(t *testing.T) {
	ca := newTestCA(t)
	api, other := newUpstream(t, ca, true), newUpstream(t, ca, true)
	s := startServer(t, ca, serverOpts{})
	s.putCredential("GITHUB_TOKEN", githubSecret)
	s.putCredential("OTHER_KEY", "other-value-1234567")
	s.putService("github", bearerService(api.hostPort(), "GITHUB_TOKEN"))
	s.putService("other", bearerService(other.hostPort(), "OTHER_KEY"))
	a, o := "https://"+api.hostPort(), "https://"+other.hostPort()

	script := strings.Join([]string{
		`curl -sS --fail-with-body -H 'Content-Type: application/json' -d "{\"token\":\"$GITHUB_TOKEN\",\"n\":1}" ` + a + `/json`,
		`curl -sS --fail-with-body -d "grant_type=client_credentials&client_secret=$GITHUB_TOKEN" ` + a + `/form`,
		`curl -sS --fail-with-body -F "token=$GITHUB_TOKEN" -F "note=hello" ` + a + `/multipart`,
		`python3 -c '
import base64, http.client, os, ssl, urllib.parse
u = urllib.parse.urlsplit(os.environ["HTTPS_PROXY"])
c = http.client.HTTPSConnection(u.hostname, u.port, context=ssl.create_default_context())
auth = base64.b64encode((u.username + ":" + u.password).encode()).decode()
host, port = "` + api.hostPort() + `".rsplit(":", 1)
c.set_tunnel(host, int(port), headers={"Proxy-Authorization": "Basic " + auth})
body = ("{\"k\":\"" + os.environ["GITHUB_TOKEN"] + "\"}").encode()
chunks = (body[i:i+5] for i in range(0, len(body), 5))
c.request("POST", "/chunked", body=chunks, headers={"Content-Type": "application/json"}, encode_chunked=True)
print("chunked", c.getresponse().status)
'`,
		`echo; curl -sS -w '\n%{http_code}\n' -H 'Content-Type: application/json' -d "{\"token\":\"$GITHUB_TOKEN\"}" ` + o + `/json`,
	}, "; ")
	out, errOut, code := s.launch(nil, "sh", "-c", script)
	if code != 0 {
		t.Fatalf("the agent: exit %d\n%s\n%s", code, out, errOut)
	}
	mustContain(t, "the refused body", out, "agent-vault: credential GITHUB_TOKEN is not bound to https://"+other.hostPort())
	mustContain(t, "the refused body", out, "\n403\n")
	mustContain(t, "python3's chunked upload", out, "chunked 200")
	if other.count() != 0 {
		t.Fatalf("the unbound service got %d requests", other.count())
	}
	want := map[string]string{
		"/json":      `{"token":"` + githubSecret + `","n":1}`,
		"/form":      "grant_type=client_credentials&client_secret=" + githubSecret,
		"/multipart": "name=\"token\"\r\n\r\n" + githubSecret + "\r\n",
		"/chunked":   `{"k":"` + githubSecret + `"}`,
	}
	api.mu.Lock()
	reqs := append([]seen(nil), api.reqs...)
	api.mu.Unlock()
	for _, r := range reqs {
		w, ok := want[r.Path]
		if !ok {
			continue
		}
		delete(want, r.Path)
		if !strings.Contains(r.Body, w) || strings.Contains(r.Body, "agvph_") {
			t.Errorf("%s: the upstream got %q, want it to hold %q", r.Path, r.Body, w)
		}
		if r.ContentLength >= 0 && r.ContentLength != int64(len(r.Body)) {
			t.Errorf("%s: Content-Length %d for a body of %d bytes", r.Path, r.ContentLength, len(r.Body))
		}
	}
	for path := range want {
		t.Errorf("the upstream never got %s", path)
	}
	mustNotContain(t, "the agent's output", out+errOut, githubSecret)
}
