package caddymodule

import (
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
)

// 3c. A proxy listening on every address (a site without bind) is
// reachable at every local address of the machine: CONNECTs and
// absolute-form requests to any of them on its port are refused as the
// broker's own listener (loopback ones allowed by the policy, the
// machine's interface addresses not even allowed, and 127.0.0.5, local
// without being on an interface), and so is a name resolving to one.
// The same addresses on another port are judged by the policy alone.
func TestPipelineSelfEgressWildcard(t *testing.T) {
	pl := newPipeline(t, pipelineConfig{unmatched: "tunnel", wildcard: true})
	_, port, _ := net.SplitHostPort(pl.addr)
	s := pl.session(t)
	agent := pl.agent(t, s, false)

	targets := []string{"127.0.0.1", "127.0.0.5", "::1", "0.0.0.0", "::", "localhost"}
	ifAddrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	var lan []string // interface addresses the policy does not allow
	for _, a := range ifAddrs {
		ipnet, ok := a.(*net.IPNet)
		if !ok {
			continue
		}
		ip, _ := netip.AddrFromSlice(ipnet.IP)
		ip = ip.Unmap()
		if ip.IsLoopback() || ip.IsLinkLocalUnicast() {
			continue // loopback is listed already; link-local needs a zone
		}
		targets = append(targets, ip.String())
		lan = append(lan, ip.String())
	}
	for _, host := range targets {
		target := net.JoinHostPort(host, port)
		t.Run("CONNECT "+target, func(t *testing.T) {
			a, _ := pl.connect(t, target, basicAuth(s.token))
			wantRefusal(t, a, http.StatusForbidden, "the broker's own listener")
		})
		t.Run("GET http://"+target, func(t *testing.T) {
			a := get(t, agent, "http://"+target+"/")
			wantRefusal(t, a, http.StatusForbidden, "the broker's own listener")
		})
	}

	// Another port: loopback tunnels (the policy allows it), the
	// machine's other addresses are refused by the policy, not as the
	// broker's own.
	other := upstreamHTTP(t, nil)
	_, otherPort, _ := net.SplitHostPort(other.hostPort)
	t.Run("another port on 127.0.0.1", func(t *testing.T) {
		wantStatus(t, get(t, agent, other.http("/ok")), http.StatusOK)
	})
	for _, host := range lan {
		target := net.JoinHostPort(host, otherPort)
		t.Run("CONNECT "+target, func(t *testing.T) {
			a, _ := pl.connect(t, target, basicAuth(s.token))
			wantRefusal(t, a, http.StatusForbidden)
			if strings.Contains(a.body, "the broker's own listener") {
				t.Errorf("%s refused as the broker's own listener: %q", target, a.body)
			}
		})
	}
}
