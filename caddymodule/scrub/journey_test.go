package scrub

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"strings"
	"testing"
	"testing/iotest"
	"unicode/utf16"
)

// The journeys: an upstream that got the secret echoes it back in the
// encodings real frameworks produce. The encodings are computed here,
// with the escaping rules of each framework written out.

const journeySecret = "AKIAx/+!wJalrXUtnFEMI/K7MDENG+bPxRfiCY="

// A second secret with the characters HTML, query and JSON escapers
// treat specially, a space, and a non-ASCII letter.
const journeySecret2 = `p@ss w<rd>&"x'é/+1`

func asciiUpper(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'a' && c <= 'z' {
			b[i] = c - 32
		}
	}
	return string(b)
}

// percentEncode escapes every byte of s outside keep as %XX (upper- or
// lower-case hex), and ' ' as '+' if plus.
func percentEncode(s, keep string, lower, plus bool) string {
	digits := "0123456789ABCDEF"
	if lower {
		digits = "0123456789abcdef"
	}
	var b strings.Builder
	for i := range len(s) {
		c := s[i]
		switch {
		case c == ' ' && plus:
			b.WriteByte('+')
		case c < 0x80 && (c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte(keep, c) >= 0):
			b.WriteByte(c)
		default:
			b.WriteByte('%')
			b.WriteByte(digits[c>>4])
			b.WriteByte(digits[c&15])
		}
	}
	return b.String()
}

// Python's urllib.parse.quote keeps letters, digits and "_.-~" plus its
// safe argument ("/" by default); quote_plus has safe="" and writes a
// space as "+".
func pyQuote(s string) string     { return percentEncode(s, "_.-~/", false, false) }
func pyQuotePlus(s string) string { return percentEncode(s, "_.-~", false, true) }

// JavaScript's encodeURIComponent keeps letters, digits and "-_.!~*'()".
func jsEncodeURIComponent(s string) string { return percentEncode(s, "-_.!~*'()", false, false) }

// .NET's Uri.EscapeDataString keeps RFC 3986's unreserved "-_.~";
// HttpUtility.UrlEncode keeps "-_.!*()", writes lower-case hex and a
// space as "+".
func dotnetEscapeDataString(s string) string { return percentEncode(s, "-_.~", false, false) }
func dotnetUrlEncode(s string) string        { return percentEncode(s, "-_.!*()", true, true) }

// allPercent percent-escapes every byte.
func allPercent(s string) string {
	var b strings.Builder
	for i := range len(s) {
		fmt.Fprintf(&b, "%%%02X", s[i])
	}
	return b.String()
}

// jsonAllUnicode writes every UTF-16 unit of s as \uXXXX (non-BMP
// letters as surrogate pairs), as some JSON encoders do for
// non-ASCII and a paranoid one for everything.
func jsonAllUnicode(s string) string {
	var b strings.Builder
	for _, u := range utf16.Encode([]rune(s)) {
		fmt.Fprintf(&b, `\u%04x`, u)
	}
	return b.String()
}

// phpJSONEncode is PHP's json_encode of a string's content: '"' and '\'
// backslashed, '/' written as "\/", non-ASCII as \uXXXX (lower-case hex).
func phpJSONEncode(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r == '"' || r == '\\' || r == '/':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r >= 0x80:
			for _, u := range utf16.Encode([]rune{r}) {
				fmt.Fprintf(&b, `\u%04x`, u)
			}
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// htmlNumeric writes every character as a numeric reference.
func htmlNumeric(s string, hexDigits bool) string {
	var b strings.Builder
	for _, r := range s {
		if hexDigits {
			fmt.Fprintf(&b, "&#x%X;", r)
		} else {
			fmt.Fprintf(&b, "&#%d;", r)
		}
	}
	return b.String()
}

// Python's html.escape(s) (quote=True) replaces & < > " ' with &amp;
// &lt; &gt; &quot; &#x27;.
func pyHTMLEscape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&quot;", "'", "&#x27;").Replace(s)
}

func utf16Bytes(s string, big bool) string {
	var b []byte
	for _, u := range utf16.Encode([]rune(s)) {
		if big {
			b = binary.BigEndian.AppendUint16(b, u)
		} else {
			b = binary.LittleEndian.AppendUint16(b, u)
		}
	}
	return string(b)
}

// journeyRedactor is the redactor the proxy builds after injecting
// both secrets, with their placeholders.
func journeyRedactor() *Redactor {
	var set SecretSet
	set.Add(journeySecret, ph)
	set.Add(journeySecret2, ph2)
	return (&Cache{}).Redactor(&set)
}

const ph2 = "agvph_fedcba9876543210fedcba9876543210"

// checkJourney asserts that r turns in into want, as a string and as a
// stream in any chunking.
func checkJourney(t *testing.T, r *Redactor, in, want string) {
	t.Helper()
	if got := r.String(in); got != want {
		t.Errorf("String(%q)\n = %q\nwant %q", in, got, want)
		return
	}
	checkReader(t, r, in, want, uint64(len(in)))
}

func TestJourneys(t *testing.T) {
	r := journeyRedactor()
	b64 := func(enc *base64.Encoding, s string) string { return enc.EncodeToString([]byte(s)) }
	encodings := []struct {
		name string
		enc  func(string) string
	}{
		{"raw", func(s string) string { return s }},
		{"upper-cased", asciiUpper}, // case folding is ASCII's: É is not é
		{"lower-cased", strings.ToLower},
		{"python quote", pyQuote},
		{"python quote_plus", pyQuotePlus},
		{"js encodeURIComponent", jsEncodeURIComponent},
		{".NET Uri.EscapeDataString", dotnetEscapeDataString},
		{".NET HttpUtility.UrlEncode", dotnetUrlEncode},
		{"every byte percent-escaped", allPercent},
		{"every byte percent-escaped, lower hex", func(s string) string { return strings.ToLower(allPercent(s)) }},
		{"JSON, every char \\u-escaped", jsonAllUnicode},
		{"PHP json_encode", phpJSONEncode},
		{"HTML decimal entities", func(s string) string { return htmlNumeric(s, false) }},
		{"HTML hex entities", func(s string) string { return htmlNumeric(s, true) }},
		{"python html.escape", pyHTMLEscape},
		{"base64 std", func(s string) string { return b64(base64.StdEncoding, s) }},
		{"base64 std unpadded", func(s string) string { return b64(base64.RawStdEncoding, s) }},
		{"base64 url", func(s string) string { return b64(base64.URLEncoding, s) }},
		{"base64 url unpadded", func(s string) string { return b64(base64.RawURLEncoding, s) }},
		{"hex", func(s string) string { return hex.EncodeToString([]byte(s)) }},
		{"HEX", func(s string) string { return strings.ToUpper(hex.EncodeToString([]byte(s))) }},
		{"UTF-16LE", func(s string) string { return utf16Bytes(s, false) }},
		{"UTF-16BE", func(s string) string { return utf16Bytes(s, true) }},
	}
	for _, secret := range []struct{ value, ph string }{{journeySecret, ph}, {journeySecret2, ph2}} {
		for _, e := range encodings {
			t.Run(e.name+"/"+secret.value[:4], func(t *testing.T) {
				form := e.enc(secret.value)
				checkJourney(t, r, "echo: "+form+" (end)", "echo: "+secret.ph+" (end)")
				checkJourney(t, r, `{"you sent":"`+form+`","ok":true}`, `{"you sent":"`+secret.ph+`","ok":true}`)
			})
		}
	}
}

// Inside a larger base64 blob ("prefix" + secret + "suffix" encoded),
// the characters that depend on the secret's bits alone are replaced;
// the ones mixing in the neighbours' bits stay.
func TestJourneyBase64Blob(t *testing.T) {
	r := journeyRedactor()
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding} {
		for k := 0; k <= 5; k++ {
			prefix := "prefix"[:k]
			blob := enc.EncodeToString([]byte(prefix + journeySecret + "suffix"))
			first := (8*k + 5) / 6                   // first character with only secret bits
			last := (8*k + 8*len(journeySecret)) / 6 // past the last such
			t.Run(fmt.Sprint(k), func(t *testing.T) {
				checkJourney(t, r, "blob="+blob+";", "blob="+blob[:first]+ph+blob[last:]+";")
			})
		}
	}
}

// Adversarial upstreams.

// "%4" right before a raw secret starting with "1" hides it from the
// decoding view ("%41" is "A"); the raw view still has it, and the
// replacement takes the whole escape.
func TestPercentBeforeRawSecret(t *testing.T) {
	var set SecretSet
	set.Add("1abcdefgh-secret", ph)
	r := (&Cache{}).Redactor(&set)
	checkJourney(t, r, "x%41abcdefgh-secret y", "x"+ph+" y")
	// %31 is "1": the match is in the decoding view, and the
	// placeholder would complete the "%4" before it ("%4a"): masked.
	checkJourney(t, r, "x%4%31abcdefgh-secret y", "x%4"+r.mask+" y")
}

// However the stream is cut, the output is the same.
func TestSecretSplitAcrossReads(t *testing.T) {
	r := journeyRedactor()
	for _, in := range []string{
		"a " + journeySecret + " b",
		"a " + pyQuote(journeySecret) + " b " + jsonAllUnicode(journeySecret2),
		"a " + htmlNumeric(journeySecret2, true) + base64.StdEncoding.EncodeToString([]byte(journeySecret)),
	} {
		want := r.String(in)
		if want == in {
			t.Fatalf("nothing replaced in %q", in)
		}
		for k := 0; k <= len(in); k++ {
			for j := k; j <= len(in); j += 7 {
				src := io.MultiReader(iotest.OneByteReader(strings.NewReader(in[:k])), strings.NewReader(in[k:j]), strings.NewReader(in[j:]))
				if got, err := io.ReadAll(r.Reader(src)); err != nil || string(got) != want {
					t.Fatalf("cut at %d, %d: %q, %v; want %q", k, j, got, err, want)
				}
			}
		}
	}
}

// Secrets that are prefixes, suffixes or overlaps of each other.
func TestOverlappingSecrets(t *testing.T) {
	r := redactorOf(map[string]string{
		"abcdefgh12": "[LONG]",
		"abcdefgh":   "[PREFIX]",
		"efgh12":     "[SUFFIX]",
		"h12xyzzy":   "[OVERLAP]",
	})
	for in, want := range map[string]string{
		"abcdefgh12":          "[LONG]",
		"abcdefgh1":           "[PREFIX]1",
		"abcdefgh12xyzzy":     "[LONG]", // one span: the three overlap
		"xefgh12 abcdefgh":    "x[SUFFIX] [PREFIX]",
		"abcd%65fgh12":        "[LONG]",
		"ABCDEFGH12XYZZY":     "[LONG]",
		"abcdefghabcdefgh12.": "[PREFIX][LONG].",
	} {
		checkJourney(t, r, in, want)
		if ref := referenceRedact(r, in); ref != want {
			t.Errorf("reference(%q) = %q", in, ref)
		}
	}
}

// A secret that itself looks escaped is matched as it is, and in its
// escaped forms; its decoding is a different string.
func TestSecretWithEscapeLikeText(t *testing.T) {
	const secret = `ab%41cd\u0041ef&amp;gh`
	var set SecretSet
	set.Add(secret, ph)
	r := (&Cache{}).Redactor(&set)
	for _, form := range []string{
		secret,
		pyQuote(secret),                       // %2541 ... %5Cu0041 ... %26amp%3B
		strings.ReplaceAll(secret, `\`, `\\`), // in JSON
		pyHTMLEscape(secret),                  // &amp;amp;
	} {
		checkJourney(t, r, "<"+form+">", "<"+ph+">")
	}
	checkJourney(t, r, "abAcdAef&gh", "abAcdAef&gh")
}

// A stand-in never forms a secret with its neighbours: where it would,
// that occurrence is masked, and only that one.
func TestStandInNeighbours(t *testing.T) {
	const secret = "Zk3+secret/value-0001"
	var set SecretSet
	set.Add(secret, ph)           // ph is agvph_0123...cdef
	set.Add("qwertyuiopa", "[Q]") // ends with ph's first byte
	set.Add("fxyzxyzxyz", "[F]")  // starts with ph's last byte
	r := (&Cache{}).Redactor(&set)
	mask := r.mask
	for in, want := range map[string]string{
		"<" + secret + ">":                   "<" + ph + ">",
		"qwertyuiop" + secret:                "qwertyuiop" + mask,
		"qwertyuio" + secret:                 "qwertyuio" + ph,
		"qwertyuio%70" + secret:              "qwertyuio%70" + mask, // joined in the decoding view
		secret + "xyzxyzxyz":                 mask + "xyzxyzxyz",
		secret + "xyzxyzxy!":                 ph + "xyzxyzxy!",
		secret + "xyzxyz%78yz":               mask + "xyzxyz%78yz",
		"%4" + secret + " %4Qx":              "%4" + mask + " %4Qx", // "%4a" would decode to "J"
		"qwertyuiop" + secret + " " + secret: "qwertyuiop" + mask + " " + ph,
	} {
		checkJourney(t, r, in, want)
		if p := refLeaks(r.m.pats, r.String(in)); p != "" {
			t.Errorf("output of %q holds %q", in, p)
		}
	}

	// A stand-in holding a pattern is never used.
	var set2 SecretSet
	set2.Add(secret, ph)
	set2.Add("ph_0123456789ab", Redacted)
	r2 := (&Cache{}).Redactor(&set2)
	checkJourney(t, r2, secret+" ph_0123456789ab", r2.mask+" "+Redacted)
}
