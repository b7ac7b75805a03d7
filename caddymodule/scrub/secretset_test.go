package scrub

import (
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
