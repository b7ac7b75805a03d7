package clienthello

import (
	"bytes"
	"io"
	"testing"
)

// FuzzRead: whatever the input, Read consumes a prefix of it of at
// most MaxBytes, and a name it returns is one of the hello's bytes. A
// hello it accepts, read again one byte at a time, gives the same name
// (records and reads split anywhere).
func FuzzRead(f *testing.F) {
	f.Add(goHello(f, "registry.npmjs.org"))
	f.Add(goHello(f, ""))
	f.Add(handBuilt(1<<14, "api.example.com"))
	f.Add(handBuilt(5, "api.example.com"))
	f.Add(handBuilt(1 << 14))
	f.Add(handBuilt(1<<14, "a.example.com", "b.example.com"))
	f.Add(handBuilt(1<<14, "api.example.com."))
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		name, consumed, err := Read(bytes.NewReader(in))
		if !bytes.HasPrefix(in, consumed) || len(consumed) > MaxBytes {
			t.Fatalf("consumed %d bytes, not a prefix of the %d given", len(consumed), len(in))
		}
		if err != nil {
			if name != "" {
				t.Fatalf("a name %q with an error %v", name, err)
			}
			return
		}
		if len(name) > len(consumed) {
			t.Fatalf("name %q is longer than the hello", name)
		}
		again, _, err := Read(&oneByte{in})
		if err != nil || again != name {
			t.Fatalf("byte by byte: %q %v, want %q", again, err, name)
		}
	})
}

type oneByte struct{ b []byte }

func (r *oneByte) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	if len(p) == 0 {
		return 0, nil
	}
	p[0], r.b = r.b[0], r.b[1:]
	return 1, nil
}
