package caddymodule

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/agentvault/caddy-agent-vault/caddymodule/services"
	"github.com/agentvault/caddy-agent-vault/storebackends"
)

// A stream opened before the state turns unhealthy ends once it does
// (this broker may be missing a revocation from another one); the
// session itself lives on, and works again once health is back.
func TestPipelineStreamEndsWhenStateUnhealthy(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	up := upstreamTLS(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/sse" {
			io.WriteString(w, "ok")
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		for i := 0; ; i++ {
			fmt.Fprintf(w, "data: %d\n\n", i)
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
				return
			case <-release:
				return
			case <-time.After(20 * time.Millisecond): // the upstream's pace, not synchronisation
			}
		}
	})
	pl := newPipeline(t, pipelineConfig{
		services: []services.Service{bearer("api", up.hostPort, "API_TOKEN")},
		stores:   []storebackends.Store{builtin("API_TOKEN", bearerSecret)},
	})
	s := pl.session(t)
	tun := pl.openTunnel(t, s, up.hostPort)
	io.WriteString(tun.conn, "GET /sse HTTP/1.1\r\nHost: "+up.hostPort+"\r\nAuthorization: Bearer x\r\n\r\n")
	resp, err := http.ReadResponse(tun.br, nil)
	if err != nil {
		t.Fatal(err)
	}
	events := bufio.NewReader(resp.Body)
	if line, err := events.ReadString('\n'); err != nil || !strings.HasPrefix(line, "data:") {
		t.Fatalf("first event: %q %v", line, err)
	}
	pl.setStateDown(errors.New("state postgres: down"))
	ended := make(chan error, 1)
	go func() {
		for {
			if _, err := events.ReadString('\n'); err != nil {
				ended <- err
				return
			}
		}
	}()
	select {
	case <-ended:
	case <-time.After(5 * time.Second):
		t.Fatal("the stream still flows 5s after the state turned unhealthy")
	}
	pl.setStateDown(nil)
	if a := pl.openTunnel(t, s, up.hostPort).get("/again", up.hostPort); a.status != http.StatusOK {
		t.Fatalf("the session after health is back: %d %s", a.status, a.body)
	}
}
