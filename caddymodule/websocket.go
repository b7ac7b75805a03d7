package caddymodule

// WebSocket frames after an upgrade, on a session that can reach a
// secret: the agent's text messages get their placeholders swapped
// under the binding rule (resolveInBody), every message and control
// frame from the upstream is scrubbed of every secret form, and
// anything that cannot be scanned closes the connection with 1008 to
// both sides. Extensions are not offered (permessage-deflate is
// stripped from the agent's request in send), so an upstream that
// negotiates one, or sets a reserved bit, is refused.

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"

	"go.uber.org/zap"

	"github.com/agentvault/caddy-agent-vault/caddymodule/activity"
	"github.com/agentvault/caddy-agent-vault/caddymodule/services"
	"github.com/agentvault/caddy-agent-vault/caddymodule/wsframe"
)

// wsMaxMessage bounds a message the proxy assembles to scan; a longer
// one closes the connection (1009, message too big).
const wsMaxMessage = 16 << 20

// isWebSocket reports a 101 that switched to WebSocket.
func isWebSocket(res *http.Response) bool {
	return strings.EqualFold(strings.TrimSpace(res.Header.Get("Upgrade")), "websocket")
}

// checkWebSocketAnswer refuses a switch the proxy could not scan: one
// whose upstream negotiated an extension (none was offered).
func checkWebSocketAnswer(res *http.Response) error {
	if res.Header.Get("Sec-WebSocket-Extensions") != "" {
		res.Body.Close()
		return refused(http.StatusBadGateway, "the upstream negotiated a WebSocket extension the proxy did not offer, so its frames cannot be scanned").
			as(activity.CodeUpgrade)
	}
	return nil
}

// wsRelay stands in for the upstream's connection in ReverseProxy's
// copy of an upgraded exchange: what the agent writes is parsed and
// rewritten toward the upstream, what the upstream sends is parsed and
// scrubbed toward the agent.
type wsRelay struct {
	p       *Proxy
	x       *exchange
	backend io.ReadWriteCloser
	up      *io.PipeWriter // the agent's bytes, to pumpUp
	down    *io.PipeReader // the agent's bytes, from pumpDown
	downW   *io.PipeWriter
	once    sync.Once
}

func (p *Proxy) newWSRelay(backend io.ReadWriteCloser, x *exchange) *wsRelay {
	upR, upW := io.Pipe()
	downR, downW := io.Pipe()
	w := &wsRelay{p: p, x: x, backend: backend, up: upW, down: downR, downW: downW}
	go w.pumpUp(upR)
	go w.pumpDown()
	return w
}

func (w *wsRelay) Write(b []byte) (int, error) { return w.up.Write(b) }
func (w *wsRelay) Read(b []byte) (int, error)  { return w.down.Read(b) }

func (w *wsRelay) Close() error {
	w.once.Do(func() {
		w.up.Close()
		w.downW.Close()
		w.backend.Close()
	})
	return nil
}

// violate closes the connection with code to both sides, saying why
// (reasons are the proxy's own words, never a payload).
func (w *wsRelay) violate(code uint16, reason string) {
	w.p.logger.Warn("websocket closed", zap.String("session", w.x.sess.ID), zap.String("target", w.x.target.String()),
		zap.Uint16("code", code), zap.String("reason", reason))
	payload := wsframe.ClosePayload(code, reason)
	w.downW.Write(wsframe.Append(nil, wsframe.Frame{Fin: true, Opcode: wsframe.OpClose, Payload: payload}))
	w.backend.Write(wsframe.Append(nil, wsframe.Frame{Fin: true, Opcode: wsframe.OpClose, Masked: true, Payload: payload}))
	w.Close()
}

// violation is the close code and reason for a frame that cannot go on.
func violation(err error) (uint16, string) {
	var pe *wsframe.ProtocolError
	switch {
	case errors.As(err, &pe):
		return wsframe.CloseProtocolError, pe.Reason
	case errors.Is(err, wsframe.ErrTooLarge):
		return wsframe.CloseMessageTooBig, "a message larger than the proxy scans"
	}
	_, reason, _ := errorResponse(err)
	return wsframe.ClosePolicyViolation, reason
}

// assembler collects one direction's fragmented data messages.
type assembler struct {
	op  byte // of the message in progress; 0: none
	msg []byte
}

// add takes a data frame; it returns the whole message when f ends it.
func (a *assembler) add(f wsframe.Frame) (op byte, msg []byte, done bool, err error) {
	switch {
	case f.Opcode == wsframe.OpContinuation && a.op == 0:
		return 0, nil, false, &wsframe.ProtocolError{Reason: "a continuation frame outside a message"}
	case f.Opcode != wsframe.OpContinuation && a.op != 0:
		return 0, nil, false, &wsframe.ProtocolError{Reason: "a new message inside a fragmented one"}
	case f.Opcode != wsframe.OpContinuation:
		a.op, a.msg = f.Opcode, f.Payload
	default:
		if len(a.msg)+len(f.Payload) > wsMaxMessage {
			return 0, nil, false, wsframe.ErrTooLarge
		}
		a.msg = append(a.msg, f.Payload...)
	}
	if !f.Fin {
		return 0, nil, false, nil
	}
	op, msg = a.op, a.msg
	a.op, a.msg = 0, nil
	return op, msg, true, nil
}

// direction is one way through the relay: what its frames must look
// like, where they go, and what becomes of a control frame and of a
// whole data message.
type direction struct {
	fromClient bool // the agent's frames: masked; the upstream's: not
	write      func([]byte) (int, error)
	control    func(wsframe.Frame) wsframe.Frame
	message    func(op byte, msg []byte) ([]byte, error)
}

// pump relays src's frames one way: control frames as they come (after
// d.control), data messages whole (after d.message) as one frame, masked
// afresh toward the upstream. A frame or message that cannot go on
// closes the connection (violate).
func (w *wsRelay) pump(src io.Reader, d direction) {
	br := bufio.NewReader(src)
	var a assembler
	for {
		f, err := wsframe.Read(br, wsMaxMessage)
		if err != nil {
			if err == io.EOF || errors.Is(err, io.ErrClosedPipe) || errors.Is(err, net.ErrClosed) {
				w.Close()
				return
			}
			w.violate(violation(err))
			return
		}
		switch {
		case f.Masked != d.fromClient:
			w.violate(wsframe.CloseProtocolError, map[bool]string{true: "an unmasked frame from the client", false: "a masked frame from the server"}[d.fromClient])
			return
		case f.RSV != 0:
			w.violate(wsframe.ClosePolicyViolation, "a frame with reserved bits set (no extension was negotiated)")
			return
		case f.IsControl():
			if _, err := d.write(wsframe.Append(nil, d.control(f))); err != nil {
				w.Close()
				return
			}
			continue
		}
		op, msg, done, err := a.add(f)
		if err != nil {
			w.violate(violation(err))
			return
		}
		if !done {
			continue
		}
		out, err := d.message(op, msg)
		if err != nil {
			w.violate(violation(err))
			return
		}
		if _, err := d.write(wsframe.Append(nil, wsframe.Frame{Fin: true, Opcode: op, Masked: d.fromClient, Payload: out})); err != nil {
			w.Close()
			return
		}
	}
}

// pumpUp relays the agent's frames: text messages with placeholders
// swapped (JSON-escaped in a message that looks like JSON), binary ones
// refused if they carry a placeholder; control frames as they are.
func (w *wsRelay) pumpUp(src io.Reader) {
	w.pump(src, direction{fromClient: true, write: w.backend.Write,
		control: func(f wsframe.Frame) wsframe.Frame { return f },
		message: func(op byte, msg []byte) ([]byte, error) {
			kind := services.BodyOpaque
			if op == wsframe.OpText {
				kind = services.BodyText
				if t := strings.TrimLeft(string(msg[:min(len(msg), 64)]), " \t\r\n"); strings.HasPrefix(t, "{") || strings.HasPrefix(t, "[") {
					kind = services.BodyJSON
				}
			}
			out, _, err := services.RewriteBodyBytes(msg, kind, w.x.resolveInBody)
			return out, err
		}})
}

// pumpDown relays the upstream's frames to the agent with every secret
// form replaced (in data messages, across their fragments, and in
// control frames' payloads, a close frame's reason included).
func (w *wsRelay) pumpDown() {
	red := w.x.redactor
	w.pump(w.backend, direction{fromClient: false, write: w.downW.Write,
		control: func(f wsframe.Frame) wsframe.Frame {
			f.Payload = scrubControl(f, red.String)
			return f
		},
		message: func(_ byte, msg []byte) ([]byte, error) { return []byte(red.String(string(msg))), nil }})
}

// scrubControl scrubs a control frame's payload (a close frame's
// reason after its code), keeping it within 125 bytes: a scrubbed text
// that grew past that is cut (what is cut is the stand-in, not a secret).
func scrubControl(f wsframe.Frame, scrub func(string) string) []byte {
	head := 0
	if f.Opcode == wsframe.OpClose && len(f.Payload) >= 2 {
		head = 2
	}
	out := append(f.Payload[:head:head], scrub(string(f.Payload[head:]))...)
	if len(out) > 125 {
		out = out[:125]
	}
	return out
}
