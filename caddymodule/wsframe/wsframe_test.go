package wsframe

import (
	"bufio"
	"bytes"
	"errors"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	for _, n := range []int{0, 1, 125, 126, 65535, 65536, 70000} {
		for _, masked := range []bool{false, true} {
			f := Frame{Fin: n%2 == 0, Opcode: OpBinary, Masked: masked, Payload: bytes.Repeat([]byte{'x'}, n)}
			wire := Append(nil, f)
			got, err := Read(bufio.NewReader(bytes.NewReader(wire)), 1<<20)
			if err != nil || got.Fin != f.Fin || got.Opcode != f.Opcode || got.Masked != masked || !bytes.Equal(got.Payload, f.Payload) {
				t.Fatalf("n=%d masked=%v: %+v %v", n, masked, got.Fin, err)
			}
			if masked && n > 0 && bytes.Contains(wire, f.Payload) {
				t.Fatalf("n=%d: the payload went out unmasked", n)
			}
		}
	}
}

func TestReadRefuses(t *testing.T) {
	for name, wire := range map[string][]byte{
		"unknown opcode":     {0x83, 0x00},
		"long control":       {0x89, 126, 0, 126},
		"fragmented control": {0x09, 0x00},
		"top bit length":     {0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 1},
		"too large":          Append(nil, Frame{Fin: true, Opcode: OpText, Payload: make([]byte, 2000)}),
		"truncated":          {0x81, 0x05, 'a'},
		"truncated mask key": {0x81, 0x85, 1, 2},
	} {
		_, err := Read(bufio.NewReader(bytes.NewReader(wire)), 1024)
		var pe *ProtocolError
		if err == nil || !(errors.As(err, &pe) || errors.Is(err, ErrTooLarge) || err.Error() == "unexpected EOF") {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func FuzzRead(f *testing.F) {
	f.Add(Append(nil, Frame{Fin: true, Opcode: OpText, Masked: true, Payload: []byte("hello")}))
	f.Add([]byte{0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0})
	f.Add([]byte{0x88, 0x02, 0x03, 0xe8})
	f.Fuzz(func(t *testing.T, wire []byte) {
		fr, err := Read(bufio.NewReader(bytes.NewReader(wire)), 1<<16)
		if err != nil {
			return
		}
		again, err := Read(bufio.NewReader(bytes.NewReader(Append(nil, fr))), 1<<16)
		if err != nil || again.Fin != fr.Fin || again.Opcode != fr.Opcode || again.RSV != fr.RSV || !bytes.Equal(again.Payload, fr.Payload) {
			t.Fatalf("round trip: %+v %v", again, err)
		}
	})
}
