package caddymodule

import (
	"io"
	"net/http"
	"testing"

	"github.com/agentvault/caddy-agent-vault/caddymodule/services"
	"github.com/agentvault/caddy-agent-vault/storebackends"
)

// BenchmarkPipelineKeepAlive is one injected request on a kept-alive
// intercepted tunnel, in process: for profiling the request path
// (go test -bench PipelineKeepAlive -cpuprofile cpu.out -benchmem).
// Whole-product speed is `make bench`, against the floor.
func BenchmarkPipelineKeepAlive(b *testing.B) {
	up := upstreamTLS(b, nil)
	pl := newPipeline(b, pipelineConfig{
		services: []services.Service{{Name: "svc", Host: up.hostPort, Auth: services.Auth{Type: services.AuthBearer, Token: "TOKEN"}}},
		stores:   []storebackends.Store{builtin("TOKEN", bearerSecret)},
	})
	c := pl.agent(b, pl.session(b), false)
	target := "https://" + up.hostPort + "/bench"
	b.ReportAllocs()
	for b.Loop() {
		resp, err := c.Get(target)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b.Fatalf("status %d", resp.StatusCode)
		}
	}
}
