package services

import (
	"fmt"
	"strings"
	"testing"
)

// A deny rule holds however the path is spelled, as long as a server
// reads it as the denied path: escaped unreserved characters, case,
// merged slashes; a malformed escape or a raw '\' passes no rule.
func TestPathRulesDenyRespelled(t *testing.T) {
	tbl, err := NewTable([]Service{
		ruleService(func(s *Service) { s.Paths = []string{"/repos/*", "!/repos/*/admin/*", "!/repos/*/Hooks*"} }),
		{Name: "open", Host: "open.example", Auth: Auth{Type: AuthPassthrough}, Paths: []string{"!/admin*"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	c, _ := tbl.Lookup("api.github.com", 443, true, "/", nil)
	for path, want := range map[string]bool{
		"/repos/o/r/admin/x":       false,
		"/repos/o/r/%61dmin/x":     false,
		"/repos/o/r/ADMIN/x":       false,
		"/repos/o/r/hooks/1":       false,
		"/repos/o/r/%%36%31dmin/x": false, // a malformed escape passes no rule
		"/repos/o/r/a\\b":          false, // nor a raw backslash
		"/repos/o/r/administrator": true,
		"/repos/o/r/%C3%A9":        true,
	} {
		if got := c.AllowsPath(path); got != want {
			t.Errorf("AllowsPath(%q) = %v, want %v", path, got, want)
		}
	}
	o, _ := tbl.Lookup("open.example", 443, true, "/", nil)
	for path, want := range map[string]bool{"/": true, "/x": true, "//admin": false, "///admin/x": false, "/%61dmin": false, "/Admin/x": false, "/x/%2e%2e/admin": false} {
		if got := o.AllowsPath(path); got != want {
			t.Errorf("deny-only AllowsPath(%q) = %v, want %v", path, got, want)
		}
	}
}

// FuzzPathRulesRespelled: a path a deny rule refuses stays refused
// when one of its characters is percent-encoded, its case changed or
// a '/' doubled; compiling and matching never panic.
func FuzzPathRulesRespelled(f *testing.F) {
	for _, c := range [][2]string{
		{"!/repos/*/admin/*", "/repos/o/r/admin/x"}, {"!/admin", "/admin"}, {"!/x*y", "/x/y"},
		{"!/%41", "/a"}, {"!/*", "/"}, {"!/a//b", "/a/b"}, {"!/Hooks", "/hooks"},
	} {
		f.Add(c[0], c[1], uint8(0), uint8(1))
	}
	f.Fuzz(func(t *testing.T, rule, path string, how, at uint8) {
		tbl, err := NewTable([]Service{ruleService(func(s *Service) { s.Paths = []string{rule} })})
		if err != nil {
			return
		}
		c, _ := tbl.Lookup("api.github.com", 443, true, "/", nil)
		if c.AllowsPath(path) || hasDotSegment(path) || hasAmbiguousBytes(path) || malformedEscape(path) || !strings.HasPrefix(rule, "!") {
			return
		}
		if alt := respell(path, how, int(at)); c.AllowsPath(alt) {
			t.Fatalf("rule %q denies %q but allows its respelling %q", rule, path, alt)
		}
	})
}

// respell writes path another way a server may read the same: one
// unreserved character percent-encoded, the whole upper- or
// lower-cased, or a '/' doubled.
func respell(path string, how uint8, at int) string {
	if path == "" {
		return "/"
	}
	i := at % len(path)
	switch c := path[i]; how % 4 {
	case 0:
		if isUnreserved(c) {
			return path[:i] + fmt.Sprintf("%%%02X", c) + path[i+1:]
		}
	case 1:
		return strings.ToUpper(path)
	case 2:
		return strings.ToLower(path)
	case 3:
		if c == '/' {
			return path[:i] + "/" + path[i:]
		}
	}
	return path
}
