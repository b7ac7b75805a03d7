// Package wsframe reads and writes WebSocket frames (RFC 6455 §5): the
// 7-, 16- and 64-bit payload lengths, masking, the FIN and RSV bits and
// the opcodes. It is what the proxy needs to scan a WebSocket stream;
// assembling messages and deciding what to do with them is the
// caller's.
package wsframe

import (
	"bufio"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Opcodes.
const (
	OpContinuation = 0x0
	OpText         = 0x1
	OpBinary       = 0x2
	OpClose        = 0x8
	OpPing         = 0x9
	OpPong         = 0xA
)

// Close codes the proxy sends.
const (
	ClosePolicyViolation = 1008
	CloseProtocolError   = 1002
	CloseMessageTooBig   = 1009
)

// Frame is one frame, its payload unmasked.
type Frame struct {
	Fin     bool
	RSV     byte // the three reserved bits, as bits 6..4 of the first byte
	Opcode  byte
	Masked  bool
	Payload []byte
}

// IsControl reports a control frame (close, ping, pong).
func (f Frame) IsControl() bool { return f.Opcode&0x8 != 0 }

// ErrTooLarge is a frame whose payload is longer than the reader takes.
var ErrTooLarge = errors.New("websocket frame larger than the proxy scans")

// ProtocolError is a frame that breaks RFC 6455.
type ProtocolError struct{ Reason string }

func (e *ProtocolError) Error() string { return "websocket protocol error: " + e.Reason }

// Read reads one frame of at most max payload bytes.
func Read(r *bufio.Reader, max int64) (Frame, error) {
	var h [2]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return Frame{}, err
	}
	f := Frame{Fin: h[0]&0x80 != 0, RSV: h[0] & 0x70, Opcode: h[0] & 0x0F, Masked: h[1]&0x80 != 0}
	switch f.Opcode {
	case OpContinuation, OpText, OpBinary, OpClose, OpPing, OpPong:
	default:
		return Frame{}, &ProtocolError{fmt.Sprintf("unknown opcode %#x", f.Opcode)}
	}
	n := int64(h[1] & 0x7F)
	switch n {
	case 126:
		var b [2]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return Frame{}, unexpected(err)
		}
		n = int64(binary.BigEndian.Uint16(b[:]))
	case 127:
		var b [8]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return Frame{}, unexpected(err)
		}
		u := binary.BigEndian.Uint64(b[:])
		if u>>63 != 0 {
			return Frame{}, &ProtocolError{"a payload length with its top bit set"}
		}
		n = int64(u)
	}
	if f.IsControl() && (n > 125 || !f.Fin) {
		return Frame{}, &ProtocolError{"a control frame longer than 125 bytes or fragmented"}
	}
	if n > max {
		return Frame{}, ErrTooLarge
	}
	var key [4]byte
	if f.Masked {
		if _, err := io.ReadFull(r, key[:]); err != nil {
			return Frame{}, unexpected(err)
		}
	}
	f.Payload = make([]byte, n)
	if _, err := io.ReadFull(r, f.Payload); err != nil {
		return Frame{}, unexpected(err)
	}
	if f.Masked {
		mask(f.Payload, key)
	}
	return f, nil
}

func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

func mask(b []byte, key [4]byte) {
	for i := range b {
		b[i] ^= key[i&3]
	}
}

// Append appends f to dst as it goes on the wire, masked with a fresh
// random key when f.Masked (a client's frames must be), with the
// shortest length encoding.
func Append(dst []byte, f Frame) []byte {
	b0 := f.RSV&0x70 | f.Opcode&0x0F
	if f.Fin {
		b0 |= 0x80
	}
	n := len(f.Payload)
	var m byte
	if f.Masked {
		m = 0x80
	}
	switch {
	case n < 126:
		dst = append(dst, b0, m|byte(n))
	case n <= 0xFFFF:
		dst = append(dst, b0, m|126, byte(n>>8), byte(n))
	default:
		dst = append(dst, b0, m|127)
		dst = binary.BigEndian.AppendUint64(dst, uint64(n))
	}
	if !f.Masked {
		return append(dst, f.Payload...)
	}
	var key [4]byte
	rand.Read(key[:]) //nolint:errcheck // crypto/rand.Read does not fail
	dst = append(dst, key[:]...)
	start := len(dst)
	dst = append(dst, f.Payload...)
	mask(dst[start:], key)
	return dst
}

// ClosePayload is a close frame's payload: the code and a reason.
func ClosePayload(code uint16, reason string) []byte {
	if len(reason) > 123 {
		reason = reason[:123]
	}
	return append(binary.BigEndian.AppendUint16(nil, code), reason...)
}
