package e2etest

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
)

// BenchmarkWebSocketEcho measures WebSocket messages through the proxy
// against the same upstream directly, in one run (issue 12): one
// connection each, a 1 KiB text message sent and its echo read, in
// interleaved rounds of BENCH_ROUND. Through the proxy every message is
// parsed, scanned for placeholders and the echo scrubbed.
func BenchmarkWebSocketEcho(b *testing.B) {
	ca := newTestCA(b)
	up := newUpstream(b, ca, true)
	s := startServer(b, ca, serverOpts{logCap: 1 << 20})
	s.putCredential("BENCH_TOKEN", benchSecret)
	s.putService("bench", bearerService(up.hostPort(), "BENCH_TOKEN"))
	sess := s.newSession(b, nil, "1h")
	roots := x509.NewCertPool()
	roots.AddCert(ca.cert)

	upgrade := func(rw io.ReadWriter) *bufio.Reader {
		io.WriteString(rw, "GET /ws HTTP/1.1\r\nHost: "+up.hostPort()+"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
		br := bufio.NewReader(rw)
		if r, err := http.ReadResponse(br, nil); err != nil || r.StatusCode != http.StatusSwitchingProtocols {
			b.Fatalf("upgrade: %v %v", r, err)
		}
		return br
	}
	direct, err := tls.Dial("tcp", up.hostPort(), &tls.Config{RootCAs: roots, ServerName: "127.0.0.1"})
	if err != nil {
		b.Fatal(err)
	}
	defer direct.Close()
	viaProxy := dialTunnelTLS(b, s, sess, up.hostPort())
	conns := []struct {
		name string
		rw   io.ReadWriter
		br   *bufio.Reader
	}{{"direct", direct, nil}, {"proxy", viaProxy, nil}}
	for i := range conns {
		conns[i].br = upgrade(conns[i].rw)
	}
	msg := strings.Repeat("m", 1024)
	want := strings.ToUpper(msg)
	run := func(i int, d time.Duration) float64 {
		n, start := 0, time.Now()
		for time.Since(start) < d {
			wsSend(b, conns[i].rw, msg)
			got, err := wsRecv(conns[i].br)
			if err != nil || got != want {
				b.Fatalf("%s echo: %d bytes, %v", conns[i].name, len(got), err)
			}
			n++
		}
		return float64(n) / time.Since(start).Seconds()
	}
	d := benchRoundTime(b)
	run(0, d/4)
	run(1, d/4)
	var rates [2][]float64
	var ratio []float64
	for b.Loop() {
		order := []int{0, 1}
		if len(ratio)%2 == 1 {
			slices.Reverse(order)
		}
		var r [2]float64
		for _, i := range order {
			r[i] = run(i, d)
			rates[i] = append(rates[i], r[i])
		}
		ratio = append(ratio, r[1]/r[0])
	}
	b.StopTimer()
	dr, pr, rr := statOf(rates[0]), statOf(rates[1]), statOf(ratio)
	fmt.Printf("bench: websocket echo of 1 KiB messages, one connection: direct %.0f msg/s [%.0f-%.0f], proxy %.0f msg/s [%.0f-%.0f], proxy/direct %.2f [%.2f-%.2f] (%d rounds)\n",
		dr.med, dr.lo, dr.hi, pr.med, pr.lo, pr.hi, rr.med, rr.lo, rr.hi, len(ratio))
	b.ReportMetric(pr.med, "proxy-msg/s")
	b.ReportMetric(dr.med, "direct-msg/s")
	b.ReportMetric(rr.med, "proxy/direct")
}
