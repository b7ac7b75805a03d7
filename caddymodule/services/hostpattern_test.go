package services

import (
	"strings"
	"testing"
)

func TestParseHostPatternValid(t *testing.T) {
	tests := []struct {
		in, want string
	}{
		{"api.github.com", "api.github.com"},
		{"API.GitHub.COM.", "api.github.com"},
		{"  api.github.com  ", "api.github.com"},
		{"*.example.com", "*.example.com"},
		{"*.Example.com.", "*.example.com"},
		{"api.example.com:8443", "api.example.com:8443"},
		{"example.com/api/*", "example.com/api/*"},
		{"example.com:8443/api/*/x", "example.com:8443/api/*/x"},
		{"127.0.0.1:8443", "127.0.0.1:8443"},
		{"127.0.0.1", "127.0.0.1"},
		{"[::1]:8443", "[::1]:8443"},
		{"[::1]", "[::1]"},
		{"[0:0:0:0:0:0:0:1]", "[::1]"},
		{"[2001:DB8::1]/v1/*", "[2001:db8::1]/v1/*"},
		{"[::ffff:127.0.0.1]:80", "127.0.0.1:80"},
		{"my_host.internal", "my_host.internal"},
		{"localhost", "localhost"},
		{"example.com/a%2Fb/*", "example.com/a%2Fb/*"},
		{"xn--bcher-kva.example", "xn--bcher-kva.example"},
	}
	for _, tt := range tests {
		p, err := ParseHostPattern(tt.in)
		if err != nil {
			t.Errorf("ParseHostPattern(%q): %v", tt.in, err)
			continue
		}
		if got := p.String(); got != tt.want {
			t.Errorf("ParseHostPattern(%q).String() = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestParseHostPatternInvalid(t *testing.T) {
	tests := []struct {
		in, wantErr string
	}{
		{"", "empty"},
		{"https://api.github.com", "scheme"},
		{"http://api.github.com/x", "scheme"},
		{"user@api.github.com", "user info"},
		{"user:pw@api.github.com", "user info"},
		{"api.github.com?x=1", "query"},
		{"api.github.com/#frag", "fragment"},
		{"api..github.com", "empty label"},
		{".github.com", "empty label"},
		{"*", "'*'"},
		{"*.com", "two labels"},
		{"*example.com", "'*'"},
		{"api.*.example.com", "'*'"},
		{"*.*.example.com", "'*'"},
		{"**.example.com", "'*'"},
		{"*.1.2.3.4", "IP address"},
		{"api.example.com:0", "port"},
		{"api.example.com:65536", "port"},
		{"api.example.com:08443", "port"},
		{"api.example.com:", "empty port"},
		{"api.example.com:+443", "port"},
		{"api.example.com:https", "port"},
		{"::1", "brackets"},
		{"[::1", "']'"},
		{"[::1]x", "after ']'"},
		{"[fe80::1%25eth0]", "zones"},
		{"[127.0.0.1]", "IPv6"},
		{"127.1", "canonical IPv4"},
		{"127.000.0.1", "canonical IPv4"},
		{"0x7f000001", "canonical IPv4"},
		{"2130706433", "canonical IPv4"},
		{"bücher.example", "non-ASCII"},
		{"api example.com", "whitespace"},
		{"example.com/a b", "whitespace"},
		{"example.com/a\\b", `'\'`},
		{"example.com/a/../b", `".."`},
		{"example.com/a/%2e%2e/b", `".."`},
		{"example.com/%zz", "percent"},
		{"exa$mple.com", "invalid character"},
		{strings.Repeat("a", 64) + ".com", "label longer"},
		{"example.com/" + strings.Repeat("a", 2000), "too long"},
	}
	for _, tt := range tests {
		_, err := ParseHostPattern(tt.in)
		if err == nil {
			t.Errorf("ParseHostPattern(%q) succeeded, want error containing %q", tt.in, tt.wantErr)
			continue
		}
		if !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("ParseHostPattern(%q) error %q does not contain %q", tt.in, err, tt.wantErr)
		}
		if !strings.Contains(err.Error(), "invalid host pattern") {
			t.Errorf("ParseHostPattern(%q) error %q does not name the input", tt.in, err)
		}
	}
}

func TestHostPatternMatch(t *testing.T) {
	tests := []struct {
		pattern string
		host    string
		port    int
		tls     bool
		path    string
		want    bool
	}{
		// Exact hosts.
		{"api.example.com", "api.example.com", 443, true, "/", true},
		{"api.example.com", "api.example.com.evil.net", 443, true, "/", false},
		{"api.example.com", "evilapi.example.com", 443, true, "/", false},
		{"api.example.com", "x.api.example.com", 443, true, "/", false},
		{"API.example.com.", "api.example.com", 443, true, "/", true},
		// Wildcards.
		{"*.example.com", "a.example.com", 443, true, "/", true},
		{"*.example.com", "a.b.example.com", 443, true, "/", true},
		{"*.example.com", "example.com", 443, true, "/", false},
		{"*.example.com", "evil-example.com", 443, true, "/", false},
		{"*.example.com", "example.com.evil.net", 443, true, "/", false},
		{"*.example.com", "a.example.com.evil.net", 443, true, "/", false},
		{"*.example.com", ".example.com", 443, true, "/", false},
		{"*.example.com", "a..example.com", 443, true, "/", false},
		// Port rules: no port means the scheme's default port.
		{"api.example.com", "api.example.com", 80, false, "/", true},
		{"api.example.com", "api.example.com", 443, false, "/", false},
		{"api.example.com", "api.example.com", 80, true, "/", false},
		{"api.example.com", "api.example.com", 8443, true, "/", false},
		{"api.example.com:8443", "api.example.com", 8443, true, "/", true},
		{"api.example.com:8443", "api.example.com", 8443, false, "/", true},
		{"api.example.com:8443", "api.example.com", 443, true, "/", false},
		{"api.example.com:443", "api.example.com", 443, true, "/", true},
		// Paths.
		{"example.com/api/*", "example.com", 443, true, "/api/", true},
		{"example.com/api/*", "example.com", 443, true, "/api/v1/users", true},
		{"example.com/api/*", "example.com", 443, true, "/apix", false},
		{"example.com/api/*", "example.com", 443, true, "/api", false},
		{"example.com/api/*", "example.com", 443, true, "/x/api/y", false},
		{"example.com/api/*", "example.com", 443, true, "", false},
		{"example.com/api/*", "example.com", 443, true, "/api/../admin", false},
		{"example.com/api/*", "example.com", 443, true, "/api/%2e%2e/admin", false},
		{"example.com/api/*", "example.com", 443, true, "/api/%2E%2E%2fadmin", false},
		{"example.com/api/*", "example.com", 443, true, "/api/..;/admin", false},
		{"example.com/api/*", "example.com", 443, true, "/api/..\\admin", false},
		{"example.com/api/*", "example.com", 443, true, "/api/./x", false},
		{"example.com/api/*", "example.com", 443, true, "/api/...", true},
		{"example.com/api/*", "example.com", 443, true, "/api/.well-known", true},
		{"example.com/repos/*/issues", "example.com", 443, true, "/repos/a/b/issues", true},
		{"example.com/repos/*/issues", "example.com", 443, true, "/repos/a/issues/1", false},
		{"example.com/repos/*/issues", "example.com", 443, true, "/repos/issues", false},
		{"example.com/a*a", "example.com", 443, true, "/a", false},
		{"example.com/a*a", "example.com", 443, true, "/aa", true},
		{"example.com/exact", "example.com", 443, true, "/exact", true},
		{"example.com/exact", "example.com", 443, true, "/exact/", false},
		{"example.com/", "example.com", 443, true, "", true},
		{"example.com", "example.com", 443, true, "/anything/../at/all", true},
		// IP literals.
		{"127.0.0.1:8443", "127.0.0.1", 8443, true, "/", true},
		{"127.0.0.1:8443", "127.0.0.2", 8443, true, "/", false},
		{"[::1]:8443", "::1", 8443, true, "/", true},
		{"[::1]:8443", "[::1]", 8443, true, "/", false},
	}
	for _, tt := range tests {
		p, err := ParseHostPattern(tt.pattern)
		if err != nil {
			t.Fatalf("ParseHostPattern(%q): %v", tt.pattern, err)
		}
		if got := p.Match(tt.host, tt.port, tt.tls, tt.path); got != tt.want {
			t.Errorf("%q.Match(%q, %d, tls=%v, %q) = %v, want %v", tt.pattern, tt.host, tt.port, tt.tls, tt.path, got, tt.want)
		}
		if tt.want && !p.MatchHost(tt.host, tt.port, tt.tls) {
			t.Errorf("%q.MatchHost(%q, %d, %v) = false, but Match is true", tt.pattern, tt.host, tt.port, tt.tls)
		}
	}
	// MatchHost ignores the path.
	p, _ := ParseHostPattern("example.com/api/*")
	if !p.MatchHost("example.com", 443, true) || p.Match("example.com", 443, true, "/other") {
		t.Error("MatchHost must ignore the path that Match checks")
	}
	var zero HostPattern
	if zero.Match("", 443, true, "/") || zero.MatchHost("example.com", 443, true) {
		t.Error("zero HostPattern matched")
	}
}

func TestSpecificityOrder(t *testing.T) {
	// Each pattern must be strictly more specific than the one before.
	ordered := []string{
		"*.example.com",
		"*.example.com/*",
		"*.example.com/api/*",
		"*.example.com:8443",
		"*.example.com:8443/api/*",
		"*.api.example.com",
		"*.v1.api.example.com",
		"api.example.com",
		"api.example.com/*",
		"api.example.com/api*",
		"api.example.com/api",
		"api.example.com/api/*",
		"api.example.com/api/v1/*",
		"api.example.com:8443",
		"api.example.com:8443/api/*",
	}
	prev := -1
	for _, s := range ordered {
		p, err := ParseHostPattern(s)
		if err != nil {
			t.Fatal(err)
		}
		if p.Specificity() <= prev {
			t.Errorf("Specificity(%q) = %d, not above the previous pattern's %d", s, p.Specificity(), prev)
		}
		prev = p.Specificity()
	}
	// A long wildcard still loses to a short exact host.
	long, _ := ParseHostPattern("*.a.b.c.d.e.f.g.example.com:8443/very/long/path/*")
	short, _ := ParseHostPattern("x.io")
	if long.Specificity() >= short.Specificity() {
		t.Errorf("wildcard %d >= exact %d", long.Specificity(), short.Specificity())
	}
}

func TestNormalizeHost(t *testing.T) {
	valid := []struct {
		in       string
		defPort  int
		wantHost string
		wantPort int
	}{
		{"api.github.com", 443, "api.github.com", 443},
		{"API.GitHub.com.", 443, "api.github.com", 443},
		{"api.github.com:8443", 443, "api.github.com", 8443},
		{"Example.COM:80", 443, "example.com", 80},
		{"127.0.0.1", 80, "127.0.0.1", 80},
		{"127.0.0.1:8080", 80, "127.0.0.1", 8080},
		{"[::1]", 443, "::1", 443},
		{"[::1]:8443", 443, "::1", 8443},
		{"[0:0::1]:8443", 443, "::1", 8443},
		{"[2001:DB8::A]", 443, "2001:db8::a", 443},
		{"[::ffff:127.0.0.1]:443", 443, "127.0.0.1", 443},
		{"localhost", 443, "localhost", 443},
		{"1-2-3-4.example.com", 443, "1-2-3-4.example.com", 443},
		{"1.2.3.example", 443, "1.2.3.example", 443},
	}
	for _, tt := range valid {
		h, p, err := NormalizeHost(tt.in, tt.defPort)
		if err != nil || h != tt.wantHost || p != tt.wantPort {
			t.Errorf("NormalizeHost(%q, %d) = %q, %d, %v; want %q, %d", tt.in, tt.defPort, h, p, err, tt.wantHost, tt.wantPort)
		}
	}
	invalid := []string{
		"", ":443", "[]:443", "example.com:", "example.com:0", "example.com:65536", "example.com:0443",
		"example.com:-1", "*.example.com", "a..b", ".", "..", "example.com..",
		"127.1", "127.0.1", "0x7f.1", "0x7f000001", "2130706433", "0177.0.0.1", "127.000.0.1",
		"1.2.3.4.5", "256.1.1.1", "1.2.3.0x4", "0x7f",
		"::1", "::1:443", "[fe80::1%eth0]", "[fe80::1%25eth0]:443", "[::1]443", "[127.0.0.1]",
		"user@example.com", "example.com/path", "exa mple.com", "example.com\x00", "bücher.de",
		strings.Repeat("a.", 200) + "com",
	}
	for _, in := range invalid {
		if h, p, err := NormalizeHost(in, 443); err == nil {
			t.Errorf("NormalizeHost(%q) = %q, %d; want error", in, h, p)
		} else if !strings.Contains(err.Error(), "invalid host") {
			t.Errorf("NormalizeHost(%q) error %q does not name the input", in, err)
		}
	}
	if _, _, err := NormalizeHost("example.com", 0); err == nil {
		t.Error("NormalizeHost with no port and default 0 succeeded")
	}
	if _, p, err := NormalizeHost("example.com:8080", 0); err != nil || p != 8080 {
		t.Errorf("explicit port with default 0: %d, %v", p, err)
	}
}

func TestNormalizeHostNoAllocs(t *testing.T) {
	for _, in := range []string{"api.github.com", "api.github.com:443", "127.0.0.1:8443"} {
		allocs := testing.AllocsPerRun(100, func() {
			if _, _, err := NormalizeHost(in, 443); err != nil {
				t.Fatal(err)
			}
		})
		if allocs != 0 {
			t.Errorf("NormalizeHost(%q) allocates %v times", in, allocs)
		}
	}
}

func TestHasDotSegment(t *testing.T) {
	tests := map[string]bool{
		"/":             false,
		"/a/b":          false,
		"/a/.b":         false,
		"/a/b.":         false,
		"/a/...":        false,
		"/a/.":          true,
		"/a/..":         true,
		"/./a":          true,
		"/a/../b":       true,
		"..":            true,
		"/a/%2e/b":      true,
		"/a/%2E%2e/b":   true,
		"/a/.%2e":       true,
		"/a%2f..%2fb":   true,
		"/a%5C..%5cb":   true,
		"/a\\..\\b":     true,
		"/a/..;x=1/b":   true,
		"/a/..%3bx/b":   true,
		"/a/%2e%2e%2e/": false,
		"/a/%2":         false,
		"/a/%":          false,
	}
	for in, want := range tests {
		if got := hasDotSegment(in); got != want {
			t.Errorf("hasDotSegment(%q) = %v, want %v", in, got, want)
		}
	}
}

func TestPathPatternRefusesAmbiguousPaths(t *testing.T) {
	p, err := ParseHostPattern("example.com/*.png")
	if err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"/admin/delete;.png", "/admin%3bx.png", "/a%2Fb.png", "/a%00.png", "/a%5cb.png"} {
		if p.Match("example.com", 443, true, path) {
			t.Errorf("%s matched %s", path, p)
		}
	}
	for _, path := range []string{"/logo.png", "/img/%41.png"} {
		if !p.Match("example.com", 443, true, path) {
			t.Errorf("%s did not match %s", path, p)
		}
	}
}
