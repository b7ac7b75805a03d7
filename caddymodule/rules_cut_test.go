package caddymodule

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/agentvault/caddy-agent-vault/caddymodule/activity"
	"github.com/agentvault/caddy-agent-vault/caddymodule/services"
	"github.com/agentvault/caddy-agent-vault/storebackends"
)

// A scanned response cut at max_response_body after its headers went
// out is recorded as such: the activity entry says response_too_large,
// not a plain forwarded 200.
func TestProxyMaxResponseBodyCutIsRecorded(t *testing.T) {
	big := strings.Repeat("z", 300<<10)
	up := upstreamTLS(t, func(w http.ResponseWriter, r *http.Request) {
		w.(http.Flusher).Flush() // unknown length: streamed
		io.WriteString(w, big)
	})
	pl := newPipeline(t, pipelineConfig{services: []services.Service{bearer("gh", up.hostPort, "A_TOKEN")},
		stores: []storebackends.Store{builtin("A_TOKEN", bearerSecret)}, maxResponseBody: "1KiB"})
	agent := pl.agent(t, pl.session(t), false)
	if resp, err := agent.Get(up.https("/stream")); err == nil {
		body, rerr := io.ReadAll(resp.Body)
		resp.Body.Close()
		if rerr == nil || len(body) > 1024 {
			t.Fatalf("a streamed body over the cap arrived whole: %d bytes, %v", len(body), rerr)
		}
	}
	e := findEntry(t, pl, "the cut response", func(e activity.Entry) bool { return e.Path == "/stream" })
	if e.Code != activity.CodeResponseTooLarge || e.Decision != activity.Refused || !strings.Contains(e.Reason, "max_response_body") {
		t.Fatalf("entry code %q decision %q reason %q, want response_too_large, refused", e.Code, e.Decision, e.Reason)
	}
}
