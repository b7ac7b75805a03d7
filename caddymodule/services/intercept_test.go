package services

import (
	"encoding/json"
	"strings"
	"testing"
)

func raw(name, host string) Service {
	s := pass(name, host)
	s.Intercept = new(bool)
	return s
}

// intercept: false is refused at definition time wherever the proxy
// could not honour it: a credential, a rule, a path or an IP host.
func TestInterceptValidate(t *testing.T) {
	ok := []Service{
		raw("r", "registry.npmjs.org"),
		raw("r", "*.pkg.dev"),
		raw("r", "registry.example.com:8443"),
		raw("r", "localhost:8443"),
	}
	for _, s := range ok {
		if err := s.Validate(); err != nil {
			t.Errorf("%s: %v", s.Host, err)
		}
	}
	yes := true
	withTrue := pass("t", "api.example.com")
	withTrue.Intercept = &yes
	if err := withTrue.Validate(); err != nil {
		t.Errorf("intercept: true: %v", err)
	}

	bad := map[string]func(*Service){
		`only auth type "passthrough"`: func(s *Service) { s.Auth = Auth{Type: AuthBearer, Token: "GITHUB_TOKEN"} },
		"cannot have a path":           func(s *Service) { s.Host = "api.example.com/v1/*" },
		"not an IP address":            func(s *Service) { s.Host = "127.0.0.1:8443" },
		"not an IP address ":           func(s *Service) { s.Host = "[::1]:8443" },
		"allow_cleartext cannot apply": func(s *Service) { s.AllowCleartext = true },
		"allow_upgrades cannot apply":  func(s *Service) { s.AllowUpgrades = []string{"h2c"} },
		"methods cannot apply":         func(s *Service) { s.Methods = []string{"GET"} },
		"paths cannot apply":           func(s *Service) { s.Paths = []string{"/x/*"} },
		"rate_limit cannot apply":      func(s *Service) { s.RateLimit = "1/s" },
		"max_request_body cannot":      func(s *Service) { s.MaxRequestBody = "1KiB" },
		"body_substitution cannot":     func(s *Service) { s.BodySubstitution = new(bool) },
	}
	for want, mutate := range bad {
		s := raw("r", "api.example.com")
		mutate(&s)
		err := s.Validate()
		if err == nil || !strings.Contains(err.Error(), strings.TrimSpace(want)) {
			t.Errorf("%s: got %v, want an error containing %q", want, err, want)
		}
		if _, terr := NewTable([]Service{s}); terr == nil {
			t.Errorf("%s: NewTable took it", want)
		}
	}
	// The same fields are fine on an intercepted service.
	s := pass("r", "api.example.com/v1/*")
	s.Methods, s.RateLimit = []string{"GET"}, "1/s"
	if err := s.Validate(); err != nil {
		t.Errorf("intercepted service with rules: %v", err)
	}
}

// The JSON field: omitted is true, false round-trips, and the table's
// copies do not share the flag with the caller.
func TestInterceptJSON(t *testing.T) {
	var s Service
	if err := json.Unmarshal([]byte(`{"name":"r","host":"x.example.com","auth":{"type":"passthrough"}}`), &s); err != nil || !s.Intercepts() {
		t.Fatalf("omitted: %v, intercepts %v", err, s.Intercepts())
	}
	if err := json.Unmarshal([]byte(`{"name":"r","host":"x.example.com","auth":{"type":"passthrough"},"intercept":false}`), &s); err != nil || s.Intercepts() {
		t.Fatalf("false: %v, intercepts %v", err, s.Intercepts())
	}
	out, _ := json.Marshal(s)
	if !strings.Contains(string(out), `"intercept":false`) {
		t.Errorf("marshalled: %s", out)
	}
	out, _ = json.Marshal(pass("p", "x.example.com"))
	if strings.Contains(string(out), "intercept") {
		t.Errorf("default marshalled: %s", out)
	}
	tab := mustTable(t, s)
	got := tab.Services()[0]
	*got.Intercept = true
	if c, ok := tab.RawTunnel("x.example.com", 443, nil); !ok || c.Service.Intercepts() {
		t.Error("mutating a copy changed the table")
	}
}

func TestRawTunnel(t *testing.T) {
	inject := Service{Name: "api", Host: "api.example.com", Auth: Auth{Type: AuthBearer, Token: "TOKEN"}}
	tab := mustTable(t,
		raw("wild", "*.example.com"),
		inject,
		raw("reg", "registry.example.org"),
		pass("reg-plain", "registry.example.org:8443"),
		raw("reg-8443", "registry.example.org:8443"),
		raw("both", "both.example.net"),
		pass("both-plain", "both.example.net"),
	)
	all := func(string) bool { return true }
	only := func(names ...string) func(string) bool {
		return func(n string) bool {
			for _, x := range names {
				if x == n {
					return true
				}
			}
			return false
		}
	}
	tests := []struct {
		host    string
		port    int
		inScope func(string) bool
		want    string // "" = intercept (or nothing covers it)
	}{
		{"x.example.com", 443, all, "wild"},
		{"a.b.example.com", 443, all, "wild"},
		{"example.com", 443, all, ""},                  // the wildcard is not the apex
		{"x.example.com", 8443, all, ""},               // the default port only
		{"api.example.com", 443, all, ""},              // the injecting service wins
		{"api.example.com", 443, only("wild"), "wild"}, // unless it is out of scope
		{"registry.example.org", 443, all, "reg"},
		{"registry.example.org", 443, only("api"), ""}, // out of scope
		{"registry.example.org", 8443, all, ""},        // a passthrough that intercepts wins
		{"registry.example.org", 8443, only("reg-8443"), "reg-8443"},
		{"both.example.net", 443, all, ""},
		{"both.example.net", 443, nil, ""},
		{"both.example.net", 443, only("both"), "both"},
		{"nothing.example.io", 443, all, ""},
	}
	for _, tc := range tests {
		c, ok := tab.RawTunnel(tc.host, tc.port, tc.inScope)
		got := ""
		if ok {
			got = c.Service.Name
		}
		if got != tc.want {
			t.Errorf("RawTunnel(%s, %d): %q, want %q", tc.host, tc.port, got, tc.want)
		}
	}
	// A table without any raw service answers at once.
	if _, ok := mustTable(t, pass("p", "x.example.com")).RawTunnel("x.example.com", 443, nil); ok {
		t.Error("a table without intercept: false relayed raw")
	}
	var nilTable *Table
	if _, ok := nilTable.RawTunnel("x.example.com", 443, nil); ok {
		t.Error("nil table")
	}
}
