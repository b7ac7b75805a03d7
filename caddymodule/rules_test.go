package caddymodule

import (
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/agentvault/caddy-agent-vault/caddymodule/services"
	"github.com/agentvault/caddy-agent-vault/storebackends"
)

// A service's methods and paths rules: a request outside them gets 403
// with its code and never reaches the upstream.
func TestRulesMethodsAndPaths(t *testing.T) {
	up := upstreamTLS(t, nil)
	svc := bearer("gh", up.hostPort, "A_TOKEN")
	svc.Methods = []string{"GET", "HEAD"}
	svc.Paths = []string{"/repos/*", "!/repos/*/admin/*"}
	pl := newPipeline(t, pipelineConfig{services: []services.Service{svc}, stores: []storebackends.Store{builtin("A_TOKEN", bearerSecret)}})
	agent := pl.agent(t, pl.session(t), false)

	wantStatus(t, get(t, agent, up.https("/repos/o/r")), http.StatusOK)
	before := len(up.requests())
	req, _ := http.NewRequest(http.MethodDelete, up.https("/repos/o/r"), nil)
	a := do(t, agent, req)
	wantRefusal(t, a, http.StatusForbidden, "service gh does not allow method DELETE")
	if got := a.header.Get("X-Agent-Vault-Refusal"); got != "method_not_allowed" {
		t.Errorf("code %q", got)
	}
	for path, code := range map[string]string{
		"/repos/o/r/admin/keys": "path_not_allowed", // denied
		"/user":                 "path_not_allowed", // not allowed
		"/repos/o/../admin/x":   "path_not_allowed", // ambiguous: matches no allow entry
		"/repos/o/r%2Fadmin/x":  "path_not_allowed",
	} {
		a := get(t, agent, up.https(path))
		if a.status != http.StatusForbidden || a.header.Get("X-Agent-Vault-Refusal") != code {
			t.Errorf("%s: %d %q %q, want 403 %s", path, a.status, a.header.Get("X-Agent-Vault-Refusal"), a.body, code)
		}
	}
	if n := len(up.requests()); n != before {
		t.Fatalf("the upstream got %d refused requests", n-before)
	}
	wantStatus(t, get(t, agent, up.https("/repos/o/r/issues")), http.StatusOK)
}

// rate_limit: a burst of N, then 429 with Retry-After; per session.
func TestRulesRateLimit(t *testing.T) {
	up := upstreamTLS(t, nil)
	svc := bearer("gh", up.hostPort, "A_TOKEN")
	svc.RateLimit = "3/h"
	pl := newPipeline(t, pipelineConfig{services: []services.Service{svc}, stores: []storebackends.Store{builtin("A_TOKEN", bearerSecret)}})
	s := pl.session(t)
	agent := pl.agent(t, s, false)
	for range 3 {
		wantStatus(t, get(t, agent, up.https("/x")), http.StatusOK)
	}
	a := get(t, agent, up.https("/x"))
	wantRefusal(t, a, http.StatusTooManyRequests, "service gh allows 3/h per session")
	// One token per 20 minutes: Retry-After is about 1200 s.
	if ra := a.header.Get("Retry-After"); ra < "1190" || ra > "1200" || len(ra) != 4 {
		t.Errorf("Retry-After %q, want about 1200", ra)
	}
	if a.header.Get("X-Agent-Vault-Refusal") != "rate_limited" {
		t.Errorf("code %q", a.header.Get("X-Agent-Vault-Refusal"))
	}
	if n := len(up.requests()); n != 3 {
		t.Fatalf("the upstream got %d requests, want 3", n)
	}
	wantStatus(t, get(t, pl.agent(t, pl.session(t), false), up.https("/x")), http.StatusOK) // another session's own bucket
}

// max_request_body: a Content-Length over it is 413 before anything
// leaves; a chunked body is cut at the cap and answered 413.
func TestRulesMaxRequestBody(t *testing.T) {
	up := upstreamTLS(t, nil)
	svc := bearer("gh", up.hostPort, "A_TOKEN")
	svc.MaxRequestBody = "1KiB"
	pl := newPipeline(t, pipelineConfig{services: []services.Service{svc}, stores: []storebackends.Store{builtin("A_TOKEN", bearerSecret)}})
	agent := pl.agent(t, pl.session(t), false)

	post := func(body io.Reader, length int64) answer {
		req, _ := http.NewRequest(http.MethodPost, up.https("/upload"), body)
		req.ContentLength = length
		return do(t, agent, req)
	}
	wantStatus(t, post(strings.NewReader(strings.Repeat("a", 1024)), 1024), http.StatusOK)
	a := post(strings.NewReader(strings.Repeat("a", 1025)), 1025)
	wantRefusal(t, a, http.StatusRequestEntityTooLarge, "larger than service gh allows (1KiB)")
	if n := len(up.requests()); n != 1 {
		t.Fatalf("a body over the cap reached the upstream (%d requests)", n)
	}
	// Unknown length, exactly the cap: passes.
	wantStatus(t, post(io.MultiReader(strings.NewReader(strings.Repeat("b", 1024))), -1), http.StatusOK)
	// Unknown length, over the cap: 413, and the upstream (if it saw
	// the request at all) got no byte past the cap.
	a = post(io.MultiReader(strings.NewReader(strings.Repeat("c", 4096))), -1)
	wantRefusal(t, a, http.StatusRequestEntityTooLarge, "larger than service gh allows")
	for _, r := range up.requests() {
		if len(r.body) > 1024 {
			t.Fatalf("the upstream got %d bytes of a body capped at 1024", len(r.body))
		}
	}
}

// max_response_body: a scanned response over it is a 502 with the
// reason (Content-Length known), or cut short (unknown length).
func TestProxyMaxResponseBody(t *testing.T) {
	big := strings.Repeat("z", 4096)
	up := upstreamTLS(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/stream" {
			w.(http.Flusher).Flush() // unknown length: chunked
		} else {
			w.Header().Set("Content-Length", "4096")
		}
		io.WriteString(w, big)
	})
	pl := newPipeline(t, pipelineConfig{services: []services.Service{bearer("gh", up.hostPort, "A_TOKEN")},
		stores: []storebackends.Store{builtin("A_TOKEN", bearerSecret)}, maxResponseBody: "1KiB"})
	agent := pl.agent(t, pl.session(t), false)
	a := get(t, agent, up.https("/known"))
	wantRefusal(t, a, http.StatusBadGateway, "larger than the proxy scans (max_response_body 1KiB)")
	if a.header.Get("X-Agent-Vault-Refusal") != "response_too_large" {
		t.Errorf("code %q", a.header.Get("X-Agent-Vault-Refusal"))
	}
	resp, err := agent.Get(up.https("/stream"))
	if err == nil {
		body, rerr := io.ReadAll(resp.Body)
		resp.Body.Close()
		if rerr == nil || len(body) > 1024 {
			t.Fatalf("a streamed body over the cap arrived whole: %d bytes, %v", len(body), rerr)
		}
	}
}

// max_concurrent_per_session: the request past the cap is 429 at once;
// another session is not held up.
func TestProxyMaxConcurrentPerSession(t *testing.T) {
	entered, hold := make(chan struct{}, 4), make(chan struct{})
	up := upstreamTLS(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			entered <- struct{}{}
			<-hold
		}
		io.WriteString(w, "ok")
	})
	pl := newPipeline(t, pipelineConfig{services: []services.Service{bearer("gh", up.hostPort, "A_TOKEN")},
		stores: []storebackends.Store{builtin("A_TOKEN", bearerSecret)}, maxConcurrent: 2})
	s := pl.session(t)
	agent := pl.agent(t, s, true)
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() { get(t, agent, up.https("/slow")) })
	}
	<-entered
	<-entered
	a := get(t, agent, up.https("/fast"))
	wantRefusal(t, a, http.StatusTooManyRequests, "already has 2 requests in flight")
	if a.header.Get("Retry-After") != "1" || a.header.Get("X-Agent-Vault-Refusal") != "concurrency_limit" {
		t.Errorf("headers %v", a.header)
	}
	wantStatus(t, get(t, pl.agent(t, pl.session(t), false), up.https("/fast")), http.StatusOK)
	close(hold)
	wg.Wait()
	wantStatus(t, get(t, agent, up.https("/fast")), http.StatusOK) // released
}

// Review findings: a method override asking for a refused method is
// refused; a deny entry is not got around by %-escapes or case; an
// upstream cannot pass its answer off as a proxy refusal.
func TestRulesBypasses(t *testing.T) {
	up := upstreamTLS(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Agent-Vault-Refusal", "uncovered_host")
		io.WriteString(w, "ok")
	})
	svc := bearer("gh", up.hostPort, "A_TOKEN")
	svc.Methods = []string{"GET", "POST"}
	svc.Paths = []string{"!/repos/*/admin/*"}
	pl := newPipeline(t, pipelineConfig{services: []services.Service{svc}, stores: []storebackends.Store{builtin("A_TOKEN", bearerSecret)}})
	agent := pl.agent(t, pl.session(t), false)
	req, _ := http.NewRequest(http.MethodPost, up.https("/x"), strings.NewReader("{}"))
	req.Header.Set("X-HTTP-Method-Override", "delete")
	wantRefusal(t, do(t, agent, req), http.StatusForbidden, "does not allow method DELETE (asked for with X-HTTP-Method-Override)")
	for _, path := range []string{"/repos/o/%61dmin/x", "/repos/o/ADMIN/x", "/repos/o/Adm%69n/x"} {
		if a := get(t, agent, up.https(path)); a.status != http.StatusForbidden {
			t.Errorf("%s: %d, want 403", path, a.status)
		}
	}
	if n := len(up.requests()); n != 0 {
		t.Fatalf("the upstream got %d refused requests", n)
	}
	a := get(t, agent, up.https("/ok"))
	wantStatus(t, a, http.StatusOK)
	if a.header.Get("X-Agent-Vault-Refusal") != "" {
		t.Error("the upstream's X-Agent-Vault-Refusal reached the agent")
	}
}
