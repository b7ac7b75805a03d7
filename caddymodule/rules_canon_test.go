package caddymodule

import (
	"net/http"
	"testing"

	"github.com/agentvault/caddy-agent-vault/caddymodule/services"
	"github.com/agentvault/caddy-agent-vault/storebackends"
)

// A deny rule cannot be got around by spelling the path another way
// the upstream reads the same: the upstream (a Go server, which
// decodes the path) never sees the denied path.
func TestRulesDenyHoldsForRespelledPaths(t *testing.T) {
	up := upstreamTLS(t, nil)
	svc := bearer("gh", up.hostPort, "A_TOKEN")
	svc.Paths = []string{"/repos/*", "!/repos/*/admin/*"}
	pl := newPipeline(t, pipelineConfig{services: []services.Service{svc}, stores: []storebackends.Store{builtin("A_TOKEN", bearerSecret)}})
	tc := pl.openTunnel(t, pl.session(t), up.hostPort)
	for _, path := range []string{"/repos/o/r/admin/keys", "/repos/o/r/%61dmin/keys", "/repos/o/r/adm%69n/keys", "/repos/o/r/ADMIN/keys", "/repos/o/r//admin/keys", "/repos/o/r/%41DMIN/keys"} {
		a := tc.get(path, up.hostPort)
		if a.status != http.StatusForbidden || a.header.Get("X-Agent-Vault-Refusal") != "path_not_allowed" {
			t.Errorf("%s: %d %q, want 403 path_not_allowed", path, a.status, a.body)
		}
	}
	if reqs := up.requests(); len(reqs) != 0 {
		t.Fatalf("the upstream received %s", reqs[0].path)
	}
	wantStatus(t, tc.get("/repos/o/r/%69ssues", up.hostPort), http.StatusOK)
	if got := up.last(t).path; got != "/repos/o/r/%69ssues" {
		t.Errorf("an allowed path was forwarded as %q, want it as sent", got)
	}
}

// A deny-only service: "//admin" is "/admin" to a server that merges
// slashes (nginx by default), so it is denied too.
func TestRulesDenyHoldsForMergedSlashes(t *testing.T) {
	up := upstreamTLS(t, nil)
	svc := bearer("gh", up.hostPort, "A_TOKEN")
	svc.Paths = []string{"!/admin*"}
	pl := newPipeline(t, pipelineConfig{services: []services.Service{svc}, stores: []storebackends.Store{builtin("A_TOKEN", bearerSecret)}})
	tc := pl.openTunnel(t, pl.session(t), up.hostPort)
	for _, path := range []string{"//admin", "///admin/x", "/%2F/admin"} {
		if a := tc.get(path, up.hostPort); a.status != http.StatusForbidden || a.header.Get("X-Agent-Vault-Refusal") != "path_not_allowed" {
			t.Errorf("%s: %d %q, want 403 path_not_allowed", path, a.status, a.body)
		}
	}
	if reqs := up.requests(); len(reqs) != 0 {
		t.Fatalf("the upstream received %s", reqs[0].path)
	}
	wantStatus(t, tc.get("/repos", up.hostPort), http.StatusOK)
}
