package caddymodule

import (
	"encoding/binary"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/agentvault/caddy-agent-vault/caddymodule/services"
	"github.com/agentvault/caddy-agent-vault/caddymodule/wsframe"
	"github.com/agentvault/caddy-agent-vault/storebackends"
)

// wsUpstream is a WebSocket server: it records the text messages it
// gets and the extensions offered; "echo-secret" makes it send the
// secret back in three fragments, "deflated" a frame with RSV1 set;
// anything else is echoed.
type wsUpstream struct {
	*upstream
	mu        sync.Mutex
	got       []string
	offered   []string
	negotiate string // an extension to answer with
}

func newWSUpstream(t *testing.T, secret string) *wsUpstream {
	u := &wsUpstream{}
	u.upstream = upstreamTLS(t, func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.offered = append(u.offered, r.Header.Get("Sec-WebSocket-Extensions"))
		ext := u.negotiate
		u.mu.Unlock()
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n")
		if ext != "" {
			brw.WriteString("Sec-WebSocket-Extensions: " + ext + "\r\n")
		}
		brw.WriteString("\r\n")
		brw.Flush()
		for {
			f, err := wsframe.Read(brw.Reader, 1<<20)
			if err != nil || f.Opcode == wsframe.OpClose {
				return
			}
			msg := string(f.Payload)
			u.mu.Lock()
			u.got = append(u.got, msg)
			u.mu.Unlock()
			var out []byte
			switch msg {
			case "echo-secret":
				third := len(secret) / 3
				out = wsframe.Append(out, wsframe.Frame{Opcode: wsframe.OpText, Payload: []byte("you: " + secret[:third])})
				out = wsframe.Append(out, wsframe.Frame{Opcode: wsframe.OpPing, Fin: true, Payload: []byte(secret)}) // interleaved control
				out = wsframe.Append(out, wsframe.Frame{Opcode: wsframe.OpContinuation, Payload: []byte(secret[third : 2*third])})
				out = wsframe.Append(out, wsframe.Frame{Opcode: wsframe.OpContinuation, Fin: true, Payload: []byte(secret[2*third:] + " .")})
			case "deflated":
				out = wsframe.Append(out, wsframe.Frame{Fin: true, RSV: 0x40, Opcode: wsframe.OpText, Payload: []byte{1, 2, 3}})
			default:
				out = wsframe.Append(out, wsframe.Frame{Fin: true, Opcode: f.Opcode, Payload: f.Payload})
			}
			conn.Write(out)
		}
	})
	return u
}

func (u *wsUpstream) messages() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]string(nil), u.got...)
}

// wsClient is the agent's side: a tunnel upgraded to WebSocket.
type wsClient struct {
	t *testing.T
	c *tunnelClient
}

func dialWS(t *testing.T, pl *pipeline, s agentSession, target string) (*wsClient, answer) {
	c := pl.openTunnel(t, s, target)
	a := c.get("/ws", target, "Connection: Upgrade", "Upgrade: websocket", "Sec-WebSocket-Version: 13",
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits")
	return &wsClient{t: t, c: c}, a
}

func (w *wsClient) send(frames ...wsframe.Frame) {
	var out []byte
	for _, f := range frames {
		f.Masked = true
		out = wsframe.Append(out, f)
	}
	if _, err := w.c.conn.Write(out); err != nil {
		w.t.Fatal(err)
	}
}

// next reads the next frame the proxy sends.
func (w *wsClient) next() wsframe.Frame {
	w.t.Helper()
	f, err := wsframe.Read(w.c.br, 1<<20)
	if err != nil {
		w.t.Fatalf("reading a frame: %v", err)
	}
	return f
}

func TestWebSocketFrames(t *testing.T) {
	up := newWSUpstream(t, echoSecret)
	other := newWSUpstream(t, otherSecret)
	pl := newPipeline(t, pipelineConfig{
		services: []services.Service{bearer("ws", up.hostPort, "TOKEN"), bearer("other", other.hostPort, "OTHER")},
		stores:   []storebackends.Store{builtin("TOKEN", echoSecret, "OTHER", otherSecret)},
	})
	s := pl.session(t)
	ws, a := dialWS(t, pl, s, up.hostPort)
	wantStatus(t, a, http.StatusSwitchingProtocols)
	if got := up.offered[0]; got != "" {
		t.Errorf("the upstream was offered extensions %q", got)
	}
	ph := s.ph(t, "TOKEN")

	// A placeholder split across fragments of a text message (a ping
	// between them): the upstream receives the secret, JSON-escaped.
	msg := `{"op":2,"d":{"token":"` + ph + `"}}`
	ws.send(wsframe.Frame{Opcode: wsframe.OpText, Payload: []byte(msg[:20])},
		wsframe.Frame{Opcode: wsframe.OpPing, Fin: true, Payload: []byte("p")},
		wsframe.Frame{Opcode: wsframe.OpContinuation, Payload: []byte(msg[20:30])},
		wsframe.Frame{Opcode: wsframe.OpContinuation, Fin: true, Payload: []byte(msg[30:])})
	if f := ws.next(); f.Opcode != wsframe.OpPong && f.Opcode != wsframe.OpPing {
		// the upstream echoes the ping as a ping frame
		t.Logf("first frame opcode %#x", f.Opcode)
	}
	echo := ws.next()
	var esc strings.Builder
	enc := json.NewEncoder(&esc)
	enc.SetEscapeHTML(false)
	enc.Encode(echoSecret)
	wantJSON := `{"op":2,"d":{"token":` + strings.TrimSpace(esc.String()) + `}}`
	if got := up.messages(); len(got) < 2 || got[1] != wantJSON {
		t.Fatalf("the upstream got %q, want %q", got, wantJSON)
	}
	if strings.Contains(string(echo.Payload), "S-live") || !strings.Contains(string(echo.Payload), ph) {
		t.Fatalf("the echo reached the agent as %q", echo.Payload)
	}

	// The upstream sends the secret in fragments with a ping between:
	// the agent sees the placeholder, in the message and in the ping.
	ws.send(wsframe.Frame{Opcode: wsframe.OpText, Fin: true, Payload: []byte("echo-secret")})
	ping, data := ws.next(), ws.next()
	if ping.Opcode != wsframe.OpPing || strings.Contains(string(ping.Payload), "S-live") {
		t.Errorf("ping %#x %q", ping.Opcode, ping.Payload)
	}
	if data.Opcode != wsframe.OpText || !data.Fin || string(data.Payload) != "you: "+ph+" ." {
		t.Errorf("the fragmented echo reached the agent as %q", data.Payload)
	}

	// An upstream frame with RSV1 (a deflated message): closed 1008.
	ws.send(wsframe.Frame{Opcode: wsframe.OpText, Fin: true, Payload: []byte("deflated")})
	if f := ws.next(); f.Opcode != wsframe.OpClose || binary.BigEndian.Uint16(f.Payload) != wsframe.ClosePolicyViolation {
		t.Fatalf("after a deflated frame: %#x %q", f.Opcode, f.Payload)
	}

	// Another credential's placeholder: 1008, and the upstream never
	// gets the message.
	ws2, _ := dialWS(t, pl, s, up.hostPort)
	n := len(up.messages())
	ws2.send(wsframe.Frame{Opcode: wsframe.OpText, Fin: true, Payload: []byte(`{"token":"` + s.ph(t, "OTHER") + `"}`)})
	f := ws2.next()
	if f.Opcode != wsframe.OpClose || binary.BigEndian.Uint16(f.Payload) != wsframe.ClosePolicyViolation || !strings.Contains(string(f.Payload), "not bound") {
		t.Fatalf("an unbound placeholder: %#x %q", f.Opcode, f.Payload)
	}
	for _, m := range up.messages()[n:] {
		if strings.Contains(m, "agvph_") || strings.Contains(m, otherSecret) {
			t.Fatalf("the upstream got %q", m)
		}
	}
}

// An upstream that negotiates an extension nobody offered is refused.
func TestWebSocketNegotiatedExtension(t *testing.T) {
	up := newWSUpstream(t, echoSecret)
	up.negotiate = "permessage-deflate"
	pl := newPipeline(t, pipelineConfig{services: []services.Service{bearer("ws", up.hostPort, "TOKEN")},
		stores: []storebackends.Store{builtin("TOKEN", echoSecret)}})
	_, a := dialWS(t, pl, pl.session(t), up.hostPort)
	wantRefusal(t, a, http.StatusBadGateway, "negotiated a WebSocket extension")
}
