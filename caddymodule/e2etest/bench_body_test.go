package e2etest

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
)

// BenchmarkProxyBody measures what placeholders in request bodies cost
// (issue 12: a 1 KiB JSON body with one placeholder within 10% of the
// same request without a body): through one agent-vault, keep-alive
// with 4 clients, rounds alternating GET (no body) and POST of a 1 KiB
// JSON body holding the session's placeholder, which the proxy swaps
// for the secret, and of the same body without a placeholder (the cost
// of carrying a body at all). Reported: the medians of each and of the per-round
// ratio body/no-body, for throughput and server CPU per request.
func BenchmarkProxyBody(b *testing.B) {
	e := setupBench(b)
	mode := e.modes[modeProxy]
	sess := e.srv.newSession(b, nil, "1h")
	proxyURL := *mode.proxy
	proxyURL.User = url.UserPassword("av", sess.Token)
	mode.proxy = &proxyURL
	ph := sess.Placeholders["BENCH_TOKEN"]
	pad := strings.Repeat("x", 1024-len(`{"token":"","pad":""}`)-len(ph))
	body := `{"token":"` + ph + `","pad":"` + pad + `"}`
	if len(body) != 1024 {
		b.Fatalf("body of %d bytes", len(body))
	}
	post := func(body string) func() (*http.Request, error) {
		return func() (*http.Request, error) {
			r, err := http.NewRequest(http.MethodPost, e.target, strings.NewReader(body))
			if err == nil {
				r.Header.Set("Content-Type", "application/json")
			}
			return r, err
		}
	}
	shapes := []struct {
		name string
		mk   func() (*http.Request, error)
	}{
		{"no-body", func() (*http.Request, error) { return http.NewRequest(http.MethodGet, e.target, nil) }},
		{"json-1k-placeholder", post(body)},
		{"json-1k-plain", post(strings.Replace(body, ph, strings.Repeat("y", len(ph)), 1))},
	}
	const workers = 4
	c := benchClient(mode, true, workers)
	defer c.CloseIdleConnections()
	d := benchRoundTime(b)
	for _, sh := range shapes {
		if _, err := driveWith(c, sh.mk, workers, d/4, 0); err != nil {
			b.Fatalf("%s warm-up: %v", sh.name, err)
		}
	}
	var rps, cpu [3][]float64
	var ratio, cpuRatio, plainRatio []float64
	for b.Loop() {
		var res [3]roundResult
		order := []int{0, 1, 2}
		if len(ratio)%2 == 1 {
			slices.Reverse(order)
		}
		for _, i := range order {
			r, err := driveWith(c, shapes[i].mk, workers, d, mode.pid)
			if err != nil {
				b.Fatalf("%s: %v", shapes[i].name, err)
			}
			res[i] = r
			rps[i] = append(rps[i], r.rps())
			cpu[i] = append(cpu[i], float64(r.cpuPerReq().Microseconds()))
		}
		ratio = append(ratio, res[1].rps()/res[0].rps())
		plainRatio = append(plainRatio, res[2].rps()/res[0].rps())
		cpuRatio = append(cpuRatio, float64(res[1].cpuPerReq())/float64(res[0].cpuPerReq()))
	}
	b.StopTimer()
	for i, sh := range shapes {
		r, c := statOf(rps[i]), statOf(cpu[i])
		fmt.Printf("bench: body %-20s %8.0f req/s [%.0f-%.0f]  server CPU %5.0f µs/req [%.0f-%.0f]\n", sh.name, r.med, r.lo, r.hi, c.med, c.lo, c.hi)
	}
	rr, cr, pr := statOf(ratio), statOf(cpuRatio), statOf(plainRatio)
	fmt.Printf("bench: body json-1k-plain / no-body (the body's own cost, nothing to swap): throughput %.2f [%.2f-%.2f]\n", pr.med, pr.lo, pr.hi)
	fmt.Printf("bench: body json-1k-placeholder / no-body: throughput %.2f [%.2f-%.2f], CPU per request %.2f [%.2f-%.2f] (%d rounds)\n",
		rr.med, rr.lo, rr.hi, cr.med, cr.lo, cr.hi, len(ratio))
	b.ReportMetric(rr.med, "body/nobody")
	b.ReportMetric(cr.med, "cpu-body/nobody")
}
