package e2etest

import (
	"crypto/x509"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
)

// The passthrough case of BenchmarkProxy: what a service with
// "intercept": false costs, against a second upstream (on its own port,
// so that the bearer service of the other cases does not cover it):
//
//   - direct: requests straight to it;
//   - raw: through the proxy in a session whose scope is a passthrough
//     service with intercept: false (the agent trusts the upstream's
//     own CA: its TLS reaches the upstream);
//   - mitm: through the proxy in a session whose scope is a plain
//     passthrough service for the same host (intercepted: the proxy's
//     leaf, nothing injected), the cost the raw relay saves.
//
// Rounds, order and medians as in runCase; the server's CPU per
// request is counted for raw and mitm. It needs the bench name (an SNI
// for the relayed tunnel): with the 127.0.0.1 fallback it is skipped.

var passthroughCases = []benchCase{
	{"keepalive-c4", true, 4},
	{"newconn-c4", false, 4},
}

// The passthrough modes' indexes.
const (
	ptDirect = iota
	ptRaw
	ptMITM
)

var passthroughModeNames = []string{"direct", "raw", "mitm"}

func runPassthrough(b *testing.B, e *benchEnv) {
	if benchHost != benchName {
		b.Skip("a relayed tunnel needs a host name (SNI): " + benchHostNote)
	}
	ca := e.ca
	up := newUpstreamNamed(b, ca, true, benchName)
	_, port, _ := strings.Cut(up.hostPort(), ":")
	hostPort := benchName + ":" + port
	e.srv.putService("bench-raw", map[string]any{"host": hostPort, "auth": map[string]any{"type": "passthrough"}, "intercept": false})
	e.srv.putService("bench-mitm", map[string]any{"host": hostPort, "auth": map[string]any{"type": "passthrough"}})
	upstreamRoots := x509.NewCertPool()
	upstreamRoots.AddCert(ca.cert)
	mode := func(name, service string) benchMode {
		sess := e.srv.newSession(b, []string{service}, "1h")
		proxyURL, _ := url.Parse(sess.ProxyURL)
		proxyURL.User = url.UserPassword("av", sess.Token)
		roots := upstreamRoots
		if service == "bench-mitm" {
			roots = x509.NewCertPool()
			roots.AppendCertsFromPEM([]byte(sess.CAPEM))
		}
		return benchMode{name: name, proxy: proxyURL, roots: roots, pid: e.srv.pid()}
	}
	modes := []benchMode{
		ptDirect: {name: "direct", roots: upstreamRoots},
		ptRaw:    mode("raw", "bench-raw"),
		ptMITM:   mode("mitm", "bench-mitm"),
	}
	target := "https://" + hostPort + "/bench/user"
	for _, bc := range passthroughCases {
		b.Run(bc.name, func(b *testing.B) { runPassthroughCase(b, modes, target, bc) })
	}
}

func runPassthroughCase(b *testing.B, modes []benchMode, target string, bc benchCase) {
	d := benchRoundTime(b)
	clients := make([]*http.Client, len(modes))
	for i, m := range modes {
		clients[i] = benchClient(m, bc.keepAlive, bc.workers)
		defer clients[i].CloseIdleConnections()
		if _, err := drive(clients[i], target, bc.workers, d/4, 0); err != nil {
			b.Fatalf("%s warm-up: %v", m.name, err)
		}
	}
	var rounds [][]roundResult
	for b.Loop() {
		res := make([]roundResult, len(modes))
		order := []int{ptDirect, ptRaw, ptMITM}
		if len(rounds)%2 == 1 {
			slices.Reverse(order)
		}
		for _, i := range order {
			r, err := drive(clients[i], target, bc.workers, d, modes[i].pid)
			if err != nil {
				b.Fatalf("%s: %v", modes[i].name, err)
			}
			res[i] = r
		}
		rounds = append(rounds, res)
	}
	b.StopTimer()
	rps := func(i int) stat { return statOf(collect(rounds, func(r []roundResult) float64 { return r[i].rps() })) }
	cpu := func(i int) stat {
		return statOf(collect(rounds, func(r []roundResult) float64 { return float64(r[i].cpuPerReq().Nanoseconds()) / 1000 }))
	}
	ratio := func(i, j int) stat {
		return statOf(collect(rounds, func(r []roundResult) float64 { return r[i].rps() / r[j].rps() }))
	}
	conn := "keep-alive"
	if !bc.keepAlive {
		conn = "new connection per request"
	}
	var w strings.Builder
	fmt.Fprintf(&w, "\n== passthrough %s: %s, %d concurrent clients; median of %d rounds of %s per mode [min-max]\n", bc.name, conn, bc.workers, len(rounds), d)
	for i, name := range passthroughModeNames {
		r, c := rps(i), cpu(i)
		cpuText := "-"
		if i != ptDirect {
			cpuText = fmt.Sprintf("%.0f [%.0f-%.0f] server CPU µs/req", c.med, c.lo, c.hi)
		}
		fmt.Fprintf(&w, "   %-7s %7.0f [%6.0f-%6.0f] req/s   %s\n", name, r.med, r.lo, r.hi, cpuText)
	}
	rawDirect, mitmDirect, rawMITM := ratio(ptRaw, ptDirect), ratio(ptMITM, ptDirect), ratio(ptRaw, ptMITM)
	fmt.Fprintf(&w, "   throughput raw/direct %.2f [%.2f-%.2f]   mitm/direct %.2f [%.2f-%.2f]   raw/mitm %.2f [%.2f-%.2f]\n",
		rawDirect.med, rawDirect.lo, rawDirect.hi, mitmDirect.med, mitmDirect.lo, mitmDirect.hi, rawMITM.med, rawMITM.lo, rawMITM.hi)
	fmt.Print(w.String())
	b.ReportMetric(rps(ptDirect).med, "direct-req/s")
	b.ReportMetric(rps(ptRaw).med, "raw-req/s")
	b.ReportMetric(rps(ptMITM).med, "mitm-req/s")
	b.ReportMetric(rawDirect.med, "raw/direct")
	b.ReportMetric(rawMITM.med, "raw/mitm")
}

// collect is f of every round.
func collect(rounds [][]roundResult, f func([]roundResult) float64) []float64 {
	out := make([]float64, len(rounds))
	for i, r := range rounds {
		out[i] = f(r)
	}
	return out
}
