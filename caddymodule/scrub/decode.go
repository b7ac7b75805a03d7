package scrub

import (
	"bytes"
	"slices"
	"unicode/utf8"
)

// The decoding view: the input with one level of escape sequences
// decoded, so an upstream that echoes a secret URL-, JSON-, JS- or
// HTML-escaped (in any mix) is caught without a pattern per encoding.
//
// The input is parsed greedily left to right into units: an escape
// sequence, or a single literal byte. The escapes are
//
//	%HH                 the byte HH (either hex case)
//	\uHHHH              the code point, as UTF-8; \uD8xx\uDCxx (a valid
//	                    surrogate pair) is one code point; a lone
//	                    surrogate is no escape
//	\xHH                the byte HH
//	\" \\ \/ \b \f \n \r \t    the JSON/JS byte
//	&#DDD; &#xHHH;      the code point (x either case, at most
//	                    maxEntityDigits digits, at most U+10FFFF, not a
//	                    surrogate), as UTF-8
//	&name;              one of htmlEntities, case as HTML spells it
//
// Anything else is literal. Only one level is decoded: %2541 is "%41".

// maxEscape is the longest escape sequence (\uD83D\uDE00, or &#x + 8
// digits + ;): whether a unit is an escape is decided within that many
// bytes from its start.
const maxEscape = 12

// maxEntityDigits bounds the digits of a numeric character reference,
// leading zeros included, so that deciding one needs bounded look-ahead.
const maxEntityDigits = 8

// htmlEntities are the named character references decoded: the ones
// that stand for ASCII punctuation (what an HTML escaper writes for the
// characters of a token), plus HTML's legacy upper-case aliases of the
// common four. &tilde; is U+02DC SMALL TILDE in HTML, not '~'.
var htmlEntities = map[string]string{
	"amp": "&", "AMP": "&", "lt": "<", "LT": "<", "gt": ">", "GT": ">",
	"quot": `"`, "QUOT": `"`, "apos": "'", "sol": "/", "plus": "+",
	"equals": "=", "excl": "!", "num": "#", "dollar": "$", "percnt": "%",
	"colon": ":", "semi": ";", "comma": ",", "period": ".", "lpar": "(",
	"rpar": ")", "ast": "*", "commat": "@", "lowbar": "_", "quest": "?",
	"lsqb": "[", "rsqb": "]", "lbrace": "{", "rbrace": "}", "verbar": "|",
	"Hat": "^", "grave": "`", "tilde": "\u02dc",
}

// entityValue looks name up in htmlEntities; a switch on the bytes
// costs no hashing on the hot path of HTML-escaped text.
func entityValue(name []byte) string {
	switch string(name) {
	case "amp", "AMP":
		return "&"
	case "lt", "LT":
		return "<"
	case "gt", "GT":
		return ">"
	case "quot", "QUOT":
		return `"`
	}
	return htmlEntities[string(name)]
}

// maxEntityName is the longest name in htmlEntities.
const maxEntityName = 6

// isStarter reports the bytes an escape starts with.
func isStarter(c byte) bool { return c == '%' || c == '\\' || c == '&' }

// escape is one escape sequence of the parse: input bytes [in, in+n)
// decode to dec[:dn], which the decoding view holds at out.
type escape struct {
	in, out int
	n, dn   uint8
	dec     [4]byte
}

// parseEscape decodes the escape sequence at the start of b, which is
// all the input there is from that point. It returns n == 0 if b does
// not start with one.
func parseEscape(b []byte) (n int, dec [4]byte, dn int) {
	if len(b) < 2 {
		return 0, dec, 0
	}
	switch b[0] {
	case '%':
		if len(b) >= 3 {
			if v, ok := hexByte(b[1], b[2]); ok {
				dec[0] = v
				return 3, dec, 1
			}
		}
	case '\\':
		switch c := b[1]; c {
		case 'u':
			cp, ok := hex4(b[2:])
			switch {
			case !ok || isLowSurrogate(cp):
			case isHighSurrogate(cp):
				if len(b) >= 12 && b[6] == '\\' && b[7] == 'u' {
					if lo, ok := hex4(b[8:]); ok && isLowSurrogate(lo) {
						r := 0x10000 + (cp-0xD800)<<10 + (lo - 0xDC00)
						return 12, dec, utf8.EncodeRune(dec[:], r)
					}
				}
			default:
				return 6, dec, utf8.EncodeRune(dec[:], cp)
			}
		case 'x':
			if len(b) >= 4 {
				if v, ok := hexByte(b[2], b[3]); ok {
					dec[0] = v
					return 4, dec, 1
				}
			}
		case '"', '\\', '/':
			dec[0] = c
			return 2, dec, 1
		case 'b':
			dec[0] = '\b'
			return 2, dec, 1
		case 'f':
			dec[0] = '\f'
			return 2, dec, 1
		case 'n':
			dec[0] = '\n'
			return 2, dec, 1
		case 'r':
			dec[0] = '\r'
			return 2, dec, 1
		case 't':
			dec[0] = '\t'
			return 2, dec, 1
		}
	case '&':
		if b[1] == '#' {
			return parseNumericRef(b)
		}
		for i := 2; i < len(b) && i <= maxEntityName+1; i++ {
			if b[i] == ';' {
				if v := entityValue(b[1:i]); v != "" {
					return i + 1, dec, copy(dec[:], v)
				}
				break
			}
		}
	}
	return 0, dec, 0
}

// parseNumericRef decodes &#DDD; or &#xHHH; at the start of b.
func parseNumericRef(b []byte) (n int, dec [4]byte, dn int) {
	i, base := 2, 10
	if len(b) > 2 && (b[2] == 'x' || b[2] == 'X') {
		i, base = 3, 16
	}
	start := i
	v := 0 // an int: eight hex digits overflow a rune
	for ; i < len(b) && i-start < maxEntityDigits; i++ {
		d, ok := digitValue(b[i], base)
		if !ok {
			break
		}
		v = v*base + d
	}
	if i == start || i >= len(b) || b[i] != ';' || v > utf8.MaxRune || isSurrogate(rune(v)) {
		return 0, dec, 0
	}
	return i + 1, dec, utf8.EncodeRune(dec[:], rune(v))
}

// escapePrefix reports whether b, the rest of the input so far from a
// starter that did not parse as an escape, could still become one when
// more input arrives: the parse of that unit is undecided.
func escapePrefix(b []byte) bool {
	if len(b) >= maxEscape {
		return false
	}
	if len(b) == 1 {
		return true
	}
	switch b[0] {
	case '%':
		return len(b) == 2 && isHex(b[1])
	case '\\':
		switch b[1] {
		case 'x':
			return len(b) <= 3 && allHex(b[2:])
		case 'u':
			return unicodePrefix(b)
		}
	case '&':
		if b[1] == '#' {
			return numericRefPrefix(b)
		}
		for name := range htmlEntities {
			if len(b)-1 <= len(name) && string(b[1:]) == name[:len(b)-1] {
				return true
			}
		}
	}
	return false
}

// unicodePrefix is escapePrefix for b starting with \u.
func unicodePrefix(b []byte) bool {
	digits := b[2:min(len(b), 6)]
	if !allHex(digits) {
		return false
	}
	if len(digits) >= 2 && (digits[0]|0x20) == 'd' && isHighNibbleLow(digits[1]) {
		return false // \uDC.. to \uDF..: a low surrogate whatever follows
	}
	if len(digits) < 4 {
		return true
	}
	cp, _ := hex4(digits)
	if !isHighSurrogate(cp) {
		return false // complete (it would have parsed) or a lone low surrogate
	}
	// A high surrogate waits for \uDC00-\uDFFF.
	rest := b[6:]
	for i, c := range rest {
		var ok bool
		switch i {
		case 0:
			ok = c == '\\'
		case 1:
			ok = c == 'u'
		case 2:
			ok = c|0x20 == 'd'
		case 3:
			ok = isHighNibbleLow(c)
		default:
			ok = isHex(c)
		}
		if !ok {
			return false
		}
	}
	return true
}

// numericRefPrefix is escapePrefix for b starting with &#.
func numericRefPrefix(b []byte) bool {
	i, base := 2, 10
	if len(b) > 2 && (b[2] == 'x' || b[2] == 'X') {
		i, base = 3, 16
	}
	digits := b[i:]
	if len(digits) > maxEntityDigits {
		return false
	}
	v := 0
	for _, c := range digits {
		d, ok := digitValue(c, base)
		if !ok {
			return false // a ';' here would have parsed, or been out of range
		}
		v = v*base + d
	}
	// More digits only make it larger; at the limit only ';' may follow.
	return v <= utf8.MaxRune && (len(digits) < maxEntityDigits || !isSurrogate(rune(v)))
}

// parseEscapes parses b greedily and appends its escapes to esc. It
// returns the length of the decided prefix: all of b if final (nothing
// follows it), else up to the start of an escape that more input could
// still complete.
func parseEscapes(b []byte, final bool, esc []escape) ([]escape, int) {
	// Three IndexByte cursors (SIMD) instead of a byte loop: text
	// without starters costs three fast passes. A cursor at len(b)
	// means none left.
	next := [3]int{-1, -1, -1}
	starters := [3]byte{'%', '\\', '&'}
	run, out := 0, 0 // input start of the current literal run, and its view position
	for i := 0; i < len(b); {
		at := len(b)
		for j := range next {
			if next[j] < i {
				next[j] = indexFrom(b, i, starters[j])
			}
			at = min(at, next[j])
		}
		if at == len(b) {
			break
		}
		n, dec, dn := parseEscape(b[at:])
		if n == 0 {
			if !final && escapePrefix(b[at:]) {
				return esc, at
			}
			i = at + 1
			continue
		}
		out += at - run
		if len(esc) == cap(esc) {
			esc = slices.Grow(esc, max(64, len(b)>>8))
		}
		esc = esc[:len(esc)+1]
		esc[len(esc)-1] = escape{in: at, out: out, n: uint8(n), dn: uint8(dn), dec: dec}
		out += dn
		i = at + n
		run = i
	}
	return esc, len(b)
}

// indexFrom is the index of c in b at or after i, or len(b).
func indexFrom(b []byte, i int, c byte) int {
	if k := bytes.IndexByte(b[i:], c); k >= 0 {
		return i + k
	}
	return len(b)
}

// view is the decoding view of a prefix of the input, with the escapes
// it decoded, to map positions back to the input.
type view struct {
	esc []escape
	dec []byte
}

// build fills v.dec from in (the decided prefix) and v.esc: the runs
// between escapes copied, each escape replaced by its decoding.
func (v *view) build(in []byte) {
	dec := v.dec[:cap(v.dec)]
	if len(dec) < len(in) {
		dec = make([]byte, len(in)) // decoding never lengthens
	}
	i, o := 0, 0
	for k := range v.esc {
		e := &v.esc[k]
		o += copy(dec[o:], in[i:e.in])
		o += copy(dec[o:], e.dec[:e.dn])
		i = e.in + int(e.n)
	}
	o += copy(dec[o:], in[i:])
	v.dec = dec[:o]
}

// escapeAtOut returns the index of the last escape whose decoding
// starts at or before view position d, or -1.
func (v *view) escapeAtOut(d int) int {
	lo, hi := 0, len(v.esc)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if v.esc[m].out <= d {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo - 1
}

// escapeAtIn returns the index of the last escape starting at or
// before input position i, or -1.
func (v *view) escapeAtIn(i int) int {
	lo, hi := 0, len(v.esc)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if v.esc[m].in <= i {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo - 1
}

// inStart maps view position d to the input position of the start of
// the unit that produced it.
func (v *view) inStart(d int) int {
	k := v.escapeAtOut(d)
	if k < 0 {
		return d
	}
	e := &v.esc[k]
	if d < e.out+int(e.dn) {
		return e.in
	}
	return e.in + int(e.n) + d - (e.out + int(e.dn))
}

// inEnd maps the exclusive view end d (> 0) to the input position just
// past the unit that produced byte d-1.
func (v *view) inEnd(d int) int {
	return v.unitEnd(v.inStart(d-1) + 1)
}

// outPos maps input position i, a unit boundary, to the view.
func (v *view) outPos(i int) int {
	k := v.escapeAtIn(i - 1)
	if k < 0 {
		return i
	}
	e := &v.esc[k]
	return e.out + int(e.dn) + i - (e.in + int(e.n))
}

// boundaryFrom moves input position i forward to a unit boundary.
func (v *view) boundaryFrom(i int) int {
	if k := v.escapeAtIn(i); k >= 0 && i > v.esc[k].in && i < v.esc[k].in+int(v.esc[k].n) {
		return v.esc[k].in + int(v.esc[k].n)
	}
	return i
}

// unitStart moves input position i back to the start of the unit
// containing it.
func (v *view) unitStart(i int) int {
	if k := v.escapeAtIn(i); k >= 0 && i < v.esc[k].in+int(v.esc[k].n) {
		return v.esc[k].in
	}
	return i
}

// unitEnd moves the exclusive input end e forward to the end of the
// unit containing byte e-1.
func (v *view) unitEnd(e int) int {
	if k := v.escapeAtIn(e - 1); k >= 0 && e-1 < v.esc[k].in+int(v.esc[k].n) {
		return v.esc[k].in + int(v.esc[k].n)
	}
	return e
}

func isHex(c byte) bool {
	_, ok := digitValue(c, 16)
	return ok
}

func allHex(b []byte) bool {
	for _, c := range b {
		if !isHex(c) {
			return false
		}
	}
	return true
}

// isHighNibbleLow reports the second hex digit of a low surrogate
// (DC-DF).
func isHighNibbleLow(c byte) bool {
	c |= 0x20
	return c >= 'c' && c <= 'f'
}

func digitValue(c byte, base int) (int, bool) {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0'), true
	case base == 16 && c|0x20 >= 'a' && c|0x20 <= 'f':
		return int(c|0x20-'a') + 10, true
	}
	return 0, false
}

func hexByte(a, b byte) (byte, bool) {
	x, y := hexTab[a], hexTab[b]
	return x<<4 | y&15, x|y < 16
}

// hexTab is the value of a hex digit, or 0xFF.
var hexTab = func() (t [256]byte) {
	for i := range t {
		v, ok := digitValue(byte(i), 16)
		t[i] = byte(v)
		if !ok {
			t[i] = 0xFF
		}
	}
	return t
}()

func hex4(b []byte) (rune, bool) {
	if len(b) < 4 {
		return 0, false
	}
	hi, ok1 := hexByte(b[0], b[1])
	lo, ok2 := hexByte(b[2], b[3])
	return rune(hi)<<8 | rune(lo), ok1 && ok2
}

func isHighSurrogate(r rune) bool { return r >= 0xD800 && r < 0xDC00 }
func isLowSurrogate(r rune) bool  { return r >= 0xDC00 && r < 0xE000 }
func isSurrogate(r rune) bool     { return r >= 0xD800 && r < 0xE000 }
