package caddymodule

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/agentvault/caddy-agent-vault/caddymodule/authguard"
)

// Bad tokens from many addresses, each within its own budget (an
// attacker holding many addresses, say an IPv6 /48, gets a budget per
// /64): the log stays bounded across addresses, while every answer is
// still the 407 each address would get alone, without Retry-After. The
// addresses are loopback ones (127.0.1.x), each its own key.
func TestPipelineAuthFailuresManyAddresses(t *testing.T) {
	pl := newPipeline(t, pipelineConfig{})
	const addresses, perAddress = 200, 3 // 3 is well within authguard.DefaultBurst
	start := time.Now()
	for i := range addresses {
		src := &net.TCPAddr{IP: net.IPv4(127, 0, 1+byte(i/250), 1+byte(i%250))}
		for range perAddress {
			status, retryAfter := connectFrom(t, pl.addr, src, basicAuth("avs_notARealSessionToken"))
			if status != http.StatusProxyAuthRequired || retryAfter != "" {
				t.Fatalf("from %s: status %d, Retry-After %q; want 407 without Retry-After", src.IP, status, retryAfter)
			}
		}
	}
	elapsed := time.Since(start)
	lines := strings.Count(pl.logs.String(), `"proxy authentication failed"`)
	// The global bucket: its burst plus its rate over the time taken.
	bound := authguard.DefaultLogBurst + int(elapsed.Seconds()*authguard.DefaultLogRate) + 1
	if lines > bound {
		t.Errorf("%d log lines for %d failures from %d addresses in %v, want at most %d", lines, addresses*perAddress, addresses, elapsed, bound)
	}
	if lines < authguard.DefaultLogBurst {
		t.Errorf("%d log lines, want at least the burst of %d", lines, authguard.DefaultLogBurst)
	}

	// Caddy cleans the proxy up on a config reload: the failures not
	// logged yet are summarised then, by the time Cleanup returns, not
	// by a timer up to 10 s later through this configuration's logger.
	pl.cleanupProxy()
	logged, notLogged := 0, 0
	for line := range strings.Lines(pl.logs.String()) {
		var entry struct {
			Msg       string `json:"msg"`
			NotLogged int    `json:"failures_not_logged"`
		}
		if json.Unmarshal([]byte(line), &entry) != nil || entry.Msg != "proxy authentication failed" {
			continue
		}
		if entry.NotLogged > 0 {
			notLogged += entry.NotLogged
		} else {
			logged++
		}
	}
	if logged+notLogged != addresses*perAddress || notLogged == 0 {
		t.Errorf("after Cleanup: %d failures logged and %d summarised, want all %d accounted for, some summarised", logged, notLogged, addresses*perAddress)
	}
}

// connectFrom sends a CONNECT from the local address src and returns
// the status and Retry-After of the answer.
func connectFrom(t *testing.T, proxyAddr string, src *net.TCPAddr, proxyAuth string) (int, string) {
	t.Helper()
	d := net.Dialer{LocalAddr: src, Timeout: 5 * time.Second}
	conn, err := d.Dial("tcp", proxyAddr)
	if err != nil {
		t.Fatalf("dial from %s: %v", src.IP, err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second)) // a bound on a broken test, not a wait
	fmt.Fprintf(conn, "CONNECT 192.0.2.1:443 HTTP/1.1\r\nHost: 192.0.2.1:443\r\nProxy-Authorization: %s\r\n\r\n", proxyAuth)
	resp, err := http.ReadResponse(bufio.NewReader(conn), &http.Request{Method: http.MethodConnect})
	if err != nil {
		t.Fatalf("CONNECT from %s: %v", src.IP, err)
	}
	resp.Body.Close()
	return resp.StatusCode, resp.Header.Get("Retry-After")
}
