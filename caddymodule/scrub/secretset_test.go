package scrub

import (
	"fmt"
	"strings"
	"testing"
)

const ph = "agvph_0123456789abcdef0123456789abcdef"

// Every registered form of a secret is replaced in what the agent sees.
func TestSecretSetForms(t *testing.T) {
	var s SecretSet
	if !s.Empty() || (&Cache{}).Redactor(&s) != nil {
		t.Fatal("an empty set builds a redactor")
	}
	secret := `p@ss/w<rd>&"x`
	s.Add(secret, ph)
	s.AddWritten("YmxvYg==") // a Basic blob the proxy wrote
	s.AddWritten(secret)     // already known: keeps its placeholder
	red := (&Cache{}).Redactor(&s)
	for _, form := range []string{
		secret,
		"p@ss%2Fw%3Crd%3E&%22x",         // url.PathEscape
		"p%40ss%2Fw%3Crd%3E%26%22x",     // url.QueryEscape
		`p@ss/w<rd>&\"x`,                // JSON
		`p@ss/w\u003crd\u003e\u0026\"x`, // JSON, HTML-safe
	} {
		if got := red.String("echo " + form + " end"); got != "echo "+ph+" end" {
			t.Errorf("form %q became %q", form, got)
		}
	}
	if got := red.String("Basic YmxvYg=="); got != "Basic "+Redacted {
		t.Errorf("written form became %q", got)
	}
}

func TestCacheReusesAndSeparatesSets(t *testing.T) {
	var c Cache
	var a1, a2, b SecretSet
	a1.Add("secret-one", ph)
	a2.Add("secret-one", ph)
	b.Add("secret-two", ph)
	if c.Redactor(&a1) != c.Redactor(&a2) {
		t.Error("equal sets built two redactors")
	}
	rb := c.Redactor(&b)
	if strings.Contains(rb.String("secret-two"), "secret-two") || rb.String("secret-one") != "secret-one" {
		t.Error("a cached redactor of another set was returned")
	}
	// The same bytes split differently between a form and its
	// stand-in must not share a cache entry (no separator ambiguity).
	var x, y SecretSet
	x.Add("secret-a", "agvph_b"+ph[7:])
	y.Add("secret-ag", "vph_b"+ph[7:])
	if c.Redactor(&x) == c.Redactor(&y) {
		t.Error("different sets share a redactor")
	}
}

// HTTP trims header values, so a value with blanks at its ends is
// echoed trimmed: that form is secret too.
func TestSecretSetTrimmedForm(t *testing.T) {
	var s SecretSet
	s.Add(" sk-live-ABC\t", ph)
	red := (&Cache{}).Redactor(&s)
	if got := red.String(`you sent "sk-live-ABC"`); got != `you sent "`+ph+`"` {
		t.Errorf("trimmed form became %q", got)
	}
}

// A cached set costs no escaping: adding is only recording.
func TestCachedSetDoesNotEscape(t *testing.T) {
	var c Cache
	build := func() *SecretSet {
		var s SecretSet
		s.Add("secret-value-0123", ph)
		s.AddWritten("c2VjcmV0")
		return &s
	}
	c.Redactor(build())
	allocs := testing.AllocsPerRun(100, func() { c.Redactor(build()) })
	if allocs > 4 {
		t.Errorf("a cached set allocates %v times per request", allocs)
	}
}

// The derived forms: encodings for a secret of 8 bytes or more, none
// for a shorter one (its encodings are short enough to occur by
// chance), and the view of a JSON or HTML escaping for a secret that
// looks escaped itself.
func TestSecretSetDerivedForms(t *testing.T) {
	var s SecretSet
	s.Add("sk-live-\xff", ph)      // 9 bytes, not UTF-8: no UTF-16 forms
	s.Add("short", ph)             // raw only
	s.Add("é-secret", "[E]")       // UTF-16 forms
	s.Add("p%41ss&amp;", "[P]")    // looks escaped
	s.AddWritten("Basic c2hvcnQ=") // exact
	forms := s.forms()
	want := map[string]string{
		"sk-live-\xff": ph, "c2stbGl2ZS3/": ph, "c2stbGl2ZS3_": ph, "736b2d6c6976652dff": ph,
		// the cores after one and two bytes of a larger blob
		"NrLWxpdmUt/": ph, "NrLWxpdmUt_": ph, "zay1saXZlLf": ph, "c2stbGl2ZS3": "",
		"short":    ph,
		"é-secret": "[E]", "\xe9\x00-\x00s\x00e\x00c\x00r\x00e\x00t\x00": "[E]", "\x00\xe9\x00-\x00s\x00e\x00c\x00r\x00e\x00t": "[E]",
		"p%41ss&amp;": "[P]", "pAss&amp;": "[P]", "pAss&": "", // JSON keeps &amp; intact; HTML its &amp;amp; decodes to &amp;
		"Basic c2hvcnQ=": Redacted,
	}
	for form, standIn := range want {
		got, ok := forms[form]
		switch {
		case standIn == "" && ok:
			t.Errorf("unexpected form %q", form)
		case standIn != "" && got != standIn:
			t.Errorf("form %q: %q, %v; want %q", form, got, ok, standIn)
		}
	}
	for form := range forms {
		if len(form) < minEncodedLen && form != "short" {
			t.Errorf("short derived form %q", form)
		}
		if form == "c2hvcnQ=" || form == "73686f7274" {
			t.Errorf("encoded form %q of a short secret", form)
		}
	}
}

// Sessions with the same secrets and their own placeholders share the
// matcher, and each still gets its own stand-ins.
func TestCacheSharesMatchers(t *testing.T) {
	var c Cache
	const secret = "shared-secret-0123456789abcdef"
	var a, b SecretSet
	a.Add(secret, "agvph_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa")
	b.Add(secret, "agvph_bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb")
	ra, rb := c.Redactor(&a), c.Redactor(&b)
	if ra == rb || ra.m != rb.m {
		t.Fatalf("want two redactors sharing one matcher: %p %p, matchers %p %p", ra, rb, ra.m, rb.m)
	}
	if got := ra.String("x " + secret); got != "x agvph_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" {
		t.Fatalf("a: %q", got)
	}
	if got := rb.String("x " + secret); got != "x agvph_bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb" {
		t.Fatalf("b: %q", got)
	}
}

// Adding a pair the set already holds changes nothing: the set keys
// (and caches) as the one without the repeat. Different pairs still
// count, in order.
func TestSecretSetIgnoresRepeatedPairs(t *testing.T) {
	const a, b = "secret-one", "secret-two"
	const phB = "agvph_bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
	set := func(pairs ...[2]string) *SecretSet {
		var s SecretSet
		for _, p := range pairs {
			s.Add(p[0], p[1])
		}
		return &s
	}
	var c Cache
	for _, tc := range []struct {
		name       string
		x, y       *SecretSet
		sameKey    bool
		sameResult bool
	}{
		{"twice", set([2]string{a, ph}, [2]string{a, ph}), set([2]string{a, ph}), true, true},
		{"again later", set([2]string{a, ph}, [2]string{b, phB}, [2]string{a, ph}), set([2]string{a, ph}, [2]string{b, phB}), true, true},
		{"other stand-in", set([2]string{a, ph}, [2]string{a, phB}), set([2]string{a, ph}), false, false},
		{"other order", set([2]string{b, phB}, [2]string{a, ph}), set([2]string{a, ph}, [2]string{b, phB}), false, true},
	} {
		if got := tc.x.key() == tc.y.key(); got != tc.sameKey {
			t.Errorf("%s: same key %v, want %v", tc.name, got, tc.sameKey)
		}
		if got := c.Redactor(tc.x) == c.Redactor(tc.y); got != tc.sameKey {
			t.Errorf("%s: same redactor %v, want %v", tc.name, got, tc.sameKey)
		}
		in := "x " + a + " " + b
		if got := c.Redactor(tc.x).String(in) == c.Redactor(tc.y).String(in); got != tc.sameResult {
			t.Errorf("%s: same output %v, want %v", tc.name, got, tc.sameResult)
		}
	}
}

// Each of the cache's maps starts over past its bound, and what it
// returns stays right through the restarts.
func TestCacheBounded(t *testing.T) {
	var c Cache
	// Short secrets (no derived forms) keep the builds cheap; every set
	// has its own patterns, so its own matcher, and every other one
	// shares its patterns with the one before under another stand-in.
	secret := func(i int) string { return fmt.Sprintf("s%06d", i) }
	standIn := func(i int) string { return fmt.Sprintf("[stand-in %d]", i) }
	const n = 2*maxCachedRedactors + 10
	restarted := false
	for i := range n {
		var s SecretSet
		s.Add(secret(i/2), standIn(i))
		r := c.Redactor(&s)
		if got, want := r.String("x "+secret(i/2)+" "+secret(i/2+1)), "x "+standIn(i)+" "+secret(i/2+1); got != want {
			t.Fatalf("set %d: %q, want %q", i, got, want)
		}
		if c.Redactor(&s) != r {
			t.Fatalf("set %d: not cached", i)
		}
		if len(c.m) > maxCachedRedactors || len(c.matchers) > maxCachedRedactors {
			t.Fatalf("after %d sets: %d redactors, %d matchers cached", i+1, len(c.m), len(c.matchers))
		}
		restarted = restarted || len(c.m) < i+1
	}
	if !restarted || len(c.matchers) >= n/2 {
		t.Fatalf("the cache never started over: %d redactors, %d matchers", len(c.m), len(c.matchers))
	}
	// After the restarts: an early set is built anew, right.
	var s SecretSet
	s.Add(secret(0), standIn(0))
	if got := c.Redactor(&s).String(secret(0)); got != standIn(0) {
		t.Fatalf("rebuilt: %q", got)
	}
}
