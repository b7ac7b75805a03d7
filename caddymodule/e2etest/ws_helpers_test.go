package e2etest

import (
	"bufio"
	"bytes"
	"errors"
	"io"
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
