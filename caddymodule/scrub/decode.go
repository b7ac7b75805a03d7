package scrub

import (
	"bytes"
	"slices"
	"sort"
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
//	\uHHHH %uHHHH       the code point, as UTF-8 (%u is JavaScript's
//	                    escape()); \uD8xx\uDCxx (a valid surrogate pair,
//	                    %uD8xx%uDCxx) is one code point; a lone
//	                    surrogate is no escape
//	\UHHHHHHHH          (Python) the code point, at most U+10FFFF, not
//	                    a surrogate
//	\u{H...}            (ES6) 1 to 6 digits, the same code points
//	\xHH                the byte HH
//	\" \' \\ \/ \b \f \n \r \t    the JSON/JS/Python byte
//	&#DDD; &#xHHH;      the code point (x either case, at most
//	                    maxEntityDigits digits with leading zeros, at
//	                    most U+10FFFF, not a surrogate), as UTF-8; the
//	                    ";" may be left out (&#65&#66, as browsers and
//	                    Python's html.unescape read it), then the
//	                    digits end at the first non-digit
//	&name;              one of htmlEntities, case as HTML spells it
//
// Anything else is literal. Only one level is decoded: %2541 is "%41".

// maxEscape is the longest escape sequence (&#x, maxEntityDigits
// digits, ;): whether a unit is an escape is decided within that many
// bytes from its start.
const maxEscape = 3 + maxEntityDigits + 1

// maxEntityDigits bounds the digits of a numeric character reference,
// leading zeros included, so that deciding one needs bounded look-ahead:
// a reference with more is text.
const maxEntityDigits = 32

// htmlEntities are the named character references decoded (with the
// ";"): every HTML5 one whose value is a single ASCII character (what an
// HTML escaper may write for the characters of a token), and &tilde;,
// which is U+02DC SMALL TILDE in HTML, not '~'. Lookups scan it, so the
// common ones come first.
var htmlEntities = []struct{ name, value string }{
	{"amp", "&"}, {"lt", "<"}, {"gt", ">"}, {"quot", `"`}, {"apos", "'"},
	{"AMP", "&"}, {"LT", "<"}, {"GT", ">"}, {"QUOT", `"`},
	{"sol", "/"}, {"plus", "+"}, {"equals", "="}, {"excl", "!"}, {"num", "#"},
	{"dollar", "$"}, {"percnt", "%"}, {"colon", ":"}, {"semi", ";"},
	{"comma", ","}, {"period", "."}, {"lpar", "("}, {"rpar", ")"},
	{"ast", "*"}, {"midast", "*"}, {"commat", "@"}, {"lowbar", "_"}, {"UnderBar", "_"},
	{"quest", "?"}, {"lsqb", "["}, {"lbrack", "["}, {"rsqb", "]"}, {"rbrack", "]"},
	{"lbrace", "{"}, {"lcub", "{"}, {"rbrace", "}"}, {"rcub", "}"},
	{"verbar", "|"}, {"vert", "|"}, {"VerticalLine", "|"}, {"bsol", `\`},
	{"Hat", "^"}, {"grave", "`"}, {"DiacriticalGrave", "`"},
	{"Tab", "\t"}, {"NewLine", "\n"}, {"tilde", "\u02dc"},
}

// maxEntityName is the longest name in htmlEntities (DiacriticalGrave).
const maxEntityName = 16

// isStarter reports the bytes an escape starts with.
func isStarter(c byte) bool { return c == '%' || c == '\\' || c == '&' }

// escape is one escape sequence of the parse: input bytes [in, in+n)
// decode to dec[:dn], which the decoding view holds at out.
type escape struct {
	in, out int
	n, dn   uint8
	dec     [4]byte
}

// parseEscape parses the unit at the start of b, the input from a
// starter on; final means nothing follows b. If b starts with an escape
// sequence, n is its length and its decoding is written to dec[:dn].
// Otherwise n is 0 and more reports whether the unit is undecided: b
// ends where more input could still complete an escape (never when
// final). The answer for a prefix of b is the answer for b, or more.
func parseEscape(b []byte, final bool, dec *[4]byte) (n, dn int, more bool) {
	if len(b) < 2 {
		return 0, 0, !final && len(b) == 1 && isStarter(b[0])
	}
	switch b[0] {
	case '%':
		if b[1] == 'u' {
			return parseUnicode(b, final, dec)
		}
		return parseByteEscape(b, 1, final, dec)
	case '\\':
		switch c := b[1]; c {
		case 'u':
			if len(b) > 2 && b[2] == '{' {
				return parseBraced(b, final, dec)
			}
			return parseUnicode(b, final, dec)
		case 'U':
			return parseLongUnicode(b, final, dec)
		case 'x':
			return parseByteEscape(b, 2, final, dec)
		default:
			if v := simpleEscapes[c]; v != 0 {
				dec[0] = v
				return 2, 1, false
			}
		}
	case '&':
		if b[1] == '#' {
			return parseNumericRef(b, final, dec)
		}
		return parseNamedRef(b, final, dec)
	}
	return 0, 0, false
}

// simpleEscapes are the JSON/JS escapes of one letter, by that letter.
var simpleEscapes = [256]byte{'"': '"', '\'': '\'', '\\': '\\', '/': '/', 'b': '\b', 'f': '\f', 'n': '\n', 'r': '\r', 't': '\t'}

// parseByteEscape is parseEscape for %HH (i == 1) and \xHH (i == 2).
func parseByteEscape(b []byte, i int, final bool, dec *[4]byte) (n, dn int, more bool) {
	if len(b) < i+2 {
		return 0, 0, !final && allHex(b[i:])
	}
	v, ok := hexByte(b[i], b[i+1])
	if !ok {
		return 0, 0, false
	}
	dec[0] = v
	return i + 2, 1, false
}

// parseUnicode is parseEscape for b starting with \u or %u: \uHHHH,
// not a surrogate, or a high surrogate and then \u and a low one (%u
// alike).
func parseUnicode(b []byte, final bool, dec *[4]byte) (n, dn int, more bool) {
	cp, ok, short := hex4(b[2:])
	if !ok {
		// Digits to come may complete it, unless those there are of a
		// low surrogate (\uDC.. to \uDF..) already.
		lowSoFar := len(b) >= 4 && b[2]|0x20 == 'd' && isHighNibbleLow(b[3])
		return 0, 0, !final && short && !lowSoFar
	}
	switch {
	case isLowSurrogate(cp):
		return 0, 0, false
	case !isHighSurrogate(cp):
		return 6, utf8.EncodeRune(dec[:], cp), false
	}
	// A high surrogate is an escape only as the first of a pair: the
	// rest must read \uDC00 to \uDFFF.
	rest := b[6:]
	for i := range 6 {
		if i == len(rest) {
			return 0, 0, !final
		}
		c := rest[i]
		var ok bool
		switch i {
		case 0:
			ok = c == b[0]
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
			return 0, 0, false
		}
	}
	lo, _, _ := hex4(rest[2:])
	r := 0x10000 + (cp-0xD800)<<10 + (lo - 0xDC00)
	return 12, utf8.EncodeRune(dec[:], r), false
}

// parseNumericRef is parseEscape for b starting with &#: &#DDD or
// &#xHHH, at most maxEntityDigits digits, at most U+10FFFF, not a
// surrogate, and then ';' or anything but a digit.
func parseNumericRef(b []byte, final bool, dec *[4]byte) (n, dn int, more bool) {
	i, base := 2, 10
	if len(b) > 2 && (b[2] == 'x' || b[2] == 'X') {
		i, base = 3, 16
	}
	start := i
	v := 0 // an int, and kept from overflowing: past utf8.MaxRune it only grows
	for ; i < len(b) && i-start <= maxEntityDigits; i++ {
		d, ok := digitValue(b[i], base)
		if !ok {
			break
		}
		if v <= utf8.MaxRune {
			v = v*base + d
		}
	}
	digits := i - start
	valid := digits > 0 && digits <= maxEntityDigits && v <= utf8.MaxRune && !isSurrogate(rune(v))
	switch {
	case digits > maxEntityDigits:
		return 0, 0, false
	case i == len(b) && !final:
		// Digits, a ';' or another byte to come decide it. More digits
		// only make the value larger (or keep it 0); after the last one
		// allowed none may come.
		return 0, 0, v <= utf8.MaxRune && (digits < maxEntityDigits || !isSurrogate(rune(v)))
	case !valid:
		return 0, 0, false
	case i < len(b) && b[i] == ';':
		i++
	}
	return i, utf8.EncodeRune(dec[:], rune(v)), false
}

// parseLongUnicode is parseEscape for b starting with \U: eight hex
// digits, at most U+10FFFF, not a surrogate.
func parseLongUnicode(b []byte, final bool, dec *[4]byte) (n, dn int, more bool) {
	v, k := 0, 0
	for ; k < 8 && 2+k < len(b); k++ {
		d, ok := digitValue(b[2+k], 16)
		if !ok {
			return 0, 0, false
		}
		v = v<<4 | d
	}
	if k < 8 {
		return 0, 0, !final && canReach(v, 8-k)
	}
	if v > utf8.MaxRune || isSurrogate(rune(v)) {
		return 0, 0, false
	}
	return 10, utf8.EncodeRune(dec[:], rune(v)), false
}

// parseBraced is parseEscape for b starting with \u{: one to six hex
// digits and '}', at most U+10FFFF, not a surrogate.
func parseBraced(b []byte, final bool, dec *[4]byte) (n, dn int, more bool) {
	v, i := 0, 3
	for ; i < len(b) && i-3 < 6; i++ {
		d, ok := digitValue(b[i], 16)
		if !ok {
			break
		}
		v = v<<4 | d
	}
	digits := i - 3
	if i == len(b) {
		// Digits or the '}' to come may complete it.
		return 0, 0, !final && (digits == 0 || v <= utf8.MaxRune && (!isSurrogate(rune(v)) || digits < 6 && v<<4 <= utf8.MaxRune))
	}
	if digits == 0 || b[i] != '}' || v > utf8.MaxRune || isSurrogate(rune(v)) {
		return 0, 0, false
	}
	return i + 1, utf8.EncodeRune(dec[:], rune(v)), false
}

// canReach reports whether r more hex digits after the value v can make
// a code point that is no surrogate.
func canReach(v, r int) bool {
	lo, hi := v<<(4*r), v<<(4*r)|(1<<(4*r)-1)
	return lo <= utf8.MaxRune && !(lo >= 0xD800 && hi <= 0xDFFF)
}

// parseNamedRef is parseEscape for &name; with a name of htmlEntities.
func parseNamedRef(b []byte, final bool, dec *[4]byte) (n, dn int, more bool) {
	for i := 2; i < len(b) && i <= maxEntityName+1; i++ {
		if b[i] == ';' {
			if v, ok := entity(b[1:i]); ok {
				return i + 1, copy(dec[:], v), false
			}
			return 0, 0, false
		}
	}
	// No ';' yet: a name to come may complete it.
	return 0, 0, !final && entityPrefix(b[1:])
}

// entity returns the value of the named reference name.
func entity(name []byte) (string, bool) {
	for _, e := range htmlEntities {
		if string(name) == e.name {
			return e.value, true
		}
	}
	return "", false
}

// entityPrefix reports whether some entity's name begins with p.
func entityPrefix(p []byte) bool {
	for _, e := range htmlEntities {
		if len(p) <= len(e.name) && string(p) == e.name[:len(p)] {
			return true
		}
	}
	return false
}

// view is the decoding view of a prefix of the input, with the escapes
// it decoded, to map positions back to the input.
type view struct {
	esc []escape
	dec []byte
}

// parse parses b, the input from a unit boundary on, greedily into
// v.esc; final means nothing follows b. It returns the length of the
// decided prefix: all of b if final, else up to the start of a unit
// that more input could still make an escape.
func (v *view) parse(b []byte, final bool) int {
	esc := v.esc[:0]
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
		var dec [4]byte
		n, dn, more := parseEscape(b[at:], final, &dec)
		if n == 0 {
			if more {
				v.esc = esc
				return at
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
	v.esc = esc
	return len(b)
}

// indexFrom is the index of c in b at or after i, or len(b).
func indexFrom(b []byte, i int, c byte) int {
	if k := bytes.IndexByte(b[i:], c); k >= 0 {
		return i + k
	}
	return len(b)
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
		i = e.end()
	}
	o += copy(dec[o:], in[i:])
	v.dec = dec[:o]
}

// of parses all of b (nothing follows it) and returns its decoding
// view: b itself if it holds no escape, else v.dec.
func (v *view) of(b []byte) []byte {
	if v.parse(b, true); len(v.esc) == 0 {
		return b
	}
	v.build(b)
	return v.dec
}

// end is the input position just past e.
func (e *escape) end() int { return e.in + int(e.n) }

// escIn and escOut are where an escape is in the input and in the view.
func escIn(e *escape) int  { return e.in }
func escOut(e *escape) int { return e.out }

// last returns the index of the last escape e with pos(e) <= x, or -1;
// pos is escIn or escOut (both increase along v.esc).
func (v *view) last(x int, pos func(*escape) int) int {
	return sort.Search(len(v.esc), func(k int) bool { return pos(&v.esc[k]) > x }) - 1
}

// holding returns the escape whose input holds byte i, or nil.
func (v *view) holding(i int) *escape {
	if k := v.last(i, escIn); k >= 0 && i < v.esc[k].end() {
		return &v.esc[k]
	}
	return nil
}

// inStart maps view position d to the input position of the start of
// the unit that produced it.
func (v *view) inStart(d int) int {
	k := v.last(d, escOut)
	if k < 0 {
		return d
	}
	e := &v.esc[k]
	if d < e.out+int(e.dn) {
		return e.in
	}
	return e.end() + d - (e.out + int(e.dn))
}

// inEnd maps the exclusive view end d (> 0) to the input position just
// past the unit that produced byte d-1.
func (v *view) inEnd(d int) int {
	return v.unitEnd(v.inStart(d-1) + 1)
}

// outPos maps input position i, a unit boundary, to the view.
func (v *view) outPos(i int) int {
	k := v.last(i-1, escIn)
	if k < 0 {
		return i
	}
	e := &v.esc[k]
	return e.out + int(e.dn) + i - e.end()
}

// boundaryFrom moves input position i forward to a unit boundary.
func (v *view) boundaryFrom(i int) int {
	if e := v.holding(i); e != nil && i > e.in {
		return e.end()
	}
	return i
}

// unitStart moves input position i back to the start of the unit
// containing it.
func (v *view) unitStart(i int) int {
	if e := v.holding(i); e != nil {
		return e.in
	}
	return i
}

// unitEnd moves the exclusive input end e forward to the end of the
// unit containing byte e-1.
func (v *view) unitEnd(e int) int {
	if x := v.holding(e - 1); x != nil {
		return x.end()
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

// hex4 reads the four hex digits at the start of b; short reports that
// b ends before them, all hex so far.
func hex4(b []byte) (r rune, ok, short bool) {
	if len(b) < 4 {
		return 0, false, allHex(b)
	}
	hi, ok1 := hexByte(b[0], b[1])
	lo, ok2 := hexByte(b[2], b[3])
	return rune(hi)<<8 | rune(lo), ok1 && ok2, false
}

func isHighSurrogate(r rune) bool { return r >= 0xD800 && r < 0xDC00 }
func isLowSurrogate(r rune) bool  { return r >= 0xDC00 && r < 0xE000 }
func isSurrogate(r rune) bool     { return r >= 0xD800 && r < 0xE000 }
