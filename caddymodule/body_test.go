package caddymodule

import (
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/agentvault/caddy-agent-vault/caddymodule/services"
	"github.com/agentvault/caddy-agent-vault/storebackends"
)

// bodyPipeline: service a (A_TOKEN, bound to upA) and service b
// (B_TOKEN, on upB); one session with both.
func bodyPipeline(t *testing.T, edit func(*services.Service)) (*pipeline, *upstream, *upstream, agentSession) {
	upA, upB := upstreamTLS(t, nil), upstreamTLS(t, nil)
	a := bearer("a", upA.hostPort, "A_TOKEN")
	if edit != nil {
		edit(&a)
	}
	pl := newPipeline(t, pipelineConfig{services: []services.Service{a, bearer("b", upB.hostPort, "B_TOKEN")},
		stores: []storebackends.Store{builtin("A_TOKEN", bearerSecret, "B_TOKEN", otherSecret)}})
	return pl, upA, upB, pl.session(t)
}

func postBody(t *testing.T, c *http.Client, url, contentType string, body io.Reader, length int64) answer {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, body)
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = length
	req.Header.Set("Content-Type", contentType)
	return do(t, c, req)
}

func TestBodyPlaceholders(t *testing.T) {
	pl, upA, upB, s := bodyPipeline(t, nil)
	agent := pl.agent(t, s, false)
	phA, phB := s.ph(t, "A_TOKEN"), s.ph(t, "B_TOKEN")

	for _, tc := range []struct{ ct, body, want string }{
		{"application/json", `{"client_secret":"` + phA + `"}`, `{"client_secret":"` + bearerSecret + `"}`},
		{"application/x-www-form-urlencoded", "grant_type=client_credentials&client_secret=" + phA, "grant_type=client_credentials&client_secret=" + bearerSecret},
		{"multipart/form-data; boundary=XX", "--XX\r\nContent-Disposition: form-data; name=\"token\"\r\n\r\n" + phA + "\r\n--XX--\r\n",
			"--XX\r\nContent-Disposition: form-data; name=\"token\"\r\n\r\n" + bearerSecret + "\r\n--XX--\r\n"},
		{"text/plain", "token " + phA, "token " + bearerSecret},
	} {
		wantStatus(t, postBody(t, agent, upA.https("/token"), tc.ct, strings.NewReader(tc.body), int64(len(tc.body))), http.StatusOK)
		got := upA.last(t)
		if got.body != tc.want || got.header.Get("Content-Length") != "" && got.header.Get("Content-Length") != strconv.Itoa(len(tc.want)) {
			t.Errorf("%s: upstream got %q (Content-Length %q), want %q", tc.ct, got.body, got.header.Get("Content-Length"), tc.want)
		}
	}
	// A placeholder split across the agent's writes, of unknown length.
	pr, pw := io.Pipe()
	go func() {
		body := `{"k":"` + phA + `"}`
		for i := 0; i < len(body); i += 7 {
			pw.Write([]byte(body[i:min(i+7, len(body))]))
		}
		pw.Close()
	}()
	wantStatus(t, postBody(t, agent, upA.https("/split"), "application/json", pr, -1), http.StatusOK)
	if got := upA.last(t).body; got != `{"k":"`+bearerSecret+`"}` {
		t.Errorf("split: upstream got %q", got)
	}

	// B's placeholder toward A: 403, nothing reaches A.
	before := len(upA.requests())
	a := postBody(t, agent, upA.https("/token"), "application/json", strings.NewReader(`{"k":"`+phB+`"}`), -1)
	wantRefusal(t, a, http.StatusForbidden, "credential B_TOKEN is not bound to")
	// A placeholder in a body that is not rewritten: 403.
	a = postBody(t, agent, upA.https("/bin"), "application/octet-stream", strings.NewReader("\x00"+phA), -1)
	wantRefusal(t, a, http.StatusForbidden, "placeholders are swapped only in")
	a = postBody(t, agent, upA.https("/gz"), "application/json", strings.NewReader(phA), -1)
	wantStatus(t, a, http.StatusOK) // control: same body, rewritten
	if len(upA.requests()) != before+1 {
		t.Fatalf("a refused body reached the upstream")
	}
	if len(upB.requests()) != 0 {
		t.Fatal("B was contacted")
	}
	// A body with no placeholder passes as it is, length kept.
	bin := strings.Repeat("\x00\xffagvph", 100)
	wantStatus(t, postBody(t, agent, upA.https("/bin"), "application/octet-stream", strings.NewReader(bin), int64(len(bin))), http.StatusOK)
	if got := upA.last(t); got.body != bin {
		t.Errorf("an opaque body changed: %d bytes", len(got.body))
	}
}

func TestBodyLargeStreamed(t *testing.T) {
	pl, upA, _, s := bodyPipeline(t, nil)
	agent := pl.agent(t, s, false)
	phA, phB := s.ph(t, "A_TOKEN"), s.ph(t, "B_TOKEN")
	pad := strings.Repeat("x", maxBufferedBody+100)
	body := `{"pad":"` + pad + `","k":"` + phA + `"}`
	wantStatus(t, postBody(t, agent, upA.https("/big"), "application/json", strings.NewReader(body), int64(len(body))), http.StatusOK)
	if got := upA.last(t).body; got != `{"pad":"`+pad+`","k":"`+bearerSecret+`"}` {
		t.Errorf("large body: upstream got %d bytes, ending %q", len(got), got[max(0, len(got)-60):])
	}
	// Past the buffer, a placeholder bound elsewhere ends the upload:
	// the agent gets 403 and the upstream never the whole request.
	n := len(upA.requests())
	bad := `{"pad":"` + pad + `","k":"` + phB + `"}`
	a := postBody(t, agent, upA.https("/big"), "application/json", strings.NewReader(bad), int64(len(bad)))
	wantRefusal(t, a, http.StatusForbidden, "credential B_TOKEN is not bound to")
	for _, r := range upA.requests()[n:] {
		if strings.Contains(r.body, otherSecret) || len(r.body) == len(bad) {
			t.Fatalf("the upstream got the refused body (%d bytes)", len(r.body))
		}
	}
}

func TestBodySubstitutionOff(t *testing.T) {
	off := false
	pl, upA, _, s := bodyPipeline(t, func(svc *services.Service) { svc.BodySubstitution = &off })
	agent := pl.agent(t, s, false)
	a := postBody(t, agent, upA.https("/token"), "application/json", strings.NewReader(`{"k":"`+s.ph(t, "A_TOKEN")+`"}`), -1)
	wantRefusal(t, a, http.StatusForbidden, "placeholders are swapped only in")
	if len(upA.requests()) != 0 {
		t.Fatal("refused body reached the upstream")
	}
	wantStatus(t, postBody(t, agent, upA.https("/plain"), "application/json", strings.NewReader(`{"k":1}`), -1), http.StatusOK)
}
