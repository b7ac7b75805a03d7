package scrub

import (
	"encoding/json"
	"html"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unicode/utf16"
)

// The reference parse: the decoding view's contract written the obvious
// way, independently of decode.go. It matches each kind of escape with a
// regular expression, takes the values of JSON escapes from
// encoding/json and of entities from package html, and keeps the unit
// of every byte.

// refUnit is one unit of the reference parse: input [start, end)
// decodes to dec.
type refUnit struct {
	start, end int
	dec        string
}

var (
	refPercent   = regexp.MustCompile(`^%([0-9A-Fa-f]{2})`)
	refPair      = regexp.MustCompile(`^\\u([0-9A-Fa-f]{4})\\u([0-9A-Fa-f]{4})`)
	refUnicode   = regexp.MustCompile(`^\\u([0-9A-Fa-f]{4})`)
	refPctPair   = regexp.MustCompile(`^%u([0-9A-Fa-f]{4})%u([0-9A-Fa-f]{4})`)
	refPctU      = regexp.MustCompile(`^%u([0-9A-Fa-f]{4})`)
	refLongU     = regexp.MustCompile(`^\\U([0-9A-Fa-f]{8})`)
	refBraced    = regexp.MustCompile(`^\\u\{([0-9A-Fa-f]{1,6})\}`)
	refHexByte   = regexp.MustCompile(`^\\x([0-9A-Fa-f]{2})`)
	refSimple    = regexp.MustCompile(`^\\["\\/bfnrt']`)
	refDecimal   = regexp.MustCompile(`^&#([0-9]{1,32})(;?)`)
	refHexEntity = regexp.MustCompile(`^&#[xX]([0-9A-Fa-f]{1,32})(;?)`)
	refNamed     = regexp.MustCompile(`^&([A-Za-z]+);`)
)

// refEntityNames are the named references the contract lists (the
// values come from package html).
var refEntityNames = strings.Fields(`amp lt gt quot apos sol plus equals excl num dollar percnt colon semi
	comma period lpar rpar ast commat lowbar quest lsqb rsqb lbrace rbrace verbar Hat grave tilde AMP LT GT QUOT
	midast UnderBar lbrack rbrack lcub rcub vert VerticalLine bsol DiacriticalGrave Tab NewLine`)

// refEscapeAt returns the length and value of the escape at the start
// of t, or 0.
func refEscapeAt(t string) (int, string) {
	if t == "" || !strings.ContainsRune(`%\&`, rune(t[0])) {
		return 0, "" // (only to save the regular expressions the time)
	}
	num := func(s string, base int) int64 {
		if len(strings.TrimLeft(s, "0")) > 8 {
			return 1 << 40 // beyond any code point
		}
		v, err := strconv.ParseInt(s, base, 64)
		if err != nil {
			panic(err)
		}
		return v
	}
	if m := refPercent.FindStringSubmatch(t); m != nil {
		return len(m[0]), string([]byte{byte(num(m[1], 16))})
	}
	for _, re := range [][2]*regexp.Regexp{{refPair, refUnicode}, {refPctPair, refPctU}} {
		if m := re[0].FindStringSubmatch(t); m != nil {
			if r := utf16.DecodeRune(rune(num(m[1], 16)), rune(num(m[2], 16))); r != '\uFFFD' {
				return len(m[0]), string(r)
			}
		}
		if m := re[1].FindStringSubmatch(t); m != nil {
			if v := num(m[1], 16); !utf16.IsSurrogate(rune(v)) {
				return len(m[0]), string(rune(v))
			}
		}
	}
	for _, re := range []*regexp.Regexp{refLongU, refBraced} {
		if m := re.FindStringSubmatch(t); m != nil {
			if v := num(m[1], 16); v <= 0x10FFFF && !utf16.IsSurrogate(rune(v)) {
				return len(m[0]), string(rune(v))
			}
		}
	}
	if m := refHexByte.FindStringSubmatch(t); m != nil {
		return len(m[0]), string([]byte{byte(num(m[1], 16))})
	}
	if m := refSimple.FindString(t); m == `\'` {
		return 2, "'" // Python, JS; not JSON
	} else if m != "" {
		var v string
		if err := json.Unmarshal([]byte(`"`+m+`"`), &v); err != nil {
			panic(err)
		}
		return 2, v
	}
	for _, re := range []*regexp.Regexp{refDecimal, refHexEntity} {
		if m := re.FindStringSubmatch(t); m != nil {
			base := 10
			if re == refHexEntity {
				base = 16
			}
			// Without the ';' the digits must end there: more than 32
			// is text.
			if m[2] == "" && len(t) > len(m[0]) && strings.ContainsRune("0123456789abcdefABCDEF"[:10+12*(base/16)], rune(t[len(m[0])])) {
				continue
			}
			if v := num(m[1], base); v <= 0x10FFFF && !utf16.IsSurrogate(rune(v)) {
				return len(m[0]), string(rune(v))
			}
		}
	}
	if m := refNamed.FindStringSubmatch(t); m != nil && slices.Contains(refEntityNames, m[1]) {
		return len(m[0]), html.UnescapeString(m[0])
	}
	return 0, ""
}

// refParse is the greedy parse of s.
func refParse(s string) []refUnit {
	var units []refUnit
	for i := 0; i < len(s); {
		if n, dec := refEscapeAt(s[i:]); n > 0 {
			units = append(units, refUnit{i, i + n, dec})
			i += n
			continue
		}
		units = append(units, refUnit{i, i + 1, s[i : i+1]})
		i++
	}
	return units
}

// refViews returns both views of s, each with the unit of every byte.
func refViews(s string) (units []refUnit, raw, dec string, rawUnit, decUnit []int) {
	units = refParse(s)
	var b strings.Builder
	for k, u := range units {
		for range u.end - u.start {
			rawUnit = append(rawUnit, k)
		}
		for range len(u.dec) {
			decUnit = append(decUnit, k)
		}
		b.WriteString(u.dec)
	}
	return units, s, b.String(), rawUnit, decUnit
}

func refFold(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'A' && c <= 'Z' {
			b[i] = c + 32
		} else if c == ' ' {
			b[i] = '+'
		}
	}
	return string(b)
}

func TestParseEscapes(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"plain", "plain"},
		{"%41%4a%4A %4 %4g %", "AJJ %4 %4g %"},
		{"%2541", "%41"}, // one level only
		{`\u0041\u00e9\uD83D\uDE00`, "A\u00e9\U0001F600"},
		{`\uD83D \uDE00 \uD83D\u0041`, `\uD83D \uDE00 \uD83DA`}, // lone surrogates are literal
		{`\x41\x4 \"\\\/\b\f\n\r\t \q \'`, "A\\x4 \"\\/\b\f\n\r\t \\q '"},
		{`\\u0041`, `\u0041`}, // an escaped backslash, then text
		{"&#65;&#x41;&#X41;&#0000065; &#65 &#; &#x;", "AAAA A &#; &#x;"},
		{"&#1114111;&#1114112;&#xD800;&#x000000041;", "\U0010FFFF&#1114112;&#xD800;A"},
		{"&#65&#75&#x41x&#x4g&#65;;", "AKAx\x04gA;"},
		{"&#x" + strings.Repeat("0", 30) + "41;&#" + strings.Repeat("0", 30) + "65;", "AA"},
		{"&#" + strings.Repeat("0", 33) + "65;", "&#" + strings.Repeat("0", 33) + "65;"},
		{`%u0041%u00e9%uD83D%uDE00%U0041%u004 %uD83D`, "A\u00e9\U0001F600%U0041%u004 %uD83D"},
		{`\U00000041\U0001F600\U00110000\U0000D800\U0000004`, "A\U0001F600\\U00110000\\U0000D800\\U0000004"},
		{`\u{41}\u{0041}\u{1F600}\u{10FFFF}\u{110000}\u{D800}\u{}\u{0000041}\u{41`, "AA\U0001F600\U0010FFFF\\u{110000}\\u{D800}\\u{}\\u{0000041}\\u{41"},
		{`\'it\'s`, "'it's"},
		{"&midast;&UnderBar;&lbrack;&rbrack;&lcub;&rcub;&vert;&VerticalLine;&bsol;&DiacriticalGrave;&Tab;&NewLine;", "*_[]{}||\\`\t\n"},
		{"&amp;&AMP;&lt;&gt;&quot;&apos;&Hat;&hat;&tilde;&amp", "&&<>\"'^&hat;\u02dc&amp"},
		{"&sol;&plus;&equals;&excl;&num;&dollar;&percnt;&colon;&semi;&comma;&period;", "/+=!#$%:;,."},
		{"&lpar;&rpar;&ast;&commat;&lowbar;&quest;&lsqb;&rsqb;&lbrace;&rbrace;&verbar;&grave;", "()*@_?[]{}|`"},
		{"&&amp;%%41\\\\", "&&%A\\"},
	} {
		var v view
		if dec := v.of([]byte(tc.in)); string(dec) != tc.want {
			t.Errorf("view of %q = %q, want %q", tc.in, dec, tc.want)
		}
		if _, _, dec, _, _ := refViews(tc.in); dec != tc.want {
			t.Errorf("reference view of %q = %q, want %q", tc.in, dec, tc.want)
		}
	}
}

// The entity table has each name once, decoded as package html does,
// and maxEntityName is its longest.
func TestEntityTable(t *testing.T) {
	longest := 0
	seen := map[string]bool{}
	for _, e := range htmlEntities {
		if seen[e.name] {
			t.Errorf("&%s; twice", e.name)
		}
		seen[e.name] = true
		if v := html.UnescapeString("&" + e.name + ";"); v != e.value {
			t.Errorf("&%s; is %q, html has %q", e.name, e.value, v)
		}
		longest = max(longest, len(e.name))
	}
	if longest != maxEntityName {
		t.Errorf("longest name %d, maxEntityName %d", longest, maxEntityName)
	}
}

// A parse that more input may continue stops at an escape it could
// complete, and nowhere else.
func TestParseEscapesUndecided(t *testing.T) {
	for in, want := range map[string]int{
		"ab%": 2, "ab%4": 2, "ab%4g": 5, `x\`: 1, `x\u00`: 1, `x\uD83D`: 1, `x\uD83D\uDC`: 1,
		`x\uD83D\u0`: 7, `x\uDC00`: 7, `x\x4`: 1, "x&": 1, "x&#12": 1, "x&#x10FFFF": 1, "x&#x110000": 10,
		"x&am": 1, "x&amp": 1, "x&ampx": 6, "x&Ha": 1, "x&ha": 4, "x&#00000065": 1, "x&#000000065": 1, "x&#65x": 6,
		`x\uDC`: 5, `x\uD`: 1, `x\uD83D\uD8`: 7, `x\uD83D\`: 1, `x\uD83D\x`: 7, "x&#xD800": 1, "x&#xD800;": 9,
		"x&#x0000D800": 1, "x&#x0000D7FF": 1, "x&#x" + strings.Repeat("0", 28) + "D800": 36,
		"x%u": 1, "x%u00": 1, "x%uD83D%u": 1, "x%uDC": 5, `x\U0000`: 1, `x\U0011`: 7, `x\U0000D8`: 9, `x\u{`: 1, `x\u{10`: 1,
		`x\u{110000`: 10, `x\u{D800`: 1, `x\u{10FFFF`: 1, `x\u{}`: 5, "x&DiacriticalGrav": 1, "x&#x10FFFF1": 11, "x&#": 1, "x&#x": 1, "x&#;": 4, "x&;": 3, "x&equals": 1, "x&equalsx": 9,
		"x%": 1, "x%g": 3, `x\q`: 3,
	} {
		var v view
		if p := v.parse([]byte(in), false); p != want {
			t.Errorf("parse of %q decided %d, want %d", in, p, want)
		}
	}
}

// FuzzDecode checks the decoding view against the reference parse, and
// that a parse stopped early (more input to come) decided only what the
// whole input decides the same way.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		`%41%4g%4`, `\u0041\uD83D\uDE00\uD83D\u0041\uDE00`, `\x41\x4\"\\\/\b\f\n\r\t\q`,
		`&#65;&#x41;&#X41;&#xD800;&#1114112;&#000000065;&#0000000065;`, `&amp;&AMP;&Hat;&hat;&tilde;&lbrace&lbrace;`,
		`&#65&#x41g&#x000000000000041;&#123456789`, `%u0041%uD83D%uDE00%uD83D \U0001F600\U00110000 \u{41}\u{1F600}\u{D800} \'`,
		`&UnderBar;&bsol;&lcub;&rcub;&lbrack;&rbrack;&vert;&midast;&Tab;&NewLine;&lowbar;&DiacriticalGrave;`,
		`%%41\\u0041&&amp;`, "plain text",
	} {
		f.Add(s, 3)
	}
	f.Fuzz(func(t *testing.T, s string, cut int) {
		units, _, dec, _, decUnit := refViews(s)
		var v view
		if p := v.parse([]byte(s), true); p != len(s) {
			t.Fatalf("final parse decided %d of %d", p, len(s))
		}
		if got := v.of([]byte(s)); string(got) != dec {
			t.Fatalf("view of %q = %q, want %q", s, got, dec)
		}
		for d := range len(dec) {
			u := units[decUnit[d]]
			if v.inStart(d) != u.start || v.inEnd(d+1) != u.end {
				t.Fatalf("%q: view byte %d maps to [%d,%d), want [%d,%d)", s, d, v.inStart(d), v.inEnd(d+1), u.start, u.end)
			}
		}
		for _, u := range units {
			for i := u.start; i < u.end; i++ {
				if v.unitStart(i) != u.start || v.unitEnd(i+1) != u.end {
					t.Fatalf("%q: input byte %d in unit [%d,%d), want [%d,%d)", s, i, v.unitStart(i), v.unitEnd(i+1), u.start, u.end)
				}
			}
		}

		// parseEscape of a prefix of the input from any byte on answers
		// as for all of it, or that more is needed; and within
		// maxEscape bytes it has decided, within the escape's own bytes
		// unless it is a numeric reference without the ';' (the byte
		// after it tells that its digits end).
		for i := range len(s) {
			var dec, pdec [4]byte
			n, dn, _ := parseEscape([]byte(s[i:]), true, &dec)
			decided := n
			if n > 0 && strings.HasPrefix(s[i:], "&#") && s[i+n-1] != ';' {
				decided++
			}
			for j := i + 1; j <= len(s) && j <= i+maxEscape; j++ {
				pn, pdn, more := parseEscape([]byte(s[i:j]), false, &pdec)
				switch {
				case more && (pn != 0 || n > 0 && j-i >= decided || j-i == maxEscape):
					t.Fatalf("%q: parseEscape(%q) wants more, all of it gives %d", s, s[i:j], n)
				case !more && j-i < n:
					t.Fatalf("%q: parseEscape(%q) decided %d, all of it gives %d", s, s[i:j], pn, n)
				case !more && (pn != n || string(pdec[:pdn]) != string(dec[:dn])):
					t.Fatalf("%q: parseEscape(%q) = %d %q, all of it %d %q", s, s[i:j], pn, pdec[:pdn], n, dec[:dn])
				}
			}
		}

		// A prefix parsed as if more were to come.
		if len(s) == 0 {
			return
		}
		k := int(uint(cut) % uint(len(s)+1))
		var pv view
		p := pv.parse([]byte(s[:k]), false)
		esc := pv.esc
		if p < k-(maxEscape-1) {
			t.Fatalf("%q[:%d]: decided only %d", s, k, p)
		}
		// Up to p the units are those of the whole input, and p starts one.
		n := 0
		for _, u := range units {
			if u.start >= p {
				if u.start != p {
					t.Fatalf("%q[:%d]: decided %d, inside a unit", s, k, p)
				}
				break
			}
			if u.end > p {
				t.Fatalf("%q[:%d]: decided %d, inside unit %v", s, k, p, u)
			}
			if u.end-u.start > 1 {
				if n >= len(esc) || esc[n].in != u.start || int(esc[n].n) != u.end-u.start {
					t.Fatalf("%q[:%d]: escape %d differs from unit %v", s, k, n, u)
				}
				n++
			}
		}
		if n != len(esc) {
			t.Fatalf("%q[:%d]: %d escapes, want %d", s, k, len(esc), n)
		}
	})
}
