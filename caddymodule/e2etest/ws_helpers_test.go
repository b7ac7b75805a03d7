package e2etest

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/agentvault/caddy-agent-vault/caddymodule/wsframe"
)

// wsEcho is a WebSocket upstream's loop: each data frame comes back as
// a text frame, upper-cased, until the client closes or goes away.
func wsEcho(w io.Writer, r *bufio.Reader) {
	for {
		f, err := wsframe.Read(r, 1<<20)
		if err != nil || f.Opcode == wsframe.OpClose {
			return
		}
		if f.IsControl() {
			continue
		}
		if _, err := w.Write(wsframe.Append(nil, wsframe.Frame{Fin: true, Opcode: wsframe.OpText, Payload: bytes.ToUpper(f.Payload)})); err != nil {
			return
		}
	}
}

// wsSend sends text as one masked frame, as a client must.
func wsSend(t testing.TB, w io.Writer, text string) {
	t.Helper()
	if _, err := w.Write(wsframe.Append(nil, wsframe.Frame{Fin: true, Opcode: wsframe.OpText, Masked: true, Payload: []byte(text)})); err != nil {
		t.Fatal(err)
	}
}

// wsRecv reads the next data frame's text; a close frame is an error.
func wsRecv(r *bufio.Reader) (string, error) {
	for {
		f, err := wsframe.Read(r, 1<<20)
		if err != nil {
			return "", err
		}
		switch {
		case f.Opcode == wsframe.OpClose:
			return "", errors.New("closed: " + string(f.Payload))
		case f.IsControl():
			continue
		}
		return string(f.Payload), nil
	}
}

// WebSocket frames through the built broker: a placeholder split across
// the fragments of a masked text message reaches the upstream as the
// secret (the upstream echoes it upper-cased, and the agent gets the
// placeholder back, scrubbed; had the placeholder gone through, its
// upper-cased echo would arrive instead); a placeholder of another
// service closes the connection with 1008.
func TestWebSocketThroughBroker(t *testing.T) {
	ca := newTestCA(t)
	up := newUpstream(t, ca, true)
	s := startServer(t, ca, serverOpts{})
	s.putCredential("GITHUB_TOKEN", githubSecret)
	s.putCredential("OTHER_KEY", "other-value-1234567")
	s.putService("github", bearerService(up.hostPort(), "GITHUB_TOKEN"))
	s.putService("other", bearerService("other.example", "OTHER_KEY"))
	sess := s.newSession(t, nil, "10m")
	ph := sess.Placeholders["GITHUB_TOKEN"]
	open := func() (io.ReadWriter, *bufio.Reader) {
		conn := dialTunnelTLS(t, s, sess, up.hostPort())
		io.WriteString(conn, "GET /ws HTTP/1.1\r\nHost: "+up.hostPort()+"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n")
		br := bufio.NewReader(conn)
		if r, err := http.ReadResponse(br, nil); err != nil || r.StatusCode != http.StatusSwitchingProtocols {
			t.Fatalf("upgrade: %v %v", r, err)
		}
		return conn, br
	}
	conn, br := open()
	msg := "token=" + ph + ";"
	var out []byte
	out = wsframe.Append(out, wsframe.Frame{Opcode: wsframe.OpText, Masked: true, Payload: []byte(msg[:10])})
	out = wsframe.Append(out, wsframe.Frame{Opcode: wsframe.OpContinuation, Masked: true, Payload: []byte(msg[10:25])})
	out = wsframe.Append(out, wsframe.Frame{Opcode: wsframe.OpContinuation, Fin: true, Masked: true, Payload: []byte(msg[25:])})
	conn.Write(out)
	got, err := wsRecv(br)
	if err != nil || got != "TOKEN="+ph+";" {
		t.Fatalf("the echo: %q %v (want the upper-cased secret scrubbed back to the placeholder)", got, err)
	}
	if up.last(t).Header.Get("Sec-WebSocket-Extensions") != "" {
		t.Error("the upstream was offered permessage-deflate")
	}

	conn, br = open()
	wsSend(t, conn, "token="+sess.Placeholders["OTHER_KEY"])
	if _, err := wsRecv(br); err == nil || !strings.Contains(err.Error(), "not bound") {
		t.Fatalf("a placeholder of another service: %v, want a close saying it is not bound", err)
	}
}
