package clienthello

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"io"
	"net"
	"testing"
	"testing/iotest"
	"time"
)

// goHello is the first flight a Go TLS client sends for serverName
// (and nextProtos), as bytes.
func goHello(t testing.TB, serverName string) []byte {
	t.Helper()
	client, server := net.Pipe()
	defer server.Close()
	go func() {
		c := tls.Client(client, &tls.Config{ServerName: serverName, InsecureSkipVerify: serverName == "", NextProtos: []string{"h2", "http/1.1"}})
		c.SetDeadline(time.Now().Add(10 * time.Second))
		c.Handshake() // fails when server closes
		client.Close()
	}()
	server.SetDeadline(time.Now().Add(10 * time.Second))
	var out []byte
	buf := make([]byte, 64<<10)
	// The first flight is the ClientHello, written at once; read
	// records until the message is complete.
	for {
		n, err := server.Read(buf)
		out = append(out, buf[:n]...)
		if err != nil {
			t.Fatal(err)
		}
		if len(out) >= 5 && len(out) >= 5+int(binary.BigEndian.Uint16(out[3:5])) {
			return out
		}
	}
}

// handBuilt is a minimal TLS 1.2-style ClientHello whose server_name
// extension carries names (none: no extension), in records of at most
// recordSize bytes of handshake data.
func handBuilt(recordSize int, names ...string) []byte {
	var body []byte
	body = append(body, 3, 3)                // legacy_version TLS 1.2
	body = append(body, make([]byte, 32)...) // random
	body = append(body, 0)                   // session id
	body = append(body, 0, 2, 0xc0, 0x2f)    // one cipher suite
	body = append(body, 1, 0)                // null compression
	if len(names) > 0 {
		var list []byte
		for _, n := range names {
			list = append(list, 0)
			list = binary.BigEndian.AppendUint16(list, uint16(len(n)))
			list = append(list, n...)
		}
		ext := binary.BigEndian.AppendUint16(nil, uint16(len(list)))
		ext = append(ext, list...)
		exts := []byte{0, 0} // server_name
		exts = binary.BigEndian.AppendUint16(exts, uint16(len(ext)))
		exts = append(exts, ext...)
		body = binary.BigEndian.AppendUint16(body, uint16(len(exts)))
		body = append(body, exts...)
	}
	msg := []byte{1, byte(len(body) >> 16), byte(len(body) >> 8), byte(len(body))}
	msg = append(msg, body...)
	var out []byte
	for len(msg) > 0 {
		n := min(recordSize, len(msg))
		out = append(out, 22, 3, 1)
		out = binary.BigEndian.AppendUint16(out, uint16(n))
		out = append(out, msg[:n]...)
		msg = msg[n:]
	}
	return out
}

func TestReadGoClient(t *testing.T) {
	for _, name := range []string{"registry.npmjs.org", "localhost", "Mixed.Example.COM", ""} {
		hello := goHello(t, name)
		after := append(bytes.Clone(hello), "EARLY"...) // bytes past the hello are not lost
		for what, r := range map[string]io.Reader{
			"whole":    bytes.NewReader(after),
			"one byte": iotest.OneByteReader(bytes.NewReader(after)),
		} {
			got, consumed, err := Read(r)
			if err != nil {
				t.Fatalf("%q %s: %v", name, what, err)
			}
			if got != name {
				t.Errorf("%q %s: server name %q", name, what, got)
			}
			if !bytes.HasPrefix(after, consumed) || len(consumed) < len(hello) {
				t.Errorf("%q %s: consumed %d bytes, not a prefix of the %d sent covering the %d of the hello", name, what, len(consumed), len(after), len(hello))
			}
			rest, _ := io.ReadAll(r)
			if !bytes.Equal(append(consumed, rest...), after) {
				t.Errorf("%q %s: consumed and the rest are not what was sent", name, what)
			}
		}
	}
}

func TestReadHandBuilt(t *testing.T) {
	for _, size := range []int{1 << 14, 7, 1} { // one record, several, one byte each
		got, consumed, err := Read(bytes.NewReader(handBuilt(size, "api.example.com")))
		if err != nil || got != "api.example.com" {
			t.Errorf("records of %d: %q %v", size, got, err)
		}
		if !bytes.Equal(consumed, handBuilt(size, "api.example.com")) {
			t.Errorf("records of %d: consumed %d bytes", size, len(consumed))
		}
	}
	if got, _, err := Read(bytes.NewReader(handBuilt(1 << 14))); err != nil || got != "" {
		t.Errorf("no SNI: %q %v", got, err)
	}
}

func TestReadRefuses(t *testing.T) {
	hello := handBuilt(1<<14, "api.example.com")
	big := bytes.Repeat([]byte{22, 3, 1, 0x40, 0}, 1) // a 16 KiB record header...
	big = append(big, 1, 0xff, 0xff, 0xff)            // ...of a 16 MiB handshake message
	big = append(big, make([]byte, 1<<14-4)...)
	for what, in := range map[string][]byte{
		"empty":        nil,
		"http":         []byte("GET / HTTP/1.1\r\nHost: api.example.com\r\n\r\n"),
		"truncated":    hello[:len(hello)-3],
		"trailing dot": handBuilt(1<<14, "api.example.com."),
		"not a hello":  {22, 3, 1, 0, 4, 2, 0, 0, 0}, // a ServerHello header
		"alert":        {21, 3, 1, 0, 2, 2, 40},
		"oversized":    big,
		"two names":    handBuilt(1<<14, "a.example.com", "b.example.com"),
	} {
		name, consumed, err := Read(bytes.NewReader(in))
		if err == nil {
			t.Errorf("%s: read %q without error", what, name)
		}
		if !bytes.HasPrefix(in, consumed) || len(consumed) > MaxBytes {
			t.Errorf("%s: consumed %d bytes not a prefix of the input", what, len(consumed))
		}
	}
	// A name that is no host name comes back as sent: the caller
	// compares it with the CONNECT's host, which it cannot equal.
	if name, _, err := Read(bytes.NewReader(handBuilt(1<<14, "a\x00b.example.com"))); err != nil || name != "a\x00b.example.com" {
		t.Errorf("NUL in the name: %q %v", name, err)
	}
}

// Read stops at MaxBytes even when the input goes on forever.
func TestReadBounded(t *testing.T) {
	endless := io.MultiReader(bytes.NewReader([]byte{22, 3, 1, 0x40, 0, 1, 0, 0xff, 0xf0}), zeros{})
	_, consumed, err := Read(endless)
	if err == nil || len(consumed) > MaxBytes {
		t.Fatalf("endless input: %d bytes, %v", len(consumed), err)
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }
