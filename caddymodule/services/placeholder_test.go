package services

import (
	"encoding/base64"
	"errors"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"testing"
)

// Two fixed placeholders and their secrets for the tests below.
const (
	ph1 = "agvph_0123456789abcdef0123456789abcdef"
	ph2 = "agvph_ffffffffffffffffffffffffffffffff"
	// phUnknown is well formed but resolves to an error.
	phUnknown = "agvph_00000000000000000000000000000000"
)

var testSecrets = map[string]string{ph1: "s3cr/et one", ph2: "SECRET2"}

var errUnknown = errors.New("unknown placeholder")

func resolveTest(ph string) (string, error) {
	if s, ok := testSecrets[ph]; ok {
		return s, nil
	}
	return "", errUnknown
}

func TestNewPlaceholder(t *testing.T) {
	seen := map[string]bool{}
	for i := 0; i < 100; i++ {
		p, err := NewPlaceholder()
		if err != nil {
			t.Fatal(err)
		}
		if !isPlaceholder(p) {
			t.Fatalf("NewPlaceholder() = %q is not a placeholder", p)
		}
		if seen[p] {
			t.Fatalf("duplicate placeholder %q", p)
		}
		seen[p] = true
	}
}

func TestIsPlaceholder(t *testing.T) {
	tests := map[string]bool{
		ph1:                                true,
		ph2:                                true,
		ph1[:len(ph1)-1]:                   false,
		ph1 + "0":                          false,
		"x" + ph1:                          false,
		strings.ToUpper(ph1):               false,
		"agvph_" + strings.Repeat("A", 32): false,
		"agvph_" + strings.Repeat("g", 32): false,
		"agvpx_" + ph1[6:]:                 false,
		"":                                 false,
	}
	for in, want := range tests {
		if got := isPlaceholder(in); got != want {
			t.Errorf("isPlaceholder(%q) = %v, want %v", in, got, want)
		}
	}
}

func TestReplaceIn(t *testing.T) {
	tests := []struct {
		in, want string
		changed  bool
	}{
		{"", "", false},
		{"no placeholder here", "no placeholder here", false},
		{ph1, "s3cr/et one", true},
		{"Bearer " + ph2, "Bearer SECRET2", true},
		{ph1 + ph2, "s3cr/et oneSECRET2", true},
		{"a" + ph1 + "-" + ph1 + "b", "as3cr/et one-s3cr/et oneb", true},
		{"xyz" + ph2 + "XYZ", "xyzSECRET2XYZ", true},
		{"agvph_", "agvph_", false},
		{"agvph_agvph_", "agvph_agvph_", false},
		{"agvph_" + ph2, "agvph_SECRET2", true},
		{ph1[:len(ph1)-1], ph1[:len(ph1)-1], false},
		{ph1 + "0", "s3cr/et one0", true}, // the placeholder is the first 32 digits
		{ph1 + "g", "s3cr/et oneg", true}, // non-hex ends the token
		{ph1 + "A", "s3cr/et oneA", true}, // upper case is not lower-case hex
		{"agvph_" + strings.Repeat("F", 32), "agvph_" + strings.Repeat("F", 32), false},
		{"0" + ph2, "0SECRET2", true},
	}
	for _, tt := range tests {
		got, changed, err := replaceIn(tt.in, resolveTest)
		if err != nil || got != tt.want || changed != tt.changed {
			t.Errorf("replaceIn(%q) = %q, %v, %v; want %q, %v", tt.in, got, changed, err, tt.want, tt.changed)
		}
	}

	_, _, err := replaceIn("ok "+ph1+" then "+phUnknown, resolveTest)
	if !errors.Is(err, errUnknown) {
		t.Errorf("resolve error not propagated: %v", err)
	}
	calls := 0
	_, _, _ = replaceIn("agvph_x agvph_", func(string) (string, error) { calls++; return "", nil })
	if calls != 0 {
		t.Error("resolve called for a partial placeholder")
	}
}

func TestReplaceInNoPlaceholderNoAlloc(t *testing.T) {
	s := strings.Repeat("just some ordinary header value, agvp_ ", 10)
	allocs := testing.AllocsPerRun(100, func() {
		out, changed, err := replaceIn(s, resolveTest)
		if out != s || changed || err != nil {
			t.Fatal("changed")
		}
	})
	if allocs != 0 {
		t.Errorf("ReplaceIn allocates %v times without placeholders", allocs)
	}
}

func newRequest(t testing.TB, target string) *http.Request {
	t.Helper()
	r, err := http.NewRequest("GET", target, nil)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestRewriteRequest(t *testing.T) {
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	r := newRequest(t, "https://api.example.com/repos/"+ph1+"/x?key="+ph1+"&other="+ph2+"#frag")
	r.URL.User = url.UserPassword("x-access-token", ph2)
	r.Header.Set("Authorization", "Bearer "+ph2)
	r.Header.Set("Cookie", "session="+ph1+"; theme=dark")
	r.Header.Add("X-Multi", "plain")
	r.Header.Add("X-Multi", "k="+ph2)
	r.Header.Set("Proxy-Authorization", "Basic "+ph1)
	r.Header.Set("X-Plain", "agvph_notaplaceholder")

	written, err := RewriteRequest(r, resolveTest)
	if err != nil {
		t.Fatal(err)
	}
	// Every secret-bearing string written besides the raw secrets:
	// the escaped path and query forms.
	if want := []string{"s3cr%2Fet%20one", "s3cr%2Fet+one"}; !reflect.DeepEqual(written, want) {
		t.Errorf("written = %q, want %q", written, want)
	}
	wantHeader := http.Header{
		"Authorization":       {"Bearer SECRET2"},
		"Cookie":              {"session=s3cr/et one; theme=dark"},
		"X-Multi":             {"plain", "k=SECRET2"},
		"Proxy-Authorization": {"Basic " + ph1},
		"X-Plain":             {"agvph_notaplaceholder"},
	}
	if !reflect.DeepEqual(r.Header, wantHeader) {
		t.Errorf("header = %v, want %v", r.Header, wantHeader)
	}
	// The secret's '/' and ' ' stay inside one path segment.
	if r.URL.Path != "/repos/s3cr/et one/x" || r.URL.EscapedPath() != "/repos/s3cr%2Fet%20one/x" {
		t.Errorf("path = %q (escaped %q)", r.URL.Path, r.URL.EscapedPath())
	}
	if r.URL.RawQuery != "key=s3cr%2Fet+one&other=SECRET2" {
		t.Errorf("query = %q", r.URL.RawQuery)
	}
	if got := r.URL.Query().Get("key"); got != "s3cr/et one" {
		t.Errorf("query key = %q", got)
	}
	if p, _ := r.URL.User.Password(); p != "SECRET2" || r.URL.User.Username() != "x-access-token" {
		t.Errorf("user = %v", r.URL.User)
	}

	// Basic credentials carrying placeholders (git, curl -u).
	r = newRequest(t, "https://github.com/org/repo.git/info/refs")
	r.Header.Set("Authorization", "Basic "+b64("x-access-token:"+ph2))
	written, err = RewriteRequest(r, resolveTest)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := r.Header.Get("Authorization"), "Basic "+b64("x-access-token:SECRET2"); got != want {
		t.Errorf("basic = %q, want %q", got, want)
	}
	if want := []string{b64("x-access-token:SECRET2")}; !reflect.DeepEqual(written, want) {
		t.Errorf("written = %q, want the re-encoded Basic value %q", written, want)
	}
	r.Header.Set("Authorization", "basic   "+b64(ph1+":"+ph2)+" ")
	if _, err := RewriteRequest(r, resolveTest); err != nil {
		t.Fatal(err)
	}
	if got, want := r.Header.Get("Authorization"), "Basic "+b64("s3cr/et one:SECRET2"); got != want {
		t.Errorf("basic = %q, want %q", got, want)
	}
	long := "Basic " + b64(strings.Repeat("u", 2000)+":"+ph2)
	r.Header.Set("Authorization", long)
	if _, err := RewriteRequest(r, resolveTest); err != nil {
		t.Fatal(err)
	}
	if got, want := r.Header.Get("Authorization"), "Basic "+b64(strings.Repeat("u", 2000)+":SECRET2"); got != want {
		t.Error("long basic value not rewritten")
	}
	for _, v := range []string{"Basic " + b64("user:pass"), "Basic !!notbase64", "Basic ", "Digest " + b64(ph1)} {
		r.Header.Set("Authorization", v)
		if written, err := RewriteRequest(r, resolveTest); err != nil || written != nil || r.Header.Get("Authorization") != v {
			t.Errorf("%q rewritten to %q (%v, %v)", v, r.Header.Get("Authorization"), written, err)
		}
	}
}

func TestRewriteRequestRawPath(t *testing.T) {
	r := newRequest(t, "https://gitlab.example.com/api/v4/projects/group%2Fproj/"+ph2+"/a%2Fb")
	if r.URL.RawPath == "" {
		t.Fatal("test needs a RawPath")
	}
	if _, err := RewriteRequest(r, resolveTest); err != nil {
		t.Fatal(err)
	}
	if got, want := r.URL.EscapedPath(), "/api/v4/projects/group%2Fproj/SECRET2/a%2Fb"; got != want {
		t.Errorf("escaped path = %q, want %q", got, want)
	}
	if got, want := r.URL.Path, "/api/v4/projects/group/proj/SECRET2/a/b"; got != want {
		t.Errorf("path = %q, want %q", got, want)
	}
	if r.URL.RawPath != r.URL.EscapedPath() {
		t.Errorf("RawPath %q inconsistent", r.URL.RawPath)
	}
}

func TestRewriteRequestErrors(t *testing.T) {
	setup := []struct {
		name    string
		mutate  func(r *http.Request)
		wantErr error
		wantMsg string
	}{
		{"unknown in header", func(r *http.Request) { r.Header.Set("X-K", phUnknown) }, errUnknown, ""},
		{"unknown in path", func(r *http.Request) { r.URL.Path = "/" + phUnknown }, errUnknown, ""},
		{"unknown in query", func(r *http.Request) { r.URL.RawQuery = "k=" + phUnknown }, errUnknown, ""},
		{"unknown in basic", func(r *http.Request) {
			r.Header.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte("u:"+phUnknown)))
		}, errUnknown, ""},
		{"unknown in userinfo", func(r *http.Request) { r.URL.User = url.User(phUnknown) }, errUnknown, ""},
		{"placeholder in header name", func(r *http.Request) { r.Header.Set("X-"+ph1, "v") }, nil, "header name"},
		{"canonicalized placeholder in name", func(r *http.Request) { r.Header.Set(ph1, "v") }, nil, "header name"},
		{"secret with CRLF", func(r *http.Request) { r.Header.Set("X-K", ph2) }, nil, "not allowed"},
		// The escape would take the secret's first byte, and its error
		// would name it.
		{"path: % before a placeholder", func(r *http.Request) { r.URL.RawPath = "/x%2" + ph1; r.URL.Path = "/x*" + ph1[1:] }, nil, "unfinished %-escape"},
		{"query: %H before a placeholder", func(r *http.Request) { r.URL.RawQuery = "q=%2" + ph1 }, nil, "unfinished %-escape"},
	}
	for _, tt := range setup {
		t.Run(tt.name, func(t *testing.T) {
			r := newRequest(t, "https://x.io/a/"+ph1+"?q="+ph1)
			r.Header.Set("Authorization", "Bearer "+ph1)
			tt.mutate(r)
			before := r.Clone(r.Context())
			resolve := resolveTest
			if tt.name == "secret with CRLF" {
				resolve = func(ph string) (string, error) {
					if ph == ph2 {
						return "SECRET\r\nX-Evil: 1", nil
					}
					return resolveTest(ph)
				}
			}
			written, err := RewriteRequest(r, resolve)
			if err == nil {
				t.Fatal("RewriteRequest succeeded")
			}
			if written != nil {
				t.Errorf("written = %q on error", written)
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("err = %v, want %v", err, tt.wantErr)
			}
			if tt.wantMsg != "" && !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("err = %v, want %q", err, tt.wantMsg)
			}
			if strings.Contains(err.Error(), "SECRET") || strings.Contains(err.Error(), "s3cr") {
				t.Errorf("error reveals a secret: %v", err)
			}
			if !reflect.DeepEqual(r.Header, before.Header) || r.URL.String() != before.URL.String() {
				t.Errorf("request modified on error: %v %v", r.Header, r.URL)
			}
		})
	}
}

func TestRewriteRequestNoPlaceholderUnchanged(t *testing.T) {
	r := typicalRequest(t)
	before := r.Clone(r.Context())
	written, err := RewriteRequest(r, func(string) (string, error) { t.Fatal("resolve called"); return "", nil })
	if err != nil || written != nil {
		t.Fatalf("RewriteRequest = %q, %v", written, err)
	}
	if !reflect.DeepEqual(r.Header, before.Header) || *r.URL != *before.URL {
		t.Error("request changed")
	}
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := RewriteRequest(r, resolveTest); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("RewriteRequest allocates %v times without placeholders", allocs)
	}
}

// typicalRequest is a request with ten common headers and no
// placeholders, including a Basic Authorization that must be decoded.
func typicalRequest(t testing.TB) *http.Request {
	r := newRequest(t, "https://api.github.com/repos/agentvault/caddy-agent-vault/pulls?state=open&per_page=100")
	r.Header.Set("User-Agent", "curl/8.5.0")
	r.Header.Set("Accept", "application/vnd.github+json")
	r.Header.Set("Accept-Encoding", "gzip, deflate, br")
	r.Header.Set("Accept-Language", "en-US,en;q=0.9")
	r.Header.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte("x-access-token:ghp_notaplaceholder0123456789")))
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("Cookie", "_octo=GH1.1.123.456; logged_in=yes; tz=Europe%2FBerlin")
	r.Header.Set("X-Github-Api-Version", "2022-11-28")
	r.Header.Set("X-Request-Id", "6f1c0e4e-2b1f-4d8e-9a63-0d5d3c1f2e7a")
	r.Header.Set("If-None-Match", `W/"abc123"`)
	return r
}

// isPlaceholder and replaceIn are the tests' handles on the scanner
// RewriteRequest uses.
func isPlaceholder(s string) bool {
	return len(s) == placeholderLen && strings.HasPrefix(s, PlaceholderPrefix) && placeholderAt(s, 0)
}

func replaceIn(s string, resolve func(string) (string, error)) (string, bool, error) {
	return replacePlaceholders(s, resolve, nil, nil)
}
