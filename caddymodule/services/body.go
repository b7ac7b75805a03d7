package services

import (
	"bytes"
	"encoding/json"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
)

// BodyKind is how a request body's placeholders are treated.
type BodyKind int

const (
	// BodyOpaque bodies pass unchanged, but a placeholder in one (as
	// is, or with its '_' escaped) fails the read: other media types,
	// and any body with a Content-Encoding, which the proxy cannot
	// rewrite in place.
	BodyOpaque BodyKind = iota
	// BodyJSON (application/json, application/*+json): the secret is
	// written JSON-escaped, as the string it stands in.
	BodyJSON
	// BodyForm (application/x-www-form-urlencoded): the secret is
	// percent-encoded, so it cannot add fields.
	BodyForm
	// BodyText (text/*, multipart/form-data): the secret is written as
	// it is.
	BodyText
)

// BodyKindOf is the kind of a body with these request headers.
func BodyKindOf(h http.Header) BodyKind {
	for _, v := range h.Values("Content-Encoding") {
		for ce := range strings.SplitSeq(v, ",") {
			if ce = strings.TrimSpace(ce); ce != "" && !strings.EqualFold(ce, "identity") {
				return BodyOpaque
			}
		}
	}
	mt, _, err := mime.ParseMediaType(h.Get("Content-Type"))
	if err != nil {
		return BodyOpaque
	}
	switch {
	case mt == "application/json" || strings.HasPrefix(mt, "application/") && strings.HasSuffix(mt, "+json"):
		return BodyJSON
	case mt == "application/x-www-form-urlencoded":
		return BodyForm
	case mt == "multipart/form-data" || strings.HasPrefix(mt, "text/"):
		return BodyText
	}
	return BodyOpaque
}

// placeholderHead is what every placeholder form starts with; the '_'
// after it may be escaped ("%5F", "\u005f").
const placeholderHead = "agvph"

// maxPlaceholderForm is the longest form looked at: "agvph\u005f" and
// 32 hex digits. The rewriter holds back at most this many bytes.
const maxPlaceholderForm = len(placeholderHead) + len(`\u005f`) + placeholderHexLen

// BodyRewriter reads a request body with its placeholders swapped for
// their secrets, escaped for the body's kind, as it streams: a
// placeholder split across reads is found, since the bytes that could
// begin one (at most maxPlaceholderForm) are held back until the next
// read decides. A placeholder of an opaque body, one with an escaped
// '_' (not swapped), one after an unfinished %-escape in a form, or an
// error of resolve (the binding rule) fails the Read with that error;
// the caller must then refuse the request.
type BodyRewriter struct {
	src     io.Reader
	kind    BodyKind
	resolve func(ph string) (string, error)
	in      []byte // read, not yet decided
	out     []byte // decided; out[outAt:] not yet returned
	outAt   int
	eof     bool
	err     error
	written []string
	buf     []byte
	// before is the last two input bytes already decided, for a
	// placeholder at the start of in (the %-escape rule).
	before string
}

// NewBodyRewriter returns a BodyRewriter of src.
func NewBodyRewriter(src io.Reader, kind BodyKind, resolve func(ph string) (string, error)) *BodyRewriter {
	return &BodyRewriter{src: src, kind: kind, resolve: resolve}
}

// RewriteBodyBytes rewrites a whole body in memory, as a BodyRewriter
// reading it would (same rules, same errors); a body without anything
// that could begin a placeholder is returned as it is, uncopied.
func RewriteBodyBytes(data []byte, kind BodyKind, resolve func(ph string) (string, error)) (out []byte, written []string, err error) {
	if !bytes.Contains(data, []byte(placeholderHead)) {
		return data, nil, nil
	}
	b := &BodyRewriter{kind: kind, resolve: resolve, in: data, eof: true, out: make([]byte, 0, len(data)+64)}
	if err := b.process(); err != nil {
		return nil, nil, err
	}
	return b.out, b.written, nil
}

// Written returns the escaped secrets written so far that differ from
// the raw ones, as they went out (for scrubbing the answer).
func (b *BodyRewriter) Written() []string { return b.written }

func (b *BodyRewriter) Read(p []byte) (int, error) {
	for len(b.out) == b.outAt {
		if b.err != nil {
			return 0, b.err
		}
		if b.eof && len(b.in) == 0 {
			return 0, io.EOF
		}
		if !b.eof {
			if b.buf == nil {
				b.buf = make([]byte, 32<<10)
			}
			n, err := b.src.Read(b.buf)
			b.in = append(b.in, b.buf[:n]...)
			switch {
			case err == io.EOF:
				b.eof = true
			case err != nil:
				b.err = err
				continue
			}
			if n == 0 && !b.eof {
				continue
			}
		}
		if err := b.process(); err != nil {
			b.err, b.out, b.outAt, b.in = err, nil, 0, nil
		}
	}
	n := copy(p, b.out[b.outAt:])
	if b.outAt += n; b.outAt == len(b.out) {
		b.out, b.outAt = b.out[:0], 0 // keep the buffer
	}
	return n, nil
}

// process moves what can be decided from in to out.
func (b *BodyRewriter) process() error {
	data, final := b.in, b.eof
	start, i := 0, 0
	for {
		j := bytes.Index(data[i:], []byte(placeholderHead))
		if j < 0 {
			safe := len(data)
			if !final {
				safe = max(i, len(data)-(len(placeholderHead)-1))
			}
			b.out = append(b.out, data[start:safe]...)
			b.keepBefore(data[:safe])
			b.in = append(b.in[:0], data[safe:]...)
			return nil
		}
		at := i + j
		rest := data[at+len(placeholderHead):]
		if !final && len(rest) < maxPlaceholderForm-len(placeholderHead) {
			// Too few bytes yet to tell: hold from here.
			b.out = append(b.out, data[start:at]...)
			b.keepBefore(data[:at])
			b.in = append(b.in[:0], data[at:]...)
			return nil
		}
		switch {
		case len(rest) > placeholderHexLen && rest[0] == '_' && isLowerHex(string(rest[1:1+placeholderHexLen])):
			end := at + placeholderLen
			secret, err := b.swap(data, at, string(data[at:end]))
			if err != nil {
				return err
			}
			b.out = append(append(b.out, data[start:at]...), secret...)
			start, i = end, end
		case escapedUnderscore(rest):
			return &RewriteError{"the request body carries a placeholder whose '_' is escaped; send placeholders as they are"}
		default:
			i = at + len(placeholderHead)
		}
	}
}

// keepBefore remembers the last two bytes of decided input.
func (b *BodyRewriter) keepBefore(decided []byte) {
	ctx := b.before + string(decided[max(0, len(decided)-2):])
	b.before = ctx[max(0, len(ctx)-2):]
}

// swap is the text that replaces the placeholder ph found at data[at:].
func (b *BodyRewriter) swap(data []byte, at int, ph string) (string, error) {
	switch b.kind {
	case BodyOpaque:
		return "", &RewriteError{"the request body carries a placeholder, and placeholders are swapped only in uncompressed JSON, form, multipart and text bodies (of services whose body_substitution is on): send it in one of those, or in a header"}
	case BodyForm:
		ctx := b.before + string(data[max(0, at-2):at])
		if afterUnfinishedEscape(ctx, len(ctx)) {
			return "", &RewriteError{"a placeholder in the request body follows an unfinished %-escape"}
		}
	}
	secret, err := b.resolve(ph)
	if err != nil {
		return "", err
	}
	var esc string
	switch b.kind {
	case BodyJSON:
		esc = jsonStringContent(secret)
	case BodyForm:
		esc = url.QueryEscape(secret)
	default:
		return secret, nil
	}
	if esc != secret {
		b.written = append(b.written, esc)
	}
	return esc, nil
}

// escapedUnderscore reports a placeholder whose '_' is written "%5F" or
// "\u005F" (either case) before its 32 hex digits.
func escapedUnderscore(rest []byte) bool {
	for _, esc := range []string{"%5f", `\u005f`} {
		if len(rest) >= len(esc)+placeholderHexLen && strings.EqualFold(string(rest[:len(esc)]), esc) &&
			isHexString(rest[len(esc):len(esc)+placeholderHexLen]) {
			return true
		}
	}
	return false
}

func isHexString(b []byte) bool {
	for _, c := range b {
		if !isHex(c) {
			return false
		}
	}
	return true
}

// jsonStringContent is s escaped as the inside of a JSON string.
func jsonStringContent(s string) string {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.Encode(s) //nolint:errcheck // a string always encodes
	out := buf.Bytes()
	return string(out[1 : len(out)-2]) // drop the quotes and the newline
}
