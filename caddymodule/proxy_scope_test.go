package caddymodule

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/agentvault/caddy-agent-vault/caddymodule/scrub"
	"github.com/agentvault/caddy-agent-vault/caddymodule/services"
	"github.com/agentvault/caddy-agent-vault/storebackends"
)

// A hostile upstream stores the secret one request sent and returns it
// in the answer to another: through a passthrough service on the same
// host, or to a request that carried nothing. Every credential in the
// session's scope is scrubbed from every answer, not only those the
// request sent.
func TestPipelineScopeWideScrubbing(t *testing.T) {
	const other = "other-service-secret-0123456789"
	var mu sync.Mutex
	var stored string
	store := upstreamTLS(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case strings.HasPrefix(r.URL.Path, "/write/"):
			stored = strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
			io.WriteString(w, "stored")
		case r.URL.Path == "/other":
			// A secret this session never sent but can reach.
			fmt.Fprintf(w, "other=%s", other)
		default:
			w.Header().Set("X-Stored", stored)
			fmt.Fprintf(w, "stored=%s", stored)
		}
	})
	elsewhere := upstreamTLS(t, nil)
	pl := newPipeline(t, pipelineConfig{
		services: []services.Service{
			bearer("api", store.hostPort+"/write/*", "API_TOKEN"),
			{Name: "open", Host: store.hostPort, Auth: services.Auth{Type: services.AuthPassthrough}},
			bearer("elsewhere", elsewhere.hostPort, "OTHER_TOKEN"),
		},
		stores: []storebackends.Store{builtin("API_TOKEN", echoSecret, "OTHER_TOKEN", other)},
	})
	s := pl.session(t)
	for _, h2 := range []bool{false, true} {
		t.Run(map[bool]string{false: "h1", true: "h2"}[h2], func(t *testing.T) {
			agent := pl.agent(t, s, h2)
			wantStatus(t, get(t, agent, store.https("/write/it")), http.StatusOK)
			if got := store.last(t).header.Get("Authorization"); got != "Bearer "+echoSecret {
				t.Fatalf("upstream got %q", got)
			}
			a := get(t, agent, store.https("/read"))
			wantStatus(t, a, http.StatusOK)
			if want := "stored=" + s.ph(t, "API_TOKEN"); a.body != want || a.header.Get("X-Stored") != s.ph(t, "API_TOKEN") {
				t.Fatalf("read back through passthrough: body %q header %q, want %q", a.body, a.header.Get("X-Stored"), want)
			}
			a = get(t, agent, store.https("/other"))
			if want := "other=" + s.ph(t, "OTHER_TOKEN"); a.body != want {
				t.Fatalf("a secret of another in-scope service: body %q, want %q", a.body, want)
			}
		})
	}
	// A session that cannot reach a credential is not its to scrub: it
	// holds no placeholder, and the proxy leaves its answers alone.
	bare := pl.agent(t, pl.session(t, "open"), false)
	if a := get(t, bare, store.https("/other")); a.body != "other="+other {
		t.Fatalf("session without that credential in scope saw %q", a.body)
	}
}

// An upgrade to a protocol the proxy cannot scan is refused, before
// anything goes upstream, in a session that can reach a secret, unless
// the service lists it; WebSocket, and sessions without credentials, go
// on.
func TestPipelineUpgradeAfterInjection(t *testing.T) {
	echoUpgrade := func(w http.ResponseWriter, r *http.Request) {
		proto := r.Header.Get("Upgrade")
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		defer conn.Close()
		fmt.Fprintf(brw, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: %s\r\n\r\nhello %s\n", proto, r.Header.Get("Authorization"))
		brw.Flush()
	}
	locked, open, allowed := upstreamTLS(t, echoUpgrade), upstreamTLS(t, echoUpgrade), upstreamTLS(t, echoUpgrade)
	pl := newPipeline(t, pipelineConfig{
		services: []services.Service{
			bearer("locked", locked.hostPort, "TOKEN"),
			{Name: "open", Host: open.hostPort, Auth: services.Auth{Type: services.AuthPassthrough}},
			func() services.Service {
				svc := bearer("allowed", allowed.hostPort, "TOKEN")
				svc.AllowUpgrades = []string{"TCP-Echo"}
				return svc
			}(),
		},
		stores: []storebackends.Store{builtin("TOKEN", echoSecret)},
	})
	s := pl.session(t)
	upgrade := func(t *testing.T, s agentSession, target, proto string) (answer, string) {
		t.Helper()
		c := pl.openTunnel(t, s, target)
		a := c.get("/", target, "Connection: Upgrade", "Upgrade: "+proto)
		if a.status != http.StatusSwitchingProtocols {
			return a, ""
		}
		line, _ := bufio.NewReader(io.MultiReader(strings.NewReader(a.body), c.br)).ReadString('\n')
		return a, line
	}

	a, _ := upgrade(t, s, locked.hostPort, "tcp-echo")
	wantRefusal(t, a, http.StatusForbidden, `service locked does not allow switching to "tcp-echo"`, "allow_upgrades")
	a, _ = upgrade(t, s, locked.hostPort, "websocket, tcp-echo")
	wantRefusal(t, a, http.StatusForbidden, `"tcp-echo"`)
	locked.wantNothing(t)
	// A request that sends nothing, in a session that can reach a
	// secret: an upstream could return a stored one over the stream.
	a, _ = upgrade(t, s, open.hostPort, "tcp-echo")
	wantRefusal(t, a, http.StatusForbidden, `service open does not allow switching to "tcp-echo"`)
	open.wantNothing(t)

	// WebSocket goes on, and its stream is parsed (websocket.go): this
	// upstream's bytes are no frames, so the agent gets a close frame.
	a, line := upgrade(t, s, locked.hostPort, "websocket")
	wantStatus(t, a, http.StatusSwitchingProtocols)
	if !strings.HasPrefix(line, "\x88") || strings.Contains(line, echoSecret) {
		t.Fatalf("a WebSocket stream of no frames: %q", line)
	}

	for _, tc := range []struct {
		name   string
		sess   agentSession
		target string
		proto  string
	}{
		{"listed in allow_upgrades", s, allowed.hostPort, "tcp-echo"},
		{"session without credentials", pl.session(t, "open"), open.hostPort, "tcp-echo"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, line := upgrade(t, tc.sess, tc.target, tc.proto)
			wantStatus(t, a, http.StatusSwitchingProtocols)
			if !strings.HasPrefix(line, "hello ") {
				t.Fatalf("upgraded stream: %q", line)
			}
		})
	}
}

// A secret an upstream puts in a header or trailer name, in any case,
// never reaches the agent: the header is dropped, and a trailer's name
// is gone from the Trailer announcement before the body starts.
func TestPipelineSecretNamedHeaders(t *testing.T) {
	const secret = "hdr-nameSECRET-0123456789abcdef" // not in canonical case: Go rewrites it
	up := upstreamTLS(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(strings.ToLower(secret), "1")
		w.Header().Set("X-"+strings.ToUpper(secret), "2")
		w.Header().Set("X-Kept", "3")
		w.Header().Set("Trailer", secret+", X-Done")
		w.WriteHeader(http.StatusOK)
		io.WriteString(w, "body")
		http.NewResponseController(w).Flush() // a streamed body: the announcement leaves first
		w.Header().Set(secret, "4")
		w.Header().Set("X-Done", "yes")
	})
	pl := newPipeline(t, pipelineConfig{
		services: []services.Service{bearer("up", up.hostPort, "TOKEN")},
		stores:   []storebackends.Store{builtin("TOKEN", secret)},
	})
	s := pl.session(t)
	for _, h2 := range []bool{false, true} {
		t.Run(map[bool]string{false: "h1", true: "h2"}[h2], func(t *testing.T) {
			resp, err := pl.agent(t, s, h2).Get(up.https("/"))
			if err != nil {
				t.Fatal(err)
			}
			announced := fmt.Sprint(resp.Header["Trailer"], resp.Trailer)
			a := readAnswer(t, resp)
			wantStatus(t, a, http.StatusOK)
			all := strings.ToLower(fmt.Sprint(announced, a.header, a.trailer, a.body))
			if strings.Contains(all, strings.ToLower(secret)) {
				t.Fatalf("the agent saw the secret: announced %s, header %v, trailer %v", announced, a.header, a.trailer)
			}
			if a.header.Get("X-Kept") != "3" || a.trailer.Get("X-Done") != "yes" || a.body != "body" {
				t.Fatalf("lost what was not secret: header %v trailer %v body %q", a.header, a.trailer, a.body)
			}
		})
	}
}

// A CONNECT inside an intercepted tunnel (HTTP/1.1, or HTTP/2's
// extended CONNECT) would open a raw channel nothing scans: refused.
func TestPipelineConnectInsideTunnel(t *testing.T) {
	up := upstreamTLS(t, nil)
	pl := newPipeline(t, pipelineConfig{
		services: []services.Service{bearer("up", up.hostPort, "TOKEN")},
		stores:   []storebackends.Store{builtin("TOKEN", echoSecret)},
	})
	s := pl.session(t)
	c := pl.openTunnel(t, s, up.hostPort)
	a, err := c.send(http.MethodConnect, up.hostPort, up.hostPort)
	if err != nil {
		t.Fatal(err)
	}
	wantRefusal(t, a, http.StatusMethodNotAllowed, "CONNECT inside an intercepted tunnel is not supported")

	req, err := http.NewRequest(http.MethodConnect, up.https("/"), nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = up.hostPort
	a = do(t, pl.agent(t, s, true), req)
	wantRefusal(t, a, http.StatusMethodNotAllowed, "CONNECT inside")
	up.wantNothing(t)
}

// An upstream whose malformed trailer line is the secret makes the
// reverse proxy log that line: the log gets it scrubbed (the harness
// fails the test if its log holds a secret).
func TestPipelineErrorLogScrubbed(t *testing.T) {
	up := upstreamTLS(t, func(w http.ResponseWriter, r *http.Request) {
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		defer conn.Close()
		fmt.Fprintf(brw, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nbody\r\n0\r\n%s\r\n\r\n", echoSecret)
		brw.Flush()
	})
	pl := newPipeline(t, pipelineConfig{
		services: []services.Service{bearer("up", up.hostPort, "TOKEN")},
		stores:   []storebackends.Store{builtin("TOKEN", echoSecret)},
	})
	resp, err := pl.agent(t, pl.session(t), false).Get(up.https("/"))
	if err == nil {
		io.Copy(io.Discard, resp.Body) // the relay breaks off: the answer was not whole
		resp.Body.Close()
	}
	// ReverseProxy logs the failure before it aborts the answer, so the
	// line is there once the agent's read has ended.
	if !strings.Contains(pl.logs.String(), "malformed MIME header") {
		t.Fatalf("the reverse proxy logged no error:\n%s", pl.logs.String())
	}
	if !strings.Contains(pl.logs.String(), scrub.Redacted) {
		t.Fatalf("the error line does not show the redaction:\n%s", pl.logs.String())
	}
}
