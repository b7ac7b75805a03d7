package scrub

import (
	"encoding/base64"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"
	"time"
)

// effective returns folded pattern -> stand-in actually used.
func (r *Redactor) effective() map[string]string {
	m := map[string]string{}
	if r.m != nil {
		for i, p := range r.m.pats {
			m[p] = r.repl[i]
		}
	}
	return m
}

func TestRedactorString(t *testing.T) {
	tests := []struct {
		name    string
		secrets map[string]string
		in      string
		want    string
	}{
		{"none", map[string]string{"sk-123": "[A]"}, "nothing here", "nothing here"},
		{"one", map[string]string{"sk-123": "[A]"}, "key=sk-123!", "key=[A]!"},
		{"repeated", map[string]string{"sk-123": "[A]"}, "sk-123sk-123 sk-123", "[A][A] [A]"},
		{"partial only", map[string]string{"sk-123": "[A]"}, "sk-12 sk-1234", "sk-12 [A]4"},
		{"any case", map[string]string{"sk-abc": "[A]"}, "SK-ABC Sk-aBc sk-abc", "[A] [A] [A]"},
		{"plus is space", map[string]string{"a+b c": "[P]"}, "a b+c|a+b+c|a b c|a_b c", "[P]|[P]|[P]|a_b c"},
		{"longest wins", map[string]string{"abc": "[S]", "abcdef": "[L]"}, "abcdef abc abcde", "[L] [S] [S]de"},
		{"substring inside", map[string]string{"xSECRETx": "[L]", "SECRET": "[S]"}, "xSECRETx SECRET", "[L] [S]"},
		// Overlapping matches are one span, with the leftmost's stand-in.
		{"overlap merges", map[string]string{"abcd": "[1]", "cdef": "[2]"}, "abcdef cdef", "[1] [2]"},
		{"overlapping self", map[string]string{"aa": "[A]"}, "aaaaa b aa", "[A] b [A]"},
		{"empty secret ignored", map[string]string{"": "[E]", "k": "<1>"}, "kEK", "<1>E<1>"},
		{"binary", map[string]string{"\x00\xff": "[B]"}, "a\x00\xffb", "a[B]b"},
		// The decoding view.
		{"percent escape", map[string]string{"secret": "[R]"}, "s%65cret s%2565cret", "[R] s%2565cret"},
		{"escape widened", map[string]string{"ab": "[R]"}, `x\u0061\u0062\u0063`, `x[R]\u0063`},
		{"json escapes", map[string]string{`a"b/c`: "[R]"}, `{"k":"a\"b\/c"}`, `{"k":"[R]"}`},
		{"html entities", map[string]string{"<a&b>": "[R]"}, "&lt;a&amp;b&gt; &LT;A&#38;B&#x3E;", "[R] [R]"},
		{"mixed escapes", map[string]string{"a/b=c": "[R]"}, `a%2F\x62&equals;\u0063`, "[R]"},
		// A raw match inside an escape takes the whole escape.
		{"percent before raw", map[string]string{"1bcdefgh": "[S]"}, "x%41bcdefgh", "x[S]"},
		// Unsafe replacements are swapped for a mask.
		{"replacement would complete secret", map[string]string{"tokena": "agvph_0123"}, "tokentokena", "token********"},
		{"replacement contains secret", map[string]string{"ph": "agvph_0123"}, "ph", "********"},
		{"replacement contains secret in any case", map[string]string{"PH_0": "[ph_0]"}, "ph_0", "********"},
		{"empty replacement", map[string]string{"ab": ""}, "aabb", "a********b"},
		{"replacement with an escape", map[string]string{"sk-1": "[%41]"}, "sk-1", "********"},
		// A stand-in must not complete an escape begun before it.
		{"stand-in completes escape", map[string]string{"Qbcdefgh": ph}, "%4Qbcdefgh Qbcdefgh", "%4******** " + ph},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := redactorOf(tt.secrets)
			got := r.String(tt.in)
			if got != tt.want {
				t.Errorf("String(%q) = %q, want %q", tt.in, got, tt.want)
			}
			if ref := referenceRedact(r, tt.in); ref != got {
				t.Errorf("reference = %q", ref)
			}
			if p := refLeaks(r.m.pats, got); p != "" {
				t.Errorf("output %q contains pattern %q", got, p)
			}
			checkReader(t, r, tt.in, tt.want, 1)
		})
	}
}

func TestRedactorKeepsSafeReplacements(t *testing.T) {
	secrets := map[string]string{
		"ghp_Z9yXwV8uT7": "agvph_0123456789abcdef0123456789abcdef",
		"sk-proj-QQQQ":   "agvph_ffffffffffffffffffffffffffffffff",
	}
	r := redactorOf(secrets)
	want := map[string]string{}
	for p, s := range secrets {
		want[fold(p)] = s
	}
	if !reflect.DeepEqual(r.effective(), want) {
		t.Errorf("safe replacements changed: %v", r.effective())
	}
}

func TestRedactorMatchesReplaceAll(t *testing.T) {
	const secret = "sk-ant-api03-abcabcab"
	const repl = "agvph_0123456789abcdef0123456789abcdef"
	r := redactorOf(map[string]string{secret: repl})
	rng := rand.New(rand.NewPCG(1, 2))
	alphabet := []string{"a", "b", "c", "sk-", "ant-", "api03-", "abcab", secret, secret[:10], "\n", "data: "}
	for n := 0; n < 300; n++ {
		var sb strings.Builder
		for sb.Len() < rng.IntN(400) {
			sb.WriteString(alphabet[rng.IntN(len(alphabet))])
		}
		in := sb.String()
		want := strings.ReplaceAll(in, secret, repl)
		if got := r.String(in); got != want {
			t.Fatalf("String(%q) = %q, want %q", in, got, want)
		}
		checkReader(t, r, in, want, uint64(n))
	}
}

func TestRedactorStreamMultipleSecrets(t *testing.T) {
	r := redactorOf(map[string]string{
		"abcabd":   "<1>",
		"cab":      "<2>",
		"bcabdxyz": "<3>",
		"zz":       "<4>",
		"Q":        "<5>",
	})
	rng := rand.New(rand.NewPCG(3, 4))
	for n := 0; n < 500; n++ {
		b := make([]byte, rng.IntN(200))
		for i := range b {
			b[i] = "abcdxyzQ"[rng.IntN(8)]
		}
		want := referenceRedact(r, string(b))
		got, err := io.ReadAll(r.Reader(&chunkReader{data: b, rng: rng}))
		if err != nil || string(got) != want {
			t.Fatalf("in %q: got %q, want %q", b, got, want)
		}
		if p := refLeaks(r.m.pats, string(got)); p != "" {
			t.Fatalf("output %q contains %q", got, p)
		}
	}
}

// checkReader asserts that r's Reader turns in into want however in is
// cut into reads: a byte at a time, in random pieces (from seed), and
// with io.EOF along with the last bytes.
func checkReader(t *testing.T, r *Redactor, in, want string, seed uint64) {
	t.Helper()
	for _, src := range []io.Reader{
		iotest.OneByteReader(strings.NewReader(in)),
		&chunkReader{data: []byte(in), rng: rand.New(rand.NewPCG(seed, 7))},
		iotest.DataErrReader(strings.NewReader(in)),
	} {
		if got, err := io.ReadAll(r.Reader(src)); err != nil || string(got) != want {
			t.Fatalf("Reader(%T, %q) = %q, %v; want %q", src, in, got, err, want)
		}
	}
}

// chunkReader returns data in random-sized pieces, sometimes empty.
type chunkReader struct {
	data []byte
	rng  *rand.Rand
}

func (c *chunkReader) Read(p []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	n := min(c.rng.IntN(12), len(p), len(c.data))
	copy(p, c.data[:n])
	c.data = c.data[n:]
	return n, nil
}

// TestRedactorNoHoldBack checks that bytes which cannot start a secret are
// delivered while the writer is still open, as Server-Sent Events need.
func TestRedactorNoHoldBack(t *testing.T) {
	// The same with the derived forms of the secret (base64, hex, ...),
	// which must not hold anything back here either.
	var set SecretSet
	set.Add("sk-secret", "[R]")
	for name, r := range map[string]*Redactor{
		"raw":     redactorOf(map[string]string{"sk-secret": "[R]"}),
		"derived": (&Cache{}).Redactor(&set),
	} {
		t.Run(name, func(t *testing.T) { testNoHoldBack(t, r) })
	}
}

func testNoHoldBack(t *testing.T, r *Redactor) {
	pr, pw := io.Pipe()
	defer pr.Close()
	rd := r.Reader(pr)

	type result struct {
		data string
		err  error
	}
	// await fails instead of hanging if the bytes are held back; the
	// timeout only detects failure, it does not order anything.
	await := func(ch <-chan result) result {
		t.Helper()
		select {
		case res := <-ch:
			return res
		case <-time.After(10 * time.Second):
			t.Fatal("bytes were held back")
			return result{}
		}
	}
	read := func(want int) <-chan result {
		ch := make(chan result, 1)
		go func() {
			buf := make([]byte, 64)
			var got []byte
			for len(got) < want {
				n, err := rd.Read(buf)
				got = append(got, buf[:n]...)
				if err != nil {
					ch <- result{string(got), err}
					return
				}
			}
			ch <- result{string(got), nil}
		}()
		return ch
	}

	// Nothing in "data: x\n\n" can start "sk-secret": all of it must
	// arrive before the writer does anything else.
	ch := read(len("data: x\n\n"))
	if _, err := pw.Write([]byte("data: x\n\n")); err != nil {
		t.Fatal(err)
	}
	if res := await(ch); res.err != nil || res.data != "data: x\n\n" {
		t.Fatalf("got %q, %v", res.data, res.err)
	}

	// "data: sk-" may start the secret: "data: " comes through, "sk-"
	// is held until it is decided.
	ch = read(len("data: "))
	if _, err := pw.Write([]byte("data: sk-")); err != nil {
		t.Fatal(err)
	}
	if res := await(ch); res.err != nil || res.data != "data: " {
		t.Fatalf("got %q, %v", res.data, res.err)
	}
	ch = read(len("[R]\n\n"))
	if _, err := pw.Write([]byte("secret\n\n")); err != nil {
		t.Fatal(err)
	}
	if res := await(ch); res.err != nil || res.data != "[R]\n\n" {
		t.Fatalf("got %q, %v", res.data, res.err)
	}

	// A held-back partial is flushed as text at EOF.
	ch = read(100)
	if _, err := pw.Write([]byte("sk-sec")); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	if res := await(ch); res.err != io.EOF || res.data != "sk-sec" {
		t.Fatalf("got %q, %v", res.data, res.err)
	}
}

func TestRedactorReaderErrors(t *testing.T) {
	r := redactorOf(map[string]string{"secret": "[R]"})
	boom := errors.New("boom")
	src := io.MultiReader(strings.NewReader("a secret and sec"), iotest.ErrReader(boom))
	rd := r.Reader(src)
	got, err := io.ReadAll(rd)
	// "sec" could be the start of the secret the stream broke off in:
	// on an error (not EOF) it is dropped, never released.
	if !errors.Is(err, boom) || string(got) != "a [R] and " {
		t.Fatalf("got %q, %v", got, err)
	}
	if n, err := rd.Read(make([]byte, 10)); n != 0 || !errors.Is(err, boom) {
		t.Errorf("error not sticky: %d, %v", n, err)
	}
	if n, err := rd.Read(nil); n != 0 || err != nil {
		t.Errorf("Read(nil) = %d, %v", n, err)
	}

	// A reader that makes no progress is not spun on forever.
	if _, err := r.Reader(zeroReader{}).Read(make([]byte, 1)); !errors.Is(err, io.ErrNoProgress) {
		t.Errorf("zero reader: %v", err)
	}

	// Without secrets, the source is returned as is.
	plain := strings.NewReader("x")
	if redactorOf(nil).Reader(plain) != io.Reader(plain) {
		t.Error("empty redactor wraps the reader")
	}
	var nilRedactor *Redactor
	if nilRedactor.String("x") != "x" || nilRedactor.Reader(plain) != io.Reader(plain) {
		t.Error("nil redactor")
	}
	nilRedactor.Header(http.Header{"X": {"y"}})
}

type zeroReader struct{}

func (zeroReader) Read([]byte) (int, error) { return 0, nil }

func TestRedactorHeader(t *testing.T) {
	r := redactorOf(map[string]string{"tok-123": "[T]"})
	h := http.Header{
		"X-Echo":         {"Bearer tok-123", "plain"},
		"Set-Cookie":     {"a=tok-123tok-123"},
		"X-Upper":        {"TOK-123", "tok%2D123"},
		"X-Tok-123-Name": {"v"}, // names match in any case, and are dropped
		"X-tok-123":      {"w"},
		"X-Tok%2d123":    {"x"}, // or escaped
	}
	r.Header(h)
	want := http.Header{
		"X-Echo":     {"Bearer [T]", "plain"},
		"Set-Cookie": {"a=[T][T]"},
		"X-Upper":    {"[T]", "[T]"},
	}
	if !reflect.DeepEqual(h, want) {
		t.Errorf("Header = %v, want %v", h, want)
	}
}

func TestRedactorContains(t *testing.T) {
	r := redactorOf(map[string]string{"tok-123": "[T]"})
	for s, want := range map[string]bool{"x tok-123": true, "TOK%2d123": true, "&#116;ok-123": true, "tok-12": false, "": false} {
		if got := r.contains(s); got != want {
			t.Errorf("contains(%q) = %v", s, got)
		}
	}
	var nilRedactor *Redactor
	if nilRedactor.contains("tok-123") || redactorOf(nil).contains("x") {
		t.Error("an empty redactor contains something")
	}
}

func TestRedactorStringNoAllocWithoutSecret(t *testing.T) {
	r := redactorOf(map[string]string{"tok-123": "[T]"})
	s := strings.Repeat("harmless text ", 20)
	if allocs := testing.AllocsPerRun(100, func() { _ = r.String(s) }); allocs != 0 {
		t.Errorf("String allocates %v times", allocs)
	}
}

func TestMaskFor(t *testing.T) {
	// Every byte used somewhere, but not at the ends.
	var all strings.Builder
	for c := 0; c < 256; c++ {
		all.WriteByte(byte(c))
	}
	secret := "\x00" + all.String() + "\x00"
	r := redactorOf(map[string]string{secret: ""})
	repl := r.repl[0]
	if repl == "" || !usableStandIn(repl, r.m.pats) {
		t.Fatalf("mask %q not safe", repl)
	}
	in := "\x00" + secret[:10] + secret + secret[5:]
	if out := r.String(in); refLeaks(r.m.pats, out) != "" {
		t.Error("output contains secret")
	}
}

// A run of overlapping matches is one span however long it grows, and
// a stream of it is not buffered: the stand-in is written once, the rest
// swallowed, also when the stand-in waits for its right neighbour.
func TestRedactorLongRunIsNotBuffered(t *testing.T) {
	for name, secrets := range map[string]map[string]string{
		"plain":      {"aaaaaaaa": ph},
		"right risk": {"aaaaaaaa": ph, "fxyzxyzxyz": "[F]"}, // ph ends in f
	} {
		t.Run(name, func(t *testing.T) {
			r := redactorOf(secrets)
			src := io.LimitReader(repeatReader('a'), 512<<10)
			rd := r.Reader(src).(*redactReader)
			var out []byte
			buf := make([]byte, 1024)
			for {
				n, err := rd.Read(buf)
				out = append(out, buf[:n]...)
				if len(rd.buf) > 64<<10 {
					t.Fatalf("holding %d bytes", len(rd.buf))
				}
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
			}
			if want := r.String(strings.Repeat("a", 512<<10)); string(out) != want || len(out) > 100 {
				t.Errorf("got %q, want %q", out, want)
			}
		})
	}
}

type repeatReader byte

func (c repeatReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(c)
	}
	return len(p), nil
}

// A stand-in that a pattern could overlap on its right (ph ends in "f",
// a pattern starts with "f") waits for the byte after its match, and no
// longer.
func TestRedactorRightNeighbourWait(t *testing.T) {
	r := redactorOf(map[string]string{"sk-secret-1": ph, "fxyzxyzxyz": "[F]"})
	pr, pw := io.Pipe()
	defer pr.Close()
	rd := r.Reader(pr)
	got := make(chan string, 1)
	read := func() {
		buf := make([]byte, 100)
		n, _ := rd.Read(buf)
		got <- string(buf[:n])
	}
	go read()
	pw.Write([]byte("data: sk-secret-1"))
	if s := <-got; s != "data: " {
		t.Fatalf("got %q", s)
	}
	go read()
	pw.Write([]byte("\n")) // cannot continue "f" into "fxyzxyzxyz"
	select {
	case s := <-got:
		if s != ph+"\n" {
			t.Fatalf("got %q", s)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the stand-in was held back")
	}
	pw.Close()
}

// redactorOf is the Redactor for pattern -> stand-in, with a matcher of
// its own.
func redactorOf(secrets map[string]string) *Redactor { return newRedactor(secrets, newMatcher) }

// String and contains go through a long input one scanWindow at a time
// (the fuzz targets stop well short of one): a secret raw, escaped or
// in base64, or all but the last byte of that, at every offset around
// the end of the first window, comes out as the reference has it, also
// as a stream cut there.
func TestRedactorWindowBoundary(t *testing.T) {
	const secret = "sk-live-0123456789abcdef+/XYZ"
	var set SecretSet
	set.Add(secret, ph)
	r := (&Cache{}).Redactor(&set)
	line := `{"id":"chatcmpl-9x8Y7z","object":"chat.completion.chunk","choices":[{"delta":{"content":"caf\u00e9 &amp; a\n"}}]}` + "\n"
	filler := strings.Repeat(line, (scanWindow+4096)/len(line))
	// The reference is quadratic, so it gets the input from a line
	// start well before the window's end: the whole lines before it are
	// whole units with no pattern near, so they come out unchanged and
	// cannot reach into what the reference decides after them.
	from := strings.LastIndexByte(filler[:scanWindow-1024], '\n') + 1
	for name, form := range map[string]string{
		"raw":     secret,
		"percent": allPercent(secret),
		"json":    jsonAllUnicode(secret),
		"base64":  base64.StdEncoding.EncodeToString([]byte(secret)),
	} {
		for _, form := range []string{form, form[:len(form)-1]} {
			// The window ends in the form's first 40 bytes, or just
			// before it, or around the form's end.
			var offs []int
			for off := scanWindow - 40; off <= scanWindow+5; off++ {
				offs = append(offs, off)
			}
			for off := scanWindow - len(form) - 5; off <= scanWindow-len(form)+5; off++ {
				if off < scanWindow-40 {
					offs = append(offs, off)
				}
			}
			for _, off := range offs {
				in := filler[:off] + form + filler[off:off+100]
				want := in[:from] + referenceRedact(r, in[from:])
				if got := r.String(in); got != want {
					t.Fatalf("%s (%d bytes) at %d: String differs from the reference after %d bytes", name, len(form), off, commonPrefix(got, want))
				}
				if got, want := r.contains(in), len(refSpans(r.m.pats, in[from:])) > 0; got != want {
					t.Fatalf("%s (%d bytes) at %d: contains = %v", name, len(form), off, got)
				}
				// As a stream: in growing reads, and with a read ending
				// where String's window does.
				for _, src := range []io.Reader{strings.NewReader(in), io.MultiReader(strings.NewReader(in[:scanWindow]), strings.NewReader(in[scanWindow:]))} {
					if got, err := io.ReadAll(r.Reader(src)); err != nil || string(got) != want {
						t.Fatalf("%s (%d bytes) at %d: Reader(%T) differs from the reference after %d bytes, %v", name, len(form), off, src, commonPrefix(string(got), want), err)
					}
				}
			}
		}
	}
}

func commonPrefix(a, b string) int {
	i := 0
	for i < len(a) && i < len(b) && a[i] == b[i] {
		i++
	}
	return i
}
