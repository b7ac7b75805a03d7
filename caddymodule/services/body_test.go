package services

import (
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"testing/iotest"
)

const (
	bodyPH     = "agvph_0123456789abcdef0123456789abcdef"
	otherPH    = "agvph_ffffffffffffffffffffffffffffffff"
	bodySecret = `s3cr"et&x=1\ü`
)

func bodyResolve(ph string) (string, error) {
	if ph == bodyPH {
		return bodySecret, nil
	}
	return "", errors.New("not bound")
}

func rewriteAll(t testing.TB, src io.Reader, kind BodyKind) (string, []string, error) {
	rw := NewBodyRewriter(src, kind, bodyResolve)
	out, err := io.ReadAll(rw)
	return string(out), rw.Written(), err
}

func TestBodyKindOf(t *testing.T) {
	for ct, want := range map[string]BodyKind{
		"application/json":                  BodyJSON,
		"application/json; charset=utf-8":   BodyJSON,
		"application/vnd.api+json":          BodyJSON,
		"application/x-www-form-urlencoded": BodyForm,
		"multipart/form-data; boundary=x":   BodyText,
		"text/plain":                        BodyText,
		"application/octet-stream":          BodyOpaque,
		"":                                  BodyOpaque,
		"garbage;;":                         BodyOpaque,
	} {
		if got := BodyKindOf(http.Header{"Content-Type": {ct}}); got != want {
			t.Errorf("%q: %v, want %v", ct, got, want)
		}
	}
	if BodyKindOf(http.Header{"Content-Type": {"application/json"}, "Content-Encoding": {"gzip"}}) != BodyOpaque {
		t.Error("a compressed JSON body is rewritten")
	}
}

func TestBodyRewriter(t *testing.T) {
	for _, tc := range []struct {
		name string
		kind BodyKind
		in   string
		want string
		err  string
	}{
		{"json", BodyJSON, `{"token":"` + bodyPH + `","n":1}`, `{"token":"s3cr\"et&x=1\\ü","n":1}`, ""},
		{"form", BodyForm, "a=1&client_secret=" + bodyPH + "&b=2", "a=1&client_secret=s3cr%22et%26x%3D1%5C%C3%BC&b=2", ""},
		{"text", BodyText, "x " + bodyPH + bodyPH + " y", "x " + bodySecret + bodySecret + " y", ""},
		{"no placeholder", BodyJSON, `{"agvph":"agvph_short","agvph_` + strings.Repeat("g", 32) + `"}`, `{"agvph":"agvph_short","agvph_` + strings.Repeat("g", 32) + `"}`, ""},
		{"unbound", BodyJSON, `{"t":"` + otherPH + `"}`, "", "not bound"},
		{"opaque", BodyOpaque, "\x00\x01" + bodyPH, "", "placeholders are swapped only in"},
		{"opaque clean", BodyOpaque, "\x00\x01agvph", "\x00\x01agvph", ""},
		{"escaped underscore", BodyForm, "k=agvph%5F0123456789abcdef0123456789abcdef", "", "'_' is escaped"},
		{"json escaped underscore", BodyJSON, `"agvph\u005f0123456789abcdef0123456789abcdef"`, "", "'_' is escaped"},
		{"unfinished escape", BodyForm, "k=%2" + bodyPH, "", "unfinished %-escape"},
		{"at the end", BodyText, "tail " + bodyPH, "tail " + bodySecret, ""},
		{"prefix at the end", BodyText, "tail agvph_01", "tail agvph_01", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Whole, and one byte per read: the same.
			for _, src := range []io.Reader{strings.NewReader(tc.in), iotest.OneByteReader(strings.NewReader(tc.in))} {
				got, _, err := rewriteAll(t, src, tc.kind)
				switch {
				case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
					t.Fatalf("error %v, want %q (output %q)", err, tc.err, got)
				case tc.err == "" && (err != nil || got != tc.want):
					t.Fatalf("got %q, %v; want %q", got, err, tc.want)
				}
				if err != nil && strings.Contains(got, "s3cr") {
					t.Fatalf("a failed rewrite let a secret out: %q", got)
				}
			}
		})
	}
	_, written, _ := rewriteAll(t, strings.NewReader(`"`+bodyPH+`"`), BodyJSON)
	if len(written) != 1 || written[0] != `s3cr\"et&x=1\\ü` {
		t.Errorf("written %q", written)
	}
}

// A placeholder never reaches the output unswapped, whatever the reads.
func FuzzBodyRewriter(f *testing.F) {
	f.Add(`{"a":"`+bodyPH+`"}`, uint8(3), uint8(1))
	f.Add("x=agvph%5f"+strings.Repeat("a", 32), uint8(1), uint8(2))
	f.Add("agvphagvph_"+bodyPH[6:], uint8(7), uint8(3))
	f.Fuzz(func(t *testing.T, in string, step uint8, kind uint8) {
		k := BodyKind(kind % 4)
		whole, _, wholeErr := rewriteAll(t, strings.NewReader(in), k)
		if in == "" {
			return
		}
		split, _, splitErr := rewriteAll(t, &stepReader{s: in, n: int(step%64) + 1}, k)
		if (wholeErr == nil) != (splitErr == nil) {
			t.Fatalf("whole %v, split %v", wholeErr, splitErr)
		}
		if wholeErr == nil && whole != split {
			t.Fatalf("whole %q, split %q", whole, split)
		}
		mem, _, memErr := RewriteBodyBytes([]byte(in), k, bodyResolve)
		if (memErr == nil) != (wholeErr == nil) || memErr == nil && string(mem) != whole {
			t.Fatalf("in memory %q %v, streamed %q %v", mem, memErr, whole, wholeErr)
		}
		if wholeErr == nil && strings.Contains(whole, bodyPH) {
			t.Fatalf("a bound placeholder left unswapped: %q", whole)
		}
	})
}

type stepReader struct {
	s string
	n int
}

func (r *stepReader) Read(p []byte) (int, error) {
	if r.s == "" {
		return 0, io.EOF
	}
	n := min(r.n, len(p), len(r.s))
	copy(p, r.s[:n])
	r.s = r.s[n:]
	return n, nil
}

func BenchmarkBodyRewriterNoPlaceholder(b *testing.B) {
	body := strings.Repeat(`{"name":"a file chunk","data":"0123456789abcdefghijklmnopqrstuvwxyz"}`+"\n", (10<<20)/70)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		rw := NewBodyRewriter(strings.NewReader(body), BodyJSON, bodyResolve)
		if _, err := io.Copy(io.Discard, rw); err != nil {
			b.Fatal(err)
		}
	}
}
