package e2etest

// Issue 8, the tests: one end-to-end test per finding, each with a
// hostile upstream (Go in this file, or testdata/hostile_upstream.py)
// that has received the injected secret and tries to hand it back to the
// agent, or a hostile agent. The agent is curl (or Go, where it is the
// better instrument) under av-launch or with a session of its own, over
// HTTP/1.1 (`curl --http1.1`) and HTTP/2 (curl's default, negotiated by
// ALPN inside the intercepted tunnel). Subtests are named after the
// protocol (…/h1, …/h2) so a failure says which one leaked.
//
// What the agent sees (stdout, headers, trailers, 1xx responses) and the
// server log must never hold a secret.

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unicode/utf16"

	"github.com/agentvault/caddy-agent-vault/internal/testenv"
)

// redactedMark is what the agent sees where a secret with no placeholder
// of its own was (scrub.Redacted).
const redactedMark = "[agent-vault:redacted]"

// protos are the agent's two protocols inside an intercepted tunnel.
var protos = []string{"h1", "h2"}

// ---------------------------------------------------------------------
// Agents: curl under av-launch, and Go clients with a session.

// agentView is what curl showed the agent for one request.
type agentView struct {
	status  int    // 0: no response
	version string // curl's %{http_version}: "1.1", "2"
	headers string // everything -D wrote: 1xx responses, the final headers, trailers
	body    []byte
	stderr  string
	exit    int
}

// all is everything the agent saw, as one text to search.
func (v agentView) all() string {
	return v.headers + "\n" + string(v.body) + "\n" + v.stderr
}

// curlReq is one curl invocation: its arguments, URL last.
type curlReq struct {
	name string
	args []string
}

func shq(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// agentCurls runs the requests with curl, one after the other, in ONE
// av-launch session (so they share its placeholders, and what one
// request stored another can read back). proto "h1" adds --http1.1;
// "h2" leaves curl's default, which negotiates HTTP/2 with the proxy's
// intercepting TLS (checked per request for https:// URLs). It returns
// each request's view and the child's environment.
func (s *server) agentCurls(t *testing.T, launchFlags []string, proto string, reqs []curlReq) (map[string]agentView, map[string]string) {
	t.Helper()
	dir := t.TempDir()
	var script strings.Builder
	script.WriteString("env > " + shq(filepath.Join(dir, "env")) + "\n")
	for i, r := range reqs {
		p := filepath.Join(dir, strconv.Itoa(i))
		script.WriteString("curl -sS")
		if proto == "h1" {
			script.WriteString(" --http1.1")
		}
		fmt.Fprintf(&script, " -D %s -o %s -w '%%{http_code} %%{http_version}'", shq(p+".h"), shq(p+".b"))
		for _, a := range r.args {
			script.WriteString(" " + shq(a))
		}
		fmt.Fprintf(&script, " > %s 2> %s; echo $? > %s\n", shq(p+".w"), shq(p+".e"), shq(p+".x"))
	}
	out, errOut, code := s.launch(launchFlags, "sh", "-c", script.String())
	if code != 0 {
		t.Fatalf("av-launch: exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
	}
	read := func(p string) []byte { b, _ := os.ReadFile(p); return b }
	views := map[string]agentView{}
	for i, r := range reqs {
		p := filepath.Join(dir, strconv.Itoa(i))
		var v agentView
		fmt.Sscanf(string(read(p+".w")), "%d %s", &v.status, &v.version)
		v.headers = string(read(p + ".h"))
		v.body = read(p + ".b")
		v.stderr = string(read(p + ".e"))
		v.exit, _ = strconv.Atoi(strings.TrimSpace(string(read(p + ".x"))))
		if proto == "h2" && v.status != 0 && strings.HasPrefix(r.args[len(r.args)-1], "https://") && v.version != "2" {
			t.Errorf("%s: curl's default negotiated HTTP/%s with the proxy, want HTTP/2", r.name, v.version)
		}
		views[r.name] = v
	}
	env := map[string]string{}
	for line := range strings.SplitSeq(string(read(filepath.Join(dir, "env"))), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			env[k] = v
		}
	}
	return views, env
}

// agentClientProto is the session's Go agent, HTTP/1.1 only or HTTP/2,
// decoding nothing itself (so the test reads what the proxy sent).
func agentClientProto(t testing.TB, sess session, proto string) *http.Client {
	t.Helper()
	c := sess.agentClient(t)
	tr := c.Transport.(*http.Transport)
	tr.DisableCompression = true
	if proto == "h1" {
		tr.ForceAttemptHTTP2 = false
		tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	}
	return c
}

// goView fetches url with c and renders everything the agent saw (1xx
// responses, status, headers, body, trailers) as text.
func goView(t *testing.T, c *http.Client, method, url string, wantProtoMajor int) (string, *http.Response) {
	t.Helper()
	var b strings.Builder
	trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
		fmt.Fprintf(&b, "informational %d\n", code)
		writeHeader(&b, http.Header(h))
		return nil
	}}
	req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), method, url, nil)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("%s %s: reading the body: %v", method, url, err)
	}
	if wantProtoMajor != 0 && resp.ProtoMajor != wantProtoMajor {
		t.Errorf("%s %s: agent spoke %s, want HTTP/%d", method, url, resp.Proto, wantProtoMajor)
	}
	fmt.Fprintf(&b, "%s %s\n", resp.Proto, resp.Status)
	writeHeader(&b, resp.Header)
	b.WriteString("\n")
	b.Write(body)
	b.WriteString("\ntrailers:\n")
	writeHeader(&b, resp.Trailer)
	return b.String(), resp
}

func writeHeader(b *strings.Builder, h http.Header) {
	keys := make([]string, 0, len(h))
	for k := range h {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		for _, v := range h[k] {
			fmt.Fprintf(b, "%s: %s\n", k, v)
		}
	}
}

// ---------------------------------------------------------------------
// Finding checks.

// asciiLower lowers ASCII letters only, leaving every other byte as it
// is (strings.ToLower would rewrite invalid UTF-8, such as UTF-16 text).
func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// ciIndex is the index of needle in hay, ignoring ASCII case; -1 if absent.
func ciIndex(hay, needle string) int { return strings.Index(asciiLower(hay), asciiLower(needle)) }

// around quotes the text around position i of s, for failure messages.
func around(s string, i, n int) string {
	lo, hi := max(0, i-60), min(len(s), i+n+60)
	return fmt.Sprintf("%q", s[lo:hi])
}

// checkNoSecret fails the test if text holds secret in any ASCII case.
func checkNoSecret(t *testing.T, finding, where, text, secret string) {
	t.Helper()
	if i := ciIndex(text, secret); i >= 0 {
		t.Errorf("finding %s: the secret reached the agent (%s): …%s…", finding, where, around(text, i, len(secret)))
	}
}

// checkLogClean fails the test if the server log holds secret in any
// form leakForms derives (in any ASCII case).
func checkLogClean(t *testing.T, finding string, s *server, secret string) {
	t.Helper()
	log := s.logs.String()
	for _, f := range leakForms(secret) {
		if i := ciIndex(log, f.value); i >= 0 {
			t.Errorf("finding %s: the server log holds the secret (form %s): …%s…", finding, f.name, around(log, i, len(f.value)))
		}
	}
}

// ---------------------------------------------------------------------
// A raw upstream: HTTP/1.1 written byte by byte, so that the test says
// exactly what goes on the wire (two Content-Encoding lines, header names
// of any case, trailers, 1xx responses, upgrades) without Go's server
// normalising it.

type rawUpstream struct {
	ln     net.Listener
	addr   string
	mu     sync.Mutex
	reqs   []seen
	wg     sync.WaitGroup
	live   map[net.Conn]struct{}
	closed bool
}

// rawHandler answers one request on bw (flushed after it returns, unless
// it hijacks conn itself). It returns false to close the connection.
type rawHandler func(r *http.Request, conn net.Conn, br *bufio.Reader, bw *bufio.Writer) bool

func newRawUpstream(t testing.TB, ca *testCA, useTLS bool, h rawHandler) *rawUpstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &rawUpstream{addr: ln.Addr().String(), live: map[net.Conn]struct{}{}}
	if useTLS {
		ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{ca.leaf(t)}, NextProtos: []string{"http/1.1"}})
	}
	u.ln = ln
	u.wg.Add(1)
	go func() {
		defer u.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u.mu.Lock()
			if u.closed {
				u.mu.Unlock()
				c.Close()
				return
			}
			u.live[c] = struct{}{}
			u.mu.Unlock()
			u.wg.Add(1)
			go func() {
				defer u.wg.Done()
				defer func() { u.mu.Lock(); delete(u.live, c); u.mu.Unlock(); c.Close() }()
				br, bw := bufio.NewReader(c), bufio.NewWriter(c)
				for {
					r, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					u.mu.Lock()
					u.reqs = append(u.reqs, seen{Method: r.Method, Path: r.URL.Path, RawQuery: r.URL.RawQuery, Proto: r.Proto, Header: r.Header.Clone()})
					u.mu.Unlock()
					keep := h(r, c, br, bw)
					io.Copy(io.Discard, r.Body)
					if bw.Flush() != nil || !keep {
						return
					}
				}
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		u.mu.Lock()
		u.closed = true
		for c := range u.live {
			c.Close()
		}
		u.mu.Unlock()
		u.wg.Wait()
	})
	return u
}

// requests returns the requests received so far whose path has prefix.
func (u *rawUpstream) requests(prefix string) []seen {
	u.mu.Lock()
	defer u.mu.Unlock()
	var out []seen
	for _, r := range u.reqs {
		if strings.HasPrefix(r.Path, prefix) {
			out = append(out, r)
		}
	}
	return out
}

// writeChunk writes one chunk of a chunked body and flushes it.
func writeChunk(bw *bufio.Writer, s string) {
	fmt.Fprintf(bw, "%x\r\n%s\r\n", len(s), s)
	bw.Flush()
}

// ---------------------------------------------------------------------
// Finding 1: header and trailer names.

// nameSecret is a token-safe secret (it can be a header name) with
// mixed case, so its canonical, upper and lower forms all differ.
const nameSecret = "ghp_HostileNameSecret0123456789abcXYZ"

// hostileNames sends the secret as header names (exact, upper, lower,
// canonical, inside a longer name), as a value, as trailer names
// announced in Trailer: before a streamed chunked body, and in a 103's
// header name and value. Every header or trailer whose name holds the
// secret has a value starting "evil-", which must never reach the agent:
// such a header is dropped, not renamed.
func hostileNames(r *http.Request, _ net.Conn, _ *bufio.Reader, bw *bufio.Writer) bool {
	if r.Header.Get("Authorization") != "Bearer "+nameSecret {
		io.WriteString(bw, "HTTP/1.1 401 Unauthorized\r\nContent-Length: 10\r\n\r\nno secret\n")
		return true
	}
	up, low, canon := strings.ToUpper(nameSecret), strings.ToLower(nameSecret), textproto.CanonicalMIMEHeaderKey(nameSecret)
	switch r.URL.Path {
	case "/names":
		fmt.Fprintf(bw, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Ok: fine\r\n"+
			"%s: evil-hdr-exact\r\n%s: evil-hdr-upper\r\n%s: evil-hdr-lower\r\n%s: evil-hdr-canonical\r\n"+
			"X-Pre-%s-Post: evil-hdr-contains\r\nX-Value: token=%s\r\nContent-Length: 9\r\n\r\nheaders.\n",
			nameSecret, up, low, canon, nameSecret, nameSecret)
	case "/trailers":
		// Announced, then sent after a body streamed in two flushed chunks.
		fmt.Fprintf(bw, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTrailer: %s, X-Keep, X-Trail-%s\r\nTransfer-Encoding: chunked\r\n\r\n", nameSecret, up)
		bw.Flush()
		writeChunk(bw, "part one\n")
		writeChunk(bw, "part two\n")
		fmt.Fprintf(bw, "0\r\n%s: evil-trl-exact\r\nX-Keep: kept\r\nX-Trail-%s: evil-trl-upper\r\n%s: evil-trl-unannounced-lower\r\nX-Trl-Value: %s\r\n\r\n",
			nameSecret, up, low, nameSecret)
	case "/early":
		fmt.Fprintf(bw, "HTTP/1.1 103 Early Hints\r\nLink: </style.css?k=%s>; rel=preload\r\n%s: evil-early-name\r\nX-Early-Ok: yes\r\n\r\n", nameSecret, nameSecret)
		bw.Flush()
		io.WriteString(bw, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\ndone\n")
	default:
		io.WriteString(bw, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
	}
	return true
}

// checkNamesView checks what the agent saw of /names, /trailers or
// /early, and lists every offending line (header, trailer, announcement,
// 103): one that holds the secret in any case, or one whose value says
// its name held the secret (it should have been dropped).
func checkNamesView(t *testing.T, what, text string) {
	t.Helper()
	var bad []string
	for line := range strings.SplitSeq(text, "\n") {
		line = strings.TrimRight(line, "\r")
		switch leaked, kept := ciIndex(line, nameSecret) >= 0, strings.Contains(line, "evil-"); {
		case leaked && kept:
			bad = append(bad, fmt.Sprintf("secret, not dropped: %q", line))
		case leaked:
			bad = append(bad, fmt.Sprintf("secret:              %q", line))
		case kept:
			bad = append(bad, fmt.Sprintf("renamed, not dropped: %q", line))
		}
	}
	if len(bad) > 0 {
		t.Errorf("finding 1 (header/trailer names): %s: %d lines the agent saw:\n\t%s", what, len(bad), strings.Join(bad, "\n\t"))
	}
}

func TestHostileHeaderNames(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t)
	tlsUp := newRawUpstream(t, ca, true, hostileNames)
	plainUp := newRawUpstream(t, ca, false, hostileNames)
	s := startServer(t, ca, serverOpts{})
	s.putCredential("NAME_TOKEN", nameSecret)
	s.putService("names-tls", map[string]any{"host": tlsUp.addr, "auth": map[string]any{"type": "bearer", "token": "NAME_TOKEN"}})
	s.putService("names-plain", map[string]any{"host": plainUp.addr, "allow_cleartext": true, "auth": map[string]any{"type": "bearer", "token": "NAME_TOKEN"}})

	// The proxy speaks HTTP/1.1 to upstreams, so this raw HTTP/1.1
	// upstream is what any upstream looks like to it; towards an h2
	// agent the proxy sends the trailers as real HTTP/2 trailers.
	run := func(t *testing.T, proto, base string) {
		views, _ := s.agentCurls(t, nil, proto, []curlReq{
			{"names", []string{base + "/names"}},
			{"trailers", []string{base + "/trailers"}},
			{"early", []string{base + "/early"}},
		})
		for _, c := range []struct{ name, what, body string }{
			{"names", "/names (header names)", "headers.\n"},
			{"trailers", "/trailers (Trailer: announcement, trailer names)", "part one\npart two\n"},
			{"early", "/early (103 Early Hints)", "done\n"},
		} {
			v := views[c.name]
			if v.status != 200 || string(v.body) != c.body {
				t.Errorf("%s: curl exit %d status %d body %q stderr %q", c.what, v.exit, v.status, v.body, v.stderr)
			}
			checkNamesView(t, "curl "+proto+" "+c.what, v.all())
		}
		mustContain(t, "/names headers (an ordinary header is relayed)", strings.ToLower(views["names"].headers), "x-ok: fine")
	}
	goAgent := func(t *testing.T, proto, base string, major int) {
		sess := s.newSession(t, nil, "10m")
		c := agentClientProto(t, sess, proto)
		text, _ := goView(t, c, "GET", base+"/names", major)
		checkNamesView(t, "Go agent "+proto+" /names (header names)", text)
		text, resp := goView(t, c, "GET", base+"/trailers", major)
		checkNamesView(t, "Go agent "+proto+" /trailers (Trailer: announcement, trailer names)", text)
		if got := resp.Trailer.Get("X-Keep"); got != "kept" {
			t.Errorf("Go agent %s: trailer X-Keep = %q, want \"kept\" (an ordinary trailer is relayed)\n%s", proto, got, text)
		}
		text, _ = goView(t, c, "GET", base+"/early", major)
		checkNamesView(t, "Go agent "+proto+" /early (103 Early Hints)", text)
	}

	for _, proto := range protos {
		major := map[string]int{"h1": 1, "h2": 2}[proto]
		t.Run("tls/"+proto, func(t *testing.T) {
			run(t, proto, "https://"+tlsUp.addr)
			goAgent(t, proto, "https://"+tlsUp.addr, major)
		})
	}
	// Absolute-form http:// through HTTP_PROXY is HTTP/1.1 between agent
	// and proxy whatever the client prefers: there is no /h2 here.
	t.Run("cleartext/h1", func(t *testing.T) {
		run(t, "h1", "http://"+plainUp.addr)
		goAgent(t, "h1", "http://"+plainUp.addr, 1)
	})
	if n := len(tlsUp.requests("/")) + len(plainUp.requests("/")); n == 0 {
		t.Fatal("the upstreams received no request")
	}
	checkLogClean(t, "1", s, nameSecret)
}

// ---------------------------------------------------------------------
// Finding 2: Content-Encoding on two header lines.

const encSecret = "ghp_EncodingSecret0123456789abcdefXYZ"

type codingCase struct {
	id      string
	lines   []string // one Content-Encoding line each
	body    func(plain []byte) []byte
	chunked bool
	want    int
}

var codingCases = []codingCase{
	{"gzip-gzip-two-lines", []string{"gzip", "gzip"}, func(b []byte) []byte { return gzipBytes(gzipBytes(b)) }, false, 502},
	{"gzip-gzip-two-lines-chunked", []string{"gzip", "gzip"}, func(b []byte) []byte { return gzipBytes(gzipBytes(b)) }, true, 502},
	{"gzip-br-two-lines", []string{"gzip", "br"}, gzipBytes, false, 502},
	{"br-gzip-two-lines", []string{"br", "gzip"}, gzipBytes, false, 502},
	{"gzip-identity-two-lines", []string{"gzip", "identity"}, gzipBytes, false, 200},
	{"gzip-identity-two-lines-chunked", []string{"gzip", "identity"}, gzipBytes, true, 200},
	{"gzip-comma-gzip-one-line", []string{"gzip, gzip"}, func(b []byte) []byte { return gzipBytes(gzipBytes(b)) }, false, 502},
	{"br", []string{"br"}, func(b []byte) []byte { return b }, false, 502},
	{"zstd", []string{"zstd"}, func(b []byte) []byte { return b }, false, 502},
	{"deflate", []string{"deflate"}, func(b []byte) []byte { return b }, false, 502},
}

func hostileCodings(r *http.Request, _ net.Conn, _ *bufio.Reader, bw *bufio.Writer) bool {
	id := strings.TrimPrefix(r.URL.Path, "/ce/")
	for _, c := range codingCases {
		if c.id != id {
			continue
		}
		body := c.body([]byte("you sent: " + r.Header.Get("Authorization") + "\n"))
		io.WriteString(bw, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n")
		for _, l := range c.lines {
			io.WriteString(bw, "Content-Encoding: "+l+"\r\n")
		}
		if c.chunked {
			io.WriteString(bw, "Transfer-Encoding: chunked\r\n\r\n")
			bw.Flush()
			half := len(body) / 2
			writeChunk(bw, string(body[:half]))
			writeChunk(bw, string(body[half:]))
			io.WriteString(bw, "0\r\n\r\n")
		} else {
			fmt.Fprintf(bw, "Content-Length: %d\r\n\r\n", len(body))
			bw.Write(body)
		}
		return true
	}
	io.WriteString(bw, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
	return true
}

// gunzipAll undoes as many gzip layers as b has.
func gunzipAll(b []byte) []byte {
	for range 4 {
		zr, err := gzip.NewReader(bytes.NewReader(b))
		if err != nil {
			return b
		}
		d, err := io.ReadAll(zr)
		if err != nil && len(d) == 0 {
			return b
		}
		b = d
	}
	return b
}

func TestHostileContentEncodingLines(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t)
	up := newRawUpstream(t, ca, true, hostileCodings)
	s := startServer(t, ca, serverOpts{})
	s.putCredential("ENC_TOKEN", encSecret)
	s.putService("codings", map[string]any{"host": up.addr, "auth": map[string]any{"type": "bearer", "token": "ENC_TOKEN"}})
	for _, proto := range protos {
		t.Run(proto, func(t *testing.T) {
			var reqs []curlReq
			for _, c := range codingCases {
				reqs = append(reqs, curlReq{c.id, []string{"https://" + up.addr + "/ce/" + c.id}})
			}
			views, env := s.agentCurls(t, nil, proto, reqs)
			ph := env["ENC_TOKEN"]
			for _, c := range codingCases {
				v := views[c.id]
				what := fmt.Sprintf("%s (Content-Encoding lines %q)", c.id, c.lines)
				checkNoSecret(t, "2 (Content-Encoding)", what, v.all(), encSecret)
				checkNoSecret(t, "2 (Content-Encoding)", what+", body gunzipped by the agent", string(gunzipAll(v.body)), encSecret)
				if v.status != c.want {
					t.Errorf("finding 2: %s: status %d, want %d; body %q", what, v.status, c.want, v.body)
					continue
				}
				lowHeaders := strings.ToLower(v.headers)
				if c.want == 502 {
					if !strings.Contains(lowHeaders, "x-agent-vault-refusal: upstream") || !strings.Contains(strings.ToLower(string(v.body)), "encod") {
						t.Errorf("finding 2: %s: 502 without a readable reason about the encoding: headers %q body %q", what, v.headers, v.body)
					}
					continue
				}
				if strings.Contains(lowHeaders, "content-encoding:") {
					t.Errorf("finding 2: %s: decoded body still labelled: %q", what, v.headers)
				}
				if string(v.body) != "you sent: Bearer "+ph+"\n" {
					t.Errorf("finding 2: %s: body %q, want the decoded, scrubbed echo with placeholder %q", what, v.body, ph)
				}
			}
		})
	}
	if len(up.requests("/ce/")) == 0 {
		t.Fatal("the upstream received no request")
	}
	checkLogClean(t, "2", s, encSecret)
}

// ---------------------------------------------------------------------
// Finding 3: encodings frameworks use. The same encoders as
// testdata/hostile_upstream.py, written again in Go: the agent's output
// must hold the secret in none of them.

// awsSecret has '/', '+' and '!', which every URL escaping flavour
// treats differently (AWS style), and ends in "~?>" so that its base64
// has a '+' or '/' at every alignment (std and url differ) and
// html.escape changes it.
const awsSecret = "AKIA/+!wJalrXUtnFEMI/K7MDENG+bPxRfiCY~?>"

type form struct{ name, value string }

func b64(enc *base64.Encoding, b string) string { return enc.EncodeToString([]byte(b)) }

// pyQuote is Python's urllib.parse.quote: upper-case hex, and letters,
// digits, "_.-~" and the safe characters left alone.
func pyQuote(s, safe string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("_.-~", c) >= 0 || strings.IndexByte(safe, c) >= 0 {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

// escapeExcept percent-escapes every byte outside keep, hex in the given case.
func escapeExcept(s, keep string, lowerHex bool) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte(keep, c) >= 0 {
			b.WriteByte(c)
		} else if lowerHex {
			fmt.Fprintf(&b, "%%%02x", c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

func everyByte(s, format string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		fmt.Fprintf(&b, format, s[i])
	}
	return b.String()
}

func everyRune(s, format string) string {
	var b strings.Builder
	for _, r := range s {
		fmt.Fprintf(&b, format, r)
	}
	return b.String()
}

// pyJSON is json.dumps(s) for ASCII s: only '"', '\' and control
// characters escaped.
func pyJSON(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r < 0x20 || r > 0x7e:
			fmt.Fprintf(&b, "\\u%04x", r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

func dotnetJSON(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case strings.ContainsRune("+<>&'\"`", r) || r < 0x20 || r > 0x7e:
			fmt.Fprintf(&b, "\\u%04X", r)
		case r == '\\':
			b.WriteString(`\\`)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

func pyHTMLEscape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&quot;", "'", "&#x27;").Replace(s)
}

func utf16Bytes(s string, bigEndian bool) string {
	var b []byte
	for _, u := range utf16.Encode([]rune(s)) {
		if bigEndian {
			b = append(b, byte(u>>8), byte(u))
		} else {
			b = append(b, byte(u), byte(u>>8))
		}
	}
	return string(b)
}

// b64Core is the run of base64 characters that depends on nothing but
// s when s starts at byte offset align (mod 3) of a larger base64-
// encoded blob: any blob holding s there contains it, whatever comes
// before or after.
func b64Core(enc *base64.Encoding, s string, align int) string {
	full := enc.EncodeToString(append(bytes.Repeat([]byte{0}, align), s...))
	start := (8*align + 5) / 6
	end := (8*align + 8*len(s)) / 6
	return full[start:end]
}

// encodedForms are the forms the Python upstream sends, keyed by its
// form names (the b64-blob ones are the whole blob it sends).
func encodedForms(s string) []form {
	std, url := base64.StdEncoding, base64.URLEncoding
	blob := func(enc *base64.Encoding, k int) string {
		return enc.EncodeToString([]byte(strings.Repeat("x", k) + s + "tail"))
	}
	return []form{
		{"raw", s},
		{"b64-std", b64(std, s)},
		{"b64-std-nopad", b64(base64.RawStdEncoding, s)},
		{"b64-url", b64(url, s)},
		{"b64-url-nopad", b64(base64.RawURLEncoding, s)},
		{"b64-blob-std-0", blob(std, 0)},
		{"b64-blob-std-1", blob(std, 1)},
		{"b64-blob-std-2", blob(std, 2)},
		{"b64-blob-url-0", blob(url, 0)},
		{"b64-blob-url-1", blob(url, 1)},
		{"b64-blob-url-2", blob(url, 2)},
		{"hex-lower", hex.EncodeToString([]byte(s))},
		{"hex-upper", strings.ToUpper(hex.EncodeToString([]byte(s)))},
		{"quote", pyQuote(s, "/")},
		{"quote-safe-empty", pyQuote(s, "")},
		{"quote-plus", strings.ReplaceAll(pyQuote(s, " "), " ", "+")},
		{"pct-lower", escapeExcept(s, "_.-~", true)},
		{"pct-every-byte-lower", everyByte(s, "%%%02x")},
		{"pct-every-byte-upper", everyByte(s, "%%%02X")},
		{"js-encodeURIComponent", escapeExcept(s, "-_.!~*'()", false)},
		{"dotnet-UrlEncode", strings.ReplaceAll(escapeExcept(s, "-_.!*() ", true), " ", "+")},
		{"json-dumps", pyJSON(s)},
		{"json-every-char-u", `"` + everyRune(s, `\u%04x`) + `"`},
		{"json-php-slash", strings.ReplaceAll(pyJSON(s), "/", `\/`)},
		{"json-dotnet", dotnetJSON(s)},
		{"html-escape", pyHTMLEscape(s)},
		{"html-entities-dec", everyRune(s, "&#%d;")},
		{"html-entities-hex", everyRune(s, "&#x%x;")},
		{"utf16-le", utf16Bytes(s, false)},
		{"utf16-be", utf16Bytes(s, true)},
	}
}

// leakForms is every string whose presence shows the agent got s: the
// encoded forms (the JSON ones without their quotes, the blobs replaced
// by the alignment-independent base64 runs).
func leakForms(s string) []form {
	var out []form
	for _, f := range encodedForms(s) {
		switch {
		case strings.HasPrefix(f.name, "b64-blob-"):
			continue
		case strings.HasPrefix(f.name, "json-"):
			f.value = strings.Trim(f.value, `"`)
		}
		out = append(out, f)
	}
	for _, e := range []struct {
		name string
		enc  *base64.Encoding
	}{{"std", base64.StdEncoding}, {"url", base64.URLEncoding}} {
		for align := range 3 {
			out = append(out, form{fmt.Sprintf("b64-%s-at-offset-%d-mod-3", e.name, align), b64Core(e.enc, s, align)})
		}
	}
	return out
}

// pythonUpstream runs testdata/hostile_upstream.py on ports loopback
// ports with a certificate from ca, and returns their addresses.
func pythonUpstream(t *testing.T, ca *testCA, ports int) []string {
	t.Helper()
	py, err := exec.LookPath("python3")
	if err != nil {
		testenv.Unavailable(t, "python3 not found: the Python upstream cannot run")
	}
	dir := t.TempDir()
	cert := ca.leaf(t)
	certPath, keyPath := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]}), 0o600)
	keyDER, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600)
	cmd := exec.Command(py, filepath.Join("testdata", "hostile_upstream.py"), "--cert", certPath, "--key", keyPath, "--ports", strconv.Itoa(ports))
	stdin, _ := cmd.StdinPipe() // closing it stops the upstream
	stdout, _ := cmd.StdoutPipe()
	stderr := newLogBuffer()
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	lines := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(stdout).ReadString('\n')
		lines <- line
		io.Copy(io.Discard, stdout)
	}()
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		stdin.Close()
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	})
	var line string
	select {
	case line = <-lines:
	case <-time.After(20 * time.Second):
		t.Fatalf("the Python upstream did not report its ports\n%s", stderr.String())
	}
	f := strings.Fields(line)
	if len(f) != ports+1 || f[0] != "PORTS" {
		t.Fatalf("the Python upstream said %q\n%s", line, stderr.String())
	}
	addrs := make([]string, ports)
	for i := range addrs {
		addrs[i] = "127.0.0.1:" + f[i+1]
	}
	return addrs
}

func TestHostileEncodedForms(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t)
	addr := pythonUpstream(t, ca, 1)[0]
	s := startServer(t, ca, serverOpts{})
	s.putCredential("AWS_SECRET_ACCESS_KEY", awsSecret)
	s.putService("aws", map[string]any{"host": addr, "auth": map[string]any{"type": "bearer", "token": "AWS_SECRET_ACCESS_KEY"}})
	forms := encodedForms(awsSecret)
	leaks := leakForms(awsSecret)
	wantHash := fmt.Sprintf("%x", sha256.Sum256([]byte(awsSecret)))
	for _, proto := range protos {
		t.Run(proto, func(t *testing.T) {
			var reqs []curlReq
			for _, f := range forms {
				reqs = append(reqs, curlReq{f.name, []string{"https://" + addr + "/form/" + f.name}})
			}
			views, env := s.agentCurls(t, nil, proto, reqs)
			ph := env["AWS_SECRET_ACCESS_KEY"]
			if !strings.HasPrefix(ph, "agvph_") {
				t.Fatalf("the agent's placeholder is %q", ph)
			}
			var stand []string // the placeholder and the mark, in every form
			for _, x := range []string{ph, redactedMark} {
				for _, f := range encodedForms(x) {
					stand = append(stand, f.value)
				}
				for _, f := range leakForms(x) {
					stand = append(stand, f.value)
				}
			}
			for _, f := range forms {
				t.Run(f.name, func(t *testing.T) {
					v := views[f.name]
					if v.status != 200 {
						t.Fatalf("finding 3: form %s: status %d, body %q, stderr %q", f.name, v.status, v.body, v.stderr)
					}
					if !strings.Contains(strings.ToLower(v.headers), "x-token-sha256: "+wantHash) {
						t.Fatalf("form %s: the upstream did not receive the secret (headers %q)", f.name, v.headers)
					}
					text := v.all()
					var as []string
					for _, l := range leaks {
						if ciIndex(text, l.value) >= 0 {
							as = append(as, l.name)
						}
					}
					if len(as) > 0 {
						t.Errorf("finding 3: form %s: the agent got the secret (found as %s): body %q", f.name, strings.Join(as, ", "), v.body)
						return
					}
					if !bytes.HasPrefix(v.body, []byte("BEGIN "+f.name+":")) || !bytes.HasSuffix(v.body, []byte(":END\n")) {
						t.Errorf("form %s: body not framed as sent: %q", f.name, v.body)
					}
					replaced := false
					for _, x := range stand {
						if ciIndex(string(v.body), x) >= 0 {
							replaced = true
							break
						}
					}
					if !replaced {
						t.Errorf("finding 3: form %s: neither the placeholder %s nor %s is where the secret was: %q", f.name, ph, redactedMark, v.body)
					}
				})
			}
		})
	}
	log := s.logs.String()
	for _, l := range leaks {
		if i := ciIndex(log, l.value); i >= 0 {
			t.Errorf("finding 3: the server log holds the secret as %s: …%s…", l.name, around(log, i, len(l.value)))
		}
	}
}

// ---------------------------------------------------------------------
// Finding 4: stored and read back.

const storedSecret = "ghp_StoredSecret0123456789abcdefXYZ"

func TestHostileStoredReadBack(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t)
	addrs := pythonUpstream(t, ca, 2) // two ports, one store
	hostA, hostB := addrs[0], addrs[1]
	s := startServer(t, ca, serverOpts{})
	s.putCredential("STORED_TOKEN", storedSecret)
	s.putService("api", map[string]any{"host": hostA + "/write/*", "auth": map[string]any{"type": "bearer", "token": "STORED_TOKEN"}})
	s.putService("open", map[string]any{"host": hostA + "/*", "auth": map[string]any{"type": "passthrough"}})
	s.putService("other", map[string]any{"host": hostB, "auth": map[string]any{"type": "passthrough"}})
	for _, proto := range protos {
		t.Run(proto, func(t *testing.T) {
			views, env := s.agentCurls(t, []string{"--services", "api,open,other"}, proto, []curlReq{
				{"write", []string{"-X", "POST", "https://" + hostA + "/write/store?slot=" + proto}},
				{"read-open", []string{"https://" + hostA + "/read?slot=" + proto}},
				{"read-other-host", []string{"https://" + hostB + "/read?slot=" + proto}},
			})
			ph := env["STORED_TOKEN"]
			if w := views["write"]; w.status != 200 {
				t.Fatalf("write through api: status %d body %q stderr %q", w.status, w.body, w.stderr)
			}
			for _, name := range []string{"read-open", "read-other-host"} {
				v := views[name]
				what := map[string]string{
					"read-open":       "read back through the passthrough service on the same host, no secret in the request",
					"read-other-host": "read back through a passthrough service on another host, no secret in the request",
				}[name]
				if v.status != 200 {
					t.Errorf("finding 4: %s: status %d body %q stderr %q", what, v.status, v.body, v.stderr)
					continue
				}
				checkNoSecret(t, "4 (stored and read back)", what, v.all(), storedSecret)
				if string(v.body) != "stored: Bearer "+ph+"\n" {
					t.Errorf("finding 4: %s: body %q, want the stored value with the placeholder %s", what, v.body, ph)
				}
			}
		})
	}
	checkLogClean(t, "4", s, storedSecret)
}

// ---------------------------------------------------------------------
// Finding 5: upgrades after injection. HTTP/1.1 only: HTTP/2 has no
// Upgrade (RFC 9113 §8.6), so there is no /h2 subtest.

const upgradeSecret = "ghp_UpgradeSecret0123456789abcdefXYZ"

// hostileUpgrade accepts any upgrade: 101 with the requested protocol,
// then raw bytes that hold the Authorization it received, then an echo
// of what the client sends (upper-cased).
func hostileUpgrade(r *http.Request, conn net.Conn, br *bufio.Reader, bw *bufio.Writer) bool {
	proto := r.Header.Get("Upgrade")
	if proto == "" {
		io.WriteString(bw, "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n")
		return true
	}
	fmt.Fprintf(bw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: %s\r\nConnection: Upgrade\r\n\r\n", proto)
	if strings.EqualFold(proto, "websocket") {
		bw.Flush()
		wsEcho(conn, br)
		return false
	}
	fmt.Fprintf(bw, "greeting %s\n", r.Header.Get("Authorization"))
	bw.Flush()
	buf := make([]byte, 64)
	for {
		n, err := br.Read(buf)
		if n > 0 {
			conn.Write(bytes.ToUpper(buf[:n]))
		}
		if err != nil {
			return false
		}
	}
}

// upgradeOverTunnel sends an upgrade handshake for proto to target's
// /up through an intercepted tunnel and returns the answer and the
// connection's reader.
func upgradeOverTunnel(t *testing.T, s *server, sess session, target, proto string) (*http.Response, io.ReadWriter, *bufio.Reader) {
	t.Helper()
	conn := dialTunnelTLS(t, s, sess, target)
	fmt.Fprintf(conn, "GET /up HTTP/1.1\r\nHost: %s\r\nUpgrade: %s\r\nConnection: Upgrade\r\n\r\n", target, proto)
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("upgrade to %s: %v", proto, err)
	}
	return resp, conn, br
}

func TestHostileUpgrade(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t)
	refusing := newRawUpstream(t, ca, true, hostileUpgrade)
	opted := newRawUpstream(t, ca, true, hostileUpgrade)
	s := startServer(t, ca, serverOpts{})
	s.putCredential("UPGRADE_TOKEN", upgradeSecret)
	s.putService("plain-upgrades", map[string]any{"host": refusing.addr, "auth": map[string]any{"type": "bearer", "token": "UPGRADE_TOKEN"}})
	sess := s.newSession(t, nil, "10m")

	t.Run("refused/h1", func(t *testing.T) {
		resp, _, br := upgradeOverTunnel(t, s, sess, refusing.addr, "tcp-echo")
		var body string
		if resp.StatusCode != http.StatusSwitchingProtocols {
			body = readBody(t, resp)
		} else {
			// Relayed: what the upstream sent first, raw and unscanned.
			body, _ = br.ReadString('\n')
			body = "relayed after 101: " + body
		}
		checkNoSecret(t, "5 (upgrade)", "answer to the tcp-echo upgrade", fmt.Sprint(resp.Header)+body, upgradeSecret)
		if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "tcp-echo") {
			t.Errorf("finding 5: a tcp-echo upgrade on an injected request: %d %q, want 403 with a reason naming tcp-echo", resp.StatusCode, body)
		}
		if n := len(refusing.requests("/up")); n != 0 {
			t.Errorf("finding 5: the refused upgrade reached the upstream (%d requests)", n)
		}
	})

	t.Run("websocket/h1", func(t *testing.T) {
		resp, conn, br := upgradeOverTunnel(t, s, sess, refusing.addr, "websocket")
		if resp.StatusCode != http.StatusSwitchingProtocols {
			t.Fatalf("a WebSocket upgrade: %d %q, want 101 as before", resp.StatusCode, readBody(t, resp))
		}
		wsSend(t, conn, "hello")
		if got, err := wsRecv(br); err != nil || got != "HELLO" {
			t.Fatalf("WebSocket echo: %q %v", got, err)
		}
		if got := refusing.requests("/up"); len(got) == 0 || got[len(got)-1].Header.Get("Authorization") != "Bearer "+upgradeSecret {
			t.Fatal("the WebSocket handshake was not injected")
		}
	})

	t.Run("allowed/h1", func(t *testing.T) {
		var out map[string]any
		svc := map[string]any{"host": opted.addr, "allow_upgrades": []string{"TCP-Echo"}, "auth": map[string]any{"type": "bearer", "token": "UPGRADE_TOKEN"}}
		if code := s.api("PUT", "/api/v1/services/opted-in", svc, &out); code != http.StatusOK {
			t.Fatalf("finding 5: PUT a service with \"allow_upgrades\": [\"TCP-Echo\"]: %d %v", code, out)
		}
		sess := s.newSession(t, nil, "10m")
		resp, conn, br := upgradeOverTunnel(t, s, sess, opted.addr, "tcp-echo")
		if resp.StatusCode != http.StatusSwitchingProtocols {
			t.Fatalf("finding 5: tcp-echo with allow_upgrades [TCP-Echo] (case-insensitive): %d %q, want 101", resp.StatusCode, readBody(t, resp))
		}
		if _, err := br.ReadString('\n'); err != nil { // the greeting; relayed as the operator allowed
			t.Fatal(err)
		}
		io.WriteString(conn, "hello")
		buf := make([]byte, 5)
		if _, err := io.ReadFull(br, buf); err != nil || string(buf) != "HELLO" {
			t.Fatalf("tcp-echo relay: %q %v", buf, err)
		}
	})
	checkLogClean(t, "5", s, upgradeSecret)
}

// ---------------------------------------------------------------------
// Finding 6: revocation and expiry end streams and upgraded connections,
// absolute-form included, within a second.

// endSlack is added to the one second allowed: the server's sweeper and
// a loaded race-built binary.
const endSlack = 500 * time.Millisecond

// stream is one open connection of the agent's; ended is closed with the
// time it ended.
type stream struct {
	what  string
	ended chan time.Time
}

func watchEnd(what string, r io.Reader) stream {
	st := stream{what: what, ended: make(chan time.Time, 1)}
	go func() {
		io.Copy(io.Discard, r) // returns at EOF or on an error: either way the stream ended
		st.ended <- time.Now()
	}()
	return st
}

// sseAbsoluteForm opens GET http://target/sse through the proxy and
// reads the first event.
func sseAbsoluteForm(t *testing.T, s *server, sess session, target string) stream {
	t.Helper()
	conn, err := net.DialTimeout("tcp", s.proxyAddr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(30 * time.Second)) // bounds a broken test
	fmt.Fprintf(conn, "GET http://%s/sse HTTP/1.1\r\nHost: %s\r\nProxy-Authorization: %s\r\n\r\n", target, target, basicAuth(sess.Token))
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("absolute-form SSE: %v %v", resp, err)
	}
	rd := bufio.NewReader(resp.Body)
	if line, err := rd.ReadString('\n'); err != nil || line != "data: event 1\n" {
		t.Fatalf("absolute-form SSE first event: %q %v", line, err)
	}
	return watchEnd("absolute-form http:// SSE stream", rd)
}

// wsAbsoluteForm upgrades GET http://target/ws through the proxy and
// leaves it idle.
func wsAbsoluteForm(t *testing.T, s *server, sess session, target string) stream {
	t.Helper()
	conn, err := net.DialTimeout("tcp", s.proxyAddr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	fmt.Fprintf(conn, "GET http://%s/ws HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nProxy-Authorization: %s\r\n\r\n", target, target, basicAuth(sess.Token))
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("absolute-form upgrade: %v %v", resp, err)
	}
	return watchEnd("absolute-form http:// upgraded (WebSocket) connection", br)
}

func sseTunnel(t *testing.T, sess session, proto, target string) stream {
	t.Helper()
	c := agentClientProto(t, sess, proto)
	c.Timeout = 30 * time.Second
	resp, err := c.Get("https://" + target + "/sse")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("SSE in a tunnel: %v %v", resp, err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if want := map[string]int{"h1": 1, "h2": 2}[proto]; resp.ProtoMajor != want {
		t.Errorf("SSE in a tunnel spoke %s, want HTTP/%d", resp.Proto, want)
	}
	rd := bufio.NewReader(resp.Body)
	if line, err := rd.ReadString('\n'); err != nil || line != "data: event 1\n" {
		t.Fatalf("SSE in a tunnel, first event: %q %v", line, err)
	}
	return watchEnd("SSE stream in a CONNECT tunnel ("+proto+")", rd)
}

func wsTunnel(t *testing.T, s *server, sess session, target string) stream {
	t.Helper()
	conn := dialTunnelTLS(t, s, sess, target)
	io.WriteString(conn, "GET /ws HTTP/1.1\r\nHost: "+target+"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade in a tunnel: %v %v", resp, err)
	}
	return watchEnd("upgraded (WebSocket) connection in a CONNECT tunnel (h1)", br)
}

// waitEnded waits for every stream to end and checks it ended between
// from (exclusive of a stream that ended early) and from+1s+slack.
func waitEnded(t *testing.T, why string, from time.Time, streams ...stream) {
	t.Helper()
	for _, st := range streams {
		select {
		case at := <-st.ended:
			d := at.Sub(from)
			t.Logf("%s ended %v after the %s", st.what, d.Round(time.Millisecond), why)
			if d < -100*time.Millisecond {
				t.Errorf("finding 6: %s ended %v before the %s: the test did not hold it open", st.what, -d, why)
			} else if d > time.Second+endSlack {
				t.Errorf("finding 6: %s ended %v after the %s, want within 1s", st.what, d.Round(time.Millisecond), why)
			}
		case <-time.After(time.Until(from) + 5*time.Second):
			t.Errorf("finding 6: %s still open 5s after the %s", st.what, why)
		}
	}
}

func TestHostileSessionEnd(t *testing.T) {
	ca := newTestCA(t)
	plain := newUpstream(t, ca, false)
	secure := newUpstream(t, ca, true)
	s := startServer(t, ca, serverOpts{})
	s.putCredential("END_TOKEN", "ghp_EndSecret0123456789abcdefXYZ")
	s.putService("plain", map[string]any{"host": plain.hostPort(), "allow_cleartext": true, "auth": map[string]any{"type": "bearer", "token": "END_TOKEN"}})
	s.putService("secure", map[string]any{"host": secure.hostPort(), "auth": map[string]any{"type": "bearer", "token": "END_TOKEN"}})

	// What each transport holds open in one session. Absolute-form is
	// HTTP/1.1 to the proxy; HTTP/2 has no Upgrade, so h2 holds an SSE
	// stream only.
	open := map[string]func(t *testing.T, sess session) []stream{
		"cleartext/h1": func(t *testing.T, sess session) []stream {
			return []stream{sseAbsoluteForm(t, s, sess, plain.hostPort()), wsAbsoluteForm(t, s, sess, plain.hostPort())}
		},
		"tunnel/h1": func(t *testing.T, sess session) []stream {
			return []stream{sseTunnel(t, sess, "h1", secure.hostPort()), wsTunnel(t, s, sess, secure.hostPort())}
		},
		"tunnel/h2": func(t *testing.T, sess session) []stream {
			return []stream{sseTunnel(t, sess, "h2", secure.hostPort())}
		},
	}
	names := []string{"cleartext/h1", "tunnel/h1", "tunnel/h2"}
	t.Run("revoke", func(t *testing.T) {
		for _, name := range names {
			t.Run(name, func(t *testing.T) {
				sess := s.newSession(t, nil, "10m")
				streams := open[name](t, sess)
				from := time.Now()
				s.mustAPI("DELETE", "/api/v1/sessions/"+sess.ID, nil, http.StatusNoContent, nil)
				waitEnded(t, "revocation (DELETE /api/v1/sessions/{id})", from, streams...)
			})
		}
	})
	t.Run("expire", func(t *testing.T) {
		for _, name := range names {
			t.Run(name, func(t *testing.T) {
				t.Parallel() // each waits for its own session's 2s
				sess := s.newSession(t, nil, "2s")
				streams := open[name](t, sess)
				if time.Now().After(sess.ExpiresAt) {
					t.Fatal("the session expired before its streams were open; the test machine is too slow for a 2s TTL")
				}
				waitEnded(t, "session's expiry (ttl 2s)", sess.ExpiresAt, streams...)
			})
		}
	})
}

// ---------------------------------------------------------------------
// Finding 7: the broker never reaches itself. The agent's leg to the
// proxy is HTTP/1.1 (CONNECT and absolute-form); the proxy's listener
// speaks no cleartext HTTP/2, which the h2c subtest checks.

func TestHostileSelfReach(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t)
	s := startTunnelServer(t, ca) // AGENT_VAULT_ALLOW_PRIVATE_NETWORKS=127.0.0.0/8,::1/128 and unmatched tunnel
	sess := s.newSession(t, nil, "10m")
	auth := basicAuth(sess.Token)
	_, apiPort, _ := net.SplitHostPort(s.apiAddr)
	_, proxyPort, _ := net.SplitHostPort(s.proxyAddr)

	// afterRefusal checks that what follows a refused CONNECT on the same
	// connection is the proxy talking, not a tunnel to the API.
	afterRefusal := func(t *testing.T, conn net.Conn, what string) {
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(conn, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			return // closed after the refusal: nothing went anywhere
		}
		if body := readBody(t, resp); strings.Contains(body, `"status"`) {
			t.Errorf("finding 7: %s: the management API answered through the proxy: %q", what, body)
		}
	}
	for _, target := range []struct{ name, hostPort string }{
		{"api", s.apiAddr},
		{"api-by-name", "localhost:" + apiPort},
		{"api-ipv4-mapped", "[::ffff:127.0.0.1]:" + apiPort},
		{"proxy", s.proxyAddr},
		{"proxy-by-name", "localhost:" + proxyPort},
	} {
		t.Run(target.name+"/h1", func(t *testing.T) {
			resp, conn := rawConnect(t, s.proxyAddr, target.hostPort, auth)
			if resp.StatusCode == http.StatusOK {
				// A tunnel to the broker itself: show what it reaches.
				conn.SetDeadline(time.Now().Add(10 * time.Second))
				fmt.Fprintf(conn, "CONNECT %s HTTP/1.1\r\nHost: %s\r\nProxy-Authorization: %s\r\n\r\n", s.apiAddr, s.apiAddr, auth)
				nested, err := http.ReadResponse(bufio.NewReader(conn), &http.Request{Method: http.MethodConnect})
				status := "no answer"
				if err == nil {
					status = nested.Status
				}
				t.Fatalf("finding 7: CONNECT %s (%s) was tunnelled (200); a nested CONNECT to the API through it got %s", target.hostPort, target.name, status)
			}
			body := readBody(t, resp)
			if resp.StatusCode != http.StatusForbidden {
				t.Errorf("finding 7: CONNECT %s (%s): %d %q, want 403", target.hostPort, target.name, resp.StatusCode, body)
			}
			afterRefusal(t, conn, "CONNECT "+target.hostPort)
		})
	}
	// curl as the agent, through the proxy it was given (NO_PROXY
	// exempts the API's address, so the proxy is forced), tunnelling to
	// the API and to the proxy itself.
	t.Run("curl-proxytunnel/h1", func(t *testing.T) {
		out, errOut, _ := s.launch(nil, "sh", "-c",
			`for u in http://`+s.apiAddr+`/healthz http://`+s.proxyAddr+`/; do curl -sS --noproxy '' --proxytunnel -x "$HTTPS_PROXY" -w ' %{http_connect}\n' "$u"; done`)
		if strings.Contains(out, `"status"`) {
			t.Errorf("finding 7: curl reached the management API through a tunnel: %q", out)
		}
		if strings.Count(out, " 403") != 2 {
			t.Errorf("finding 7: curl's CONNECTs to the API and the proxy: %q %q, want both refused with 403", out, errOut)
		}
	})
	// The proxy's cleartext listener also speaks HTTP/2 with prior
	// knowledge (h2c): the same CONNECTs as HTTP/2 streams are refused
	// before anything is dialled (a tunnel needs the connection, which
	// HTTP/2 cannot hand over).
	for _, target := range []struct{ name, hostPort string }{
		{"api", s.apiAddr},
		{"api-by-name", "localhost:" + apiPort},
		{"proxy", s.proxyAddr},
	} {
		t.Run(target.name+"/h2", func(t *testing.T) {
			status, _, body := h2cConnect(t, s.proxyAddr, target.hostPort, auth)
			if status != http.StatusHTTPVersionNotSupported || !strings.Contains(body, "CONNECT to the proxy must use HTTP/1.1") {
				t.Errorf("finding 7: HTTP/2 (h2c) CONNECT %s (%s): %d %q, want 505 saying to use HTTP/1.1", target.hostPort, target.name, status, body)
			}
			if strings.Contains(body, `"status"`) {
				t.Errorf("finding 7: HTTP/2 (h2c) CONNECT %s: the management API answered: %q", target.hostPort, body)
			}
		})
	}
}

// h2cConnect sends CONNECT target as an HTTP/2 stream (prior knowledge,
// cleartext) to the proxy. A 200 is a tunnel: it sends a request for
// /healthz through it and returns what came back as the body.
func h2cConnect(t *testing.T, proxyAddr, target, proxyAuth string) (int, http.Header, string) {
	t.Helper()
	protos := new(http.Protocols)
	protos.SetUnencryptedHTTP2(true)
	tr := &http.Transport{Protocols: protos, Proxy: nil}
	defer tr.CloseIdleConnections()
	pr, pw := io.Pipe()
	defer pw.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodConnect, "http://"+proxyAddr, pr)
	req.Host = target
	req.Header.Set("Proxy-Authorization", proxyAuth)
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatalf("h2c CONNECT %s: %v", target, err)
	}
	defer resp.Body.Close()
	if resp.ProtoMajor != 2 {
		t.Fatalf("h2c CONNECT %s: answered over %s", target, resp.Proto)
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return resp.StatusCode, resp.Header, string(b)
	}
	go io.WriteString(pw, "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return resp.StatusCode, resp.Header, string(b)
}

// ---------------------------------------------------------------------
// Finding 8: the server process. It runs as an unprivileged uid; a
// process of the same uid must not read its environment (the server is
// non-dumpable, so /proc/<pid>/environ is root's), and the master
// password is gone from it anyway. No HTTP here: there is no /h1 or /h2.

const nobodyUID = 65534

// readEnvironAs runs cat /proc/<pid>/environ as uid and returns its
// output, its stderr and whether it succeeded.
func readEnvironAs(t *testing.T, uid, pid int) (out []byte, errOut string, ok bool) {
	t.Helper()
	cmd := exec.Command("/bin/cat", fmt.Sprintf("/proc/%d/environ", pid))
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)}}
	cmd.Dir = "/"
	var e bytes.Buffer
	cmd.Stderr = &e
	out, err := cmd.Output()
	if _, exited := err.(*exec.ExitError); err != nil && !exited {
		t.Fatalf("reader as uid %d: %v", uid, err)
	}
	return out, e.String(), err == nil
}

// The server as an ordinary user (uid 65534), started plainly and, as a
// Caddy that binds :443 without root is, from a binary with file
// capabilities (non-dumpable from exec, its /proc files root's from the
// start).
func TestHostileServerProcess(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		testenv.Unavailable(t, "starting the server as another uid needs root (this test switches to uid 65534 with SysProcAttr.Credential)")
	}
	t.Run("plain", func(t *testing.T) { t.Parallel(); hostileServerProcess(t, false) })
	t.Run("file-capabilities", func(t *testing.T) { t.Parallel(); hostileServerProcess(t, true) })
}

func hostileServerProcess(t *testing.T, fileCaps bool) {
	ca := newTestCA(t)
	// Everything the server reads or writes, in a directory uid 65534
	// owns: the binary itself (AGENT_VAULT_BIN may sit in a root-only
	// directory), the config, the CA bundle, HOME and the data dir.
	root, err := os.MkdirTemp("", "agent-vault-nobody-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	copyFile := func(src, dst string, mode os.FileMode) {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, b, mode); err != nil {
			t.Fatal(err)
		}
	}
	exe := filepath.Join(root, "agent-vault")
	copyFile(bin("agent-vault"), exe, 0o755)
	copyFile(filepath.Join(repoRoot, "Caddyfile.example"), filepath.Join(root, "Caddyfile"), 0o644)
	copyFile(ca.pemPath, filepath.Join(root, "ca.pem"), 0o644)
	os.MkdirAll(filepath.Join(root, "home"), 0o700)
	err = filepath.WalkDir(root, func(p string, _ os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Chown(p, nobodyUID, nobodyUID)
	})
	if err != nil {
		t.Fatal(err)
	}
	if fileCaps { // after the chown, which clears them
		setcap, err := exec.LookPath("setcap")
		if err != nil {
			testenv.Unavailable(t, "no setcap tool (libcap2-bin) to give the server binary file capabilities")
		}
		if out, err := exec.Command(setcap, "cap_net_bind_service=+ep", exe).CombinedOutput(); err != nil {
			testenv.Unavailable(t, "setcap cap_net_bind_service=+ep: %v\n%s", err, out)
		}
	}
	home := filepath.Join(root, "home")
	s := launchServer(t, ca, serverOpts{
		dataDir: filepath.Join(root, "data"),
		config:  filepath.Join(root, "Caddyfile"),
		exe:     exe,
		cred:    &syscall.Credential{Uid: nobodyUID, Gid: nobodyUID},
		extraEnv: []string{
			"HOME=" + home, "XDG_CONFIG_HOME=" + filepath.Join(home, ".config"), "XDG_DATA_HOME=" + filepath.Join(home, ".local", "share"),
			"SSL_CERT_FILE=" + filepath.Join(root, "ca.pem"),
		},
	})
	if err := s.waitReady(); err != nil {
		t.Fatalf("the server did not start as uid %d: %v\n%s", nobodyUID, err, s.logs.String())
	}
	if st, err := os.Stat(fmt.Sprintf("/proc/%d/environ", s.pid())); err == nil {
		// A non-dumpable process's /proc files belong to root.
		t.Logf("/proc/%d/environ is owned by uid %d", s.pid(), st.Sys().(*syscall.Stat_t).Uid)
	}
	if code := s.api("GET", "/api/v1/credentials", nil, nil); code != http.StatusOK {
		t.Fatalf("the server as uid %d does not serve: %d", nobodyUID, code)
	}

	// The control: a reader of that uid can read the environ of another
	// (dumpable) process of its uid, so a refusal below is the server's
	// doing and not a /proc mount option such as hidepid.
	ctl := exec.Command("/bin/cat") // waits on its stdin
	ctl.Env = []string{"MARKER=control"}
	ctl.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobodyUID, Gid: nobodyUID}}
	ctlIn, _ := ctl.StdinPipe()
	if err := ctl.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { ctlIn.Close(); ctl.Wait() }()
	for deadline := time.Now().Add(10 * time.Second); ; { // until cat has exec'd (root reads any environ)
		if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/environ", ctl.Process.Pid)); bytes.Contains(b, []byte("MARKER=control")) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("control process never showed its environment")
		}
		runtime.Gosched()
	}
	if out, errOut, ok := readEnvironAs(t, nobodyUID, ctl.Process.Pid); !ok || !bytes.Contains(out, []byte("MARKER=control")) {
		t.Fatalf("control: uid %d cannot read the environ of its own dumpable process (%q): this check would mean nothing here", nobodyUID, errOut)
	}

	t.Run("same-uid-reader", func(t *testing.T) {
		out, errOut, ok := readEnvironAs(t, nobodyUID, s.pid())
		if bytes.Contains(out, []byte(masterPassword)) {
			t.Errorf("finding 8: a process of the server's uid read the master password from /proc/%d/environ", s.pid())
		}
		if ok || !strings.Contains(errOut, "Permission denied") {
			t.Errorf("finding 8: a process of the server's uid read /proc/%d/environ (%d bytes, stderr %q): the server is dumpable, want EACCES", s.pid(), len(out), errOut)
		}
	})
	t.Run("environment-wiped", func(t *testing.T) {
		// As root (CAP_SYS_PTRACE reads even a non-dumpable process): the
		// initial environment block no longer holds the password.
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", s.pid()))
		if err != nil {
			testenv.Unavailable(t, "root cannot read /proc/%d/environ here: %v", s.pid(), err)
		}
		if bytes.Contains(b, []byte(masterPassword)) {
			t.Errorf("finding 8: /proc/%d/environ still holds AGENT_VAULT_MASTER_PASSWORD's value after start-up", s.pid())
		}
		if logs := s.logs.String(); strings.Contains(logs, "remain readable") {
			t.Errorf("the server warns that secret variables remain in its environment:\n%s", logs)
		}
	})
	if fileCaps {
		status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", s.pid()))
		if err != nil {
			t.Fatal(err)
		}
		const capNetBindService = 10
		for line := range strings.Lines(string(status)) {
			if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
				if eff, _ := strconv.ParseUint(strings.TrimSpace(v), 16, 64); eff&(1<<capNetBindService) == 0 {
					t.Errorf("the server did not get CAP_NET_BIND_SERVICE (CapEff %s): the case proves nothing", strings.TrimSpace(v))
				}
			}
		}
	}
}

// ---------------------------------------------------------------------
// Finding 9: failed proxy authentication is rate-limited per client
// address and its log sampled; a valid session from the same address is
// still served.

func TestHostileAuthFailures(t *testing.T) {
	ca := newTestCA(t)
	up := newUpstream(t, ca, true)
	s := startServer(t, ca, serverOpts{})
	s.putCredential("AUTH_TOKEN", "ghp_AuthSecret0123456789abcdefXYZ")
	s.putService("authsvc", map[string]any{"host": up.hostPort(), "auth": map[string]any{"type": "bearer", "token": "AUTH_TOKEN"}})

	type answer struct {
		status     int
		retryAfter string
	}
	attempt := func(i int) (answer, error) {
		conn, err := net.DialTimeout("tcp", s.proxyAddr, 10*time.Second)
		if err != nil {
			return answer{}, err
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(20 * time.Second))
		fmt.Fprintf(conn, "CONNECT %s HTTP/1.1\r\nHost: %s\r\nProxy-Authorization: %s\r\n\r\n", up.hostPort(), up.hostPort(),
			basicAuth(fmt.Sprintf("avs_wrong%064x", i)))
		resp, err := http.ReadResponse(bufio.NewReader(conn), &http.Request{Method: http.MethodConnect})
		if err != nil {
			return answer{}, err
		}
		return answer{resp.StatusCode, resp.Header.Get("Retry-After")}, nil
	}
	const n, workers = 200, 4
	answers := make([]answer, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := time.Now()
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += workers {
				answers[i], errs[i] = attempt(i)
			}
		}()
	}
	wg.Wait()
	burst := time.Since(start)
	limited := 0
	for i, a := range answers {
		if errs[i] != nil {
			t.Fatalf("wrong token %d: %v", i, errs[i])
		}
		if a.status != http.StatusProxyAuthRequired {
			t.Fatalf("wrong token %d: %d, want 407", i, a.status)
		}
		if a.retryAfter != "" {
			limited++
		}
	}
	t.Logf("%d wrong tokens in %v; %d answers had Retry-After", n, burst.Round(time.Millisecond), limited)

	// The bucket refills at 10 failures a second, so on a loaded machine
	// the first attempt after the burst may find a token again; a few
	// more attempts (each far faster than the refill) must be limited.
	// If failures were not counted, none of them would be.
	const tries = 60
	t.Run("limited/h1", func(t *testing.T) {
		var a answer
		for i := range tries {
			var err error
			if a, err = attempt(n + 2 + i); err != nil {
				t.Fatal(err)
			}
			if a.retryAfter != "" {
				break
			}
		}
		if secs, err := strconv.Atoi(a.retryAfter); a.status != http.StatusProxyAuthRequired || err != nil || secs < 1 {
			t.Errorf("finding 9: wrong tokens after a burst of %d: the last of up to %d more: %d with Retry-After %q, want 407 with Retry-After in seconds", n, tries, a.status, a.retryAfter)
		}
	})
	// The proxy's listener speaks h2c too: a wrong token in an HTTP/2
	// CONNECT stream counts against the same address.
	t.Run("limited/h2", func(t *testing.T) {
		var (
			status int
			h      http.Header
			body   string
		)
		for i := range tries {
			status, h, body = h2cConnect(t, s.proxyAddr, up.hostPort(), basicAuth(fmt.Sprintf("avs_wrong%064x", n+2+tries+i)))
			if h.Get("Retry-After") != "" {
				break
			}
		}
		if secs, err := strconv.Atoi(h.Get("Retry-After")); status != http.StatusProxyAuthRequired || err != nil || secs < 1 {
			t.Errorf("finding 9: HTTP/2 (h2c) CONNECTs with a wrong token after the burst: the last of up to %d: %d with Retry-After %q (%q), want 407 with Retry-After in seconds", tries, status, h.Get("Retry-After"), body)
		}
	})
	t.Run("log-sampled", func(t *testing.T) {
		select {
		case <-s.logs.waitFor(`"limited":true`):
		case <-time.After(5 * time.Second):
			t.Errorf("finding 9: no summary line for the limited address in the server log")
		}
		lines := s.logs.lines("proxy authentication failed")
		if len(lines) >= 100 {
			t.Errorf("finding 9: %d log lines about failed proxy authentication for more than %d failures, want far fewer (sampled)", len(lines), n)
		}
		t.Logf("%d log lines about more than %d failures", len(lines), n)
	})
	for _, proto := range protos {
		t.Run("valid/"+proto, func(t *testing.T) {
			views, _ := s.agentCurls(t, nil, proto, []curlReq{{"valid", []string{"https://" + up.hostPort() + "/user"}}})
			if v := views["valid"]; v.status != 200 || !strings.Contains(string(v.body), "octocat") {
				t.Errorf("finding 9: a valid session from the limited address: curl exit %d status %d %q %q", v.exit, v.status, v.body, v.stderr)
			}
		})
	}
	sess := s.newSession(t, nil, "10m")
	if resp, _ := rawConnect(t, s.proxyAddr, up.hostPort(), basicAuth(sess.Token)); resp.StatusCode != http.StatusOK {
		t.Errorf("finding 9: a valid token's CONNECT from the limited address: %d", resp.StatusCode)
	}
}
