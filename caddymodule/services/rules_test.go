package services

import (
	"strings"
	"testing"
	"time"
)

func ruleService(edit func(*Service)) Service {
	s := Service{Name: "gh", Host: "api.github.com", Auth: Auth{Type: AuthBearer, Token: "GH"}}
	edit(&s)
	return s
}

func TestRulesValidate(t *testing.T) {
	for _, tc := range []struct {
		edit func(*Service)
		want string // "" valid
	}{
		{func(s *Service) { s.Methods = []string{"GET", "HEAD"} }, ""},
		{func(s *Service) { s.Methods = []string{"get"} }, "not an HTTP method in upper case"},
		{func(s *Service) { s.Methods = []string{"GET POST"} }, "not an HTTP method"},
		{func(s *Service) { s.Paths = []string{"/repos/*", "!/repos/*/admin/*"} }, ""},
		{func(s *Service) { s.Paths = []string{"repos/*"} }, "must start with /"},
		{func(s *Service) { s.Paths = []string{"!x"} }, "must start with /"},
		{func(s *Service) { s.Paths = []string{"/a/../b"} }, `"." and ".."`},
		{func(s *Service) { s.Paths = []string{"/a%zz"} }, "percent-encoding"},
		{func(s *Service) { s.RateLimit = "60/m" }, ""},
		{func(s *Service) { s.RateLimit = "60" }, "want N/s, N/m or N/h"},
		{func(s *Service) { s.RateLimit = "0/s" }, "from 1 to"},
		{func(s *Service) { s.RateLimit = "5/d" }, "unit must be s, m or h"},
		{func(s *Service) { s.MaxRequestBody = "10MiB" }, ""},
		{func(s *Service) { s.MaxRequestBody = "ten" }, "want a size"},
		{func(s *Service) { s.MaxRequestBody = "0" }, "at least one byte"},
	} {
		s := ruleService(tc.edit)
		err := s.Validate()
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%+v: %v", s, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%+v: error %v, want %q", s, err, tc.want)
		}
	}
}

func TestRulesMatch(t *testing.T) {
	tbl, err := NewTable([]Service{ruleService(func(s *Service) {
		s.Methods = []string{"GET"}
		s.Paths = []string{"/repos/*", "!/repos/*/admin/*", "!/repos/secret"}
		s.RateLimit = "10/s"
		s.MaxRequestBody = "1KiB"
	}), {Name: "open", Host: "open.example", Auth: Auth{Type: AuthPassthrough}, Paths: []string{"!/admin*"}}})
	if err != nil {
		t.Fatal(err)
	}
	c, _ := tbl.Lookup("api.github.com", 443, true, "/", nil)
	if !c.AllowsMethod("GET") || c.AllowsMethod("POST") || c.AllowsMethod("get") {
		t.Error("methods")
	}
	for path, want := range map[string]bool{
		"/repos/o/r": true, "/repos/o/r/admin/x": false, "/repos/secret": false, "/user": false, "": false,
		"/repos/o/./r": false, "/repos/o;x": false, "/repos/a%2f..": false,
		"/repos/o/r/%61dmin/x": false, "/repos/o/r/ADMIN/x": false, "/repos/o/r/Admin%2Dx/y": true, "/repos/SECRET": false, "/repos/%73ecret": false,
	} {
		if got := c.AllowsPath(path); got != want {
			t.Errorf("AllowsPath(%q) = %v, want %v", path, got, want)
		}
	}
	if r := c.RateLimit(); r.Count != 10 || r.Per != time.Second {
		t.Errorf("rate %+v", r)
	}
	if c.MaxRequestBody() != 1024 {
		t.Errorf("max body %d", c.MaxRequestBody())
	}
	o, _ := tbl.Lookup("open.example", 443, true, "/", nil)
	for path, want := range map[string]bool{"/": true, "/x": true, "/admin": false, "/admin/x": false, "/a/../admin": false} {
		if got := o.AllowsPath(path); got != want {
			t.Errorf("deny-only AllowsPath(%q) = %v, want %v", path, got, want)
		}
	}
	if !o.AllowsMethod("PATCH") || !o.RateLimit().IsZero() || o.MaxRequestBody() != 0 {
		t.Error("a service without rules limits something")
	}
}

func FuzzParseRate(f *testing.F) {
	for _, s := range []string{"60/m", "1/s", "1000000/h", "0/s", "/", "9999999999/s", "-1/m"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRate(s)
		if err == nil && (r.Count < 1 || r.Count > maxRateCount || r.Per <= 0) {
			t.Fatalf("ParseRate(%q) = %+v", s, r)
		}
	})
}

func FuzzRulePaths(f *testing.F) {
	f.Add("/repos/*", "!/repos/*/admin/*", "/repos/o/r/admin/x")
	f.Add("/*", "!*", "/")
	f.Fuzz(func(t *testing.T, allow, deny, path string) {
		s := ruleService(func(s *Service) { s.Paths = []string{allow, deny} })
		tbl, err := NewTable([]Service{s})
		if err != nil {
			return
		}
		c, _ := tbl.Lookup("api.github.com", 443, true, "/", nil)
		if c.AllowsPath(path) && (hasDotSegment(path) || hasAmbiguousBytes(path)) {
			t.Fatalf("an ambiguous path %q passed %q %q", path, allow, deny)
		}
	})
}
