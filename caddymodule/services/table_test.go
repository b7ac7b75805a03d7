package services

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"testing"
)

func pass(name, host string) Service {
	return Service{Name: name, Host: host, Auth: Auth{Type: "passthrough"}}
}

func mustTable(t testing.TB, svcs ...Service) *Table {
	t.Helper()
	tab, err := NewTable(svcs)
	if err != nil {
		t.Fatal(err)
	}
	return tab
}

func TestTableLookup(t *testing.T) {
	tab := mustTable(t,
		pass("wild", "*.example.com"),
		pass("wild-deep", "*.api.example.com"),
		pass("exact", "api.example.com"),
		pass("exact-path", "api.example.com/v1/*"),
		pass("exact-path-long", "api.example.com/v1/admin/*"),
		pass("exact-port", "api.example.com:8443"),
		pass("exact-port-path", "api.example.com:8443/v1/*"),
		pass("b-tie", "tie.example.org"),
		pass("a-tie", "tie.example.org"),
		pass("ip", "127.0.0.1:8443"),
		pass("v6", "[::1]:8443"),
	)
	tests := []struct {
		host string
		port int
		tls  bool
		path string
		want string // "" = no match
	}{
		{"api.example.com", 443, true, "/", "exact"},
		{"api.example.com", 443, true, "/v1/x", "exact-path"},
		{"api.example.com", 443, true, "/v1/admin/x", "exact-path-long"},
		{"api.example.com", 443, true, "/v1/../admin", "exact"},
		{"api.example.com", 8443, true, "/", "exact-port"},
		{"api.example.com", 8443, true, "/v1/x", "exact-port-path"},
		{"api.example.com", 80, false, "/", "exact"},
		{"api.example.com", 8080, false, "/", ""},
		{"x.api.example.com", 443, true, "/", "wild-deep"},
		{"x.y.api.example.com", 443, true, "/", "wild-deep"},
		{"other.example.com", 443, true, "/", "wild"},
		{"example.com", 443, true, "/", ""},
		{"evil-example.com", 443, true, "/", ""},
		{"api.example.com.evil.net", 443, true, "/", ""},
		{"tie.example.org", 443, true, "/", "a-tie"},
		{"127.0.0.1", 8443, true, "/", "ip"},
		{"127.0.0.1", 443, true, "/", ""},
		{"::1", 8443, true, "/", "v6"},
		{"", 443, true, "/", ""},
		{".example.com", 443, true, "/", ""},
	}
	for _, tt := range tests {
		c, ok := tab.Lookup(tt.host, tt.port, tt.tls, tt.path, nil)
		got := ""
		if ok {
			got = c.Service.Name
		}
		if got != tt.want {
			t.Errorf("Lookup(%q, %d, %v, %q) = %q, want %q", tt.host, tt.port, tt.tls, tt.path, got, tt.want)
		}
		if allowed := tab.AllowsHost(tt.host, tt.port, tt.tls, nil); allowed != (tt.want != "") {
			t.Errorf("AllowsHost(%q, %d, %v) = %v", tt.host, tt.port, tt.tls, allowed)
		}
	}
}

func TestTableLookupScope(t *testing.T) {
	tab := mustTable(t,
		pass("wild", "*.example.com"),
		pass("exact", "api.example.com"),
		pass("exact-path", "api.example.com/v1/*"),
		pass("a-tie", "tie.example.com"),
		pass("b-tie", "tie.example.com"),
	)
	only := func(names ...string) func(string) bool {
		return func(n string) bool { return slices.Contains(names, n) }
	}
	tests := []struct {
		host, path string
		scope      []string
		want       string
	}{
		{"api.example.com", "/v1/x", []string{"exact-path", "exact", "wild"}, "exact-path"},
		{"api.example.com", "/v1/x", []string{"exact", "wild"}, "exact"},
		{"api.example.com", "/v1/x", []string{"wild"}, "wild"},
		{"api.example.com", "/v1/x", []string{"exact-path"}, "exact-path"},
		{"api.example.com", "/v2/x", []string{"exact-path"}, ""},
		{"api.example.com", "/v1/x", nil, ""},
		{"tie.example.com", "/", []string{"b-tie", "a-tie"}, "a-tie"},
		{"tie.example.com", "/", []string{"b-tie"}, "b-tie"},
	}
	for _, tt := range tests {
		c, ok := tab.Lookup(tt.host, 443, true, tt.path, only(tt.scope...))
		got := ""
		if ok {
			got = c.Service.Name
		}
		if got != tt.want {
			t.Errorf("Lookup(%q, %q, scope %v) = %q, want %q", tt.host, tt.path, tt.scope, got, tt.want)
		}
	}
	if !tab.AllowsHost("api.example.com", 443, true, only("exact-path")) {
		t.Error("AllowsHost must accept a host covered only by a path-restricted service")
	}
	if tab.AllowsHost("api.example.com", 443, true, only()) {
		t.Error("AllowsHost with an empty scope")
	}
	var nilTable *Table
	if _, ok := nilTable.Lookup("api.example.com", 443, true, "/", nil); ok {
		t.Error("nil table matched")
	}
}

func TestTableDeterministicTies(t *testing.T) {
	svcs := []Service{pass("c", "x.io"), pass("a", "x.io"), pass("b", "x.io")}
	for i := 0; i < 6; i++ {
		// Rotate the input order; the answer must not change.
		svcs = append(svcs[1:], svcs[0])
		if i == 3 {
			svcs[0], svcs[1] = svcs[1], svcs[0]
		}
		c, ok := mustTable(t, svcs...).Lookup("x.io", 443, true, "/", nil)
		if !ok || c.Service.Name != "a" {
			t.Fatalf("order %v: got %v", svcs, c)
		}
	}
}

func TestNewTableErrors(t *testing.T) {
	if _, err := NewTable([]Service{pass("a", "x.io"), pass("a", "y.io")}); err == nil || !strings.Contains(err.Error(), "twice") {
		t.Errorf("duplicate names: %v", err)
	}
	if _, err := NewTable([]Service{pass("a", "x.io"), pass("b", "http://y.io")}); err == nil || !strings.Contains(err.Error(), `"b"`) {
		t.Errorf("invalid service: %v", err)
	}
	if tab, err := NewTable(nil); err != nil || len(tab.Services()) != 0 {
		t.Errorf("empty table: %v", err)
	}
}

func TestTableServicesAreCopies(t *testing.T) {
	in := []Service{
		{Name: "b", Host: "b.io", Auth: Auth{Type: "custom", Headers: map[string]string{"X-K": "{{ K }}"}}},
		pass("a", "a.io"),
	}
	tab := mustTable(t, in...)
	in[0].Auth.Headers["X-K"] = "changed"
	got := tab.Services()
	if len(got) != 2 || got[0].Name != "a" || got[1].Name != "b" {
		t.Fatalf("Services() = %+v", got)
	}
	if got[1].Auth.Headers["X-K"] != "{{ K }}" {
		t.Error("table shares the caller's header map")
	}
	got[1].Auth.Headers["X-K"] = "changed again"
	if tab.Services()[1].Auth.Headers["X-K"] != "{{ K }}" {
		t.Error("Services() exposes the table's header map")
	}
}

func TestCompiledUses(t *testing.T) {
	tab := mustTable(t, Service{Name: "s", Host: "x.io", Auth: Auth{Type: "basic", Username: "{{ U }}", Password: "P"}})
	c, _ := tab.Lookup("x.io", 443, true, "/", nil)
	for cred, want := range map[string]bool{"U": true, "P": true, "X": false, "": false} {
		if c.Uses(cred) != want {
			t.Errorf("Uses(%q) != %v", cred, want)
		}
	}
	if !reflect.DeepEqual(c.Credentials(), []string{"P", "U"}) {
		t.Errorf("Credentials() = %q", c.Credentials())
	}
}

func compiled(t *testing.T, a Auth) *Compiled {
	t.Helper()
	tab := mustTable(t, Service{Name: "s", Host: "x.io", Auth: a})
	c, ok := tab.Lookup("x.io", 443, true, "/", nil)
	if !ok {
		t.Fatal("no match")
	}
	return c
}

func TestInject(t *testing.T) {
	creds := map[string]string{
		"TOKEN": "tok-123",
		"USER":  "alice",
		"PASS":  "p@ss word",
		"A":     "aaa",
		"B":     "bbb",
	}
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	// wantCreds are the credentials Inject asks for; wantWritten the
	// secret-bearing strings it reports beyond the raw values.
	tests := []struct {
		name        string
		auth        Auth
		wantHeader  http.Header
		wantQuery   url.Values
		wantCreds   []string
		wantWritten []string
	}{
		{"bearer", Auth{Type: "bearer", Token: "TOKEN"},
			http.Header{"Authorization": {"Bearer tok-123"}, "Keep": {"1"}}, url.Values{"q": {"1"}},
			[]string{"TOKEN"}, nil},
		{"basic", Auth{Type: "basic", Username: "x-{{ USER }}", Password: "PASS"},
			http.Header{"Authorization": {"Basic " + b64("x-alice:p@ss word")}, "Keep": {"1"}}, url.Values{"q": {"1"}},
			[]string{"PASS", "USER"}, []string{b64("x-alice:p@ss word")}},
		{"basic no password", Auth{Type: "basic", Username: "{{TOKEN}}"},
			http.Header{"Authorization": {"Basic " + b64("tok-123:")}, "Keep": {"1"}}, url.Values{"q": {"1"}},
			[]string{"TOKEN"}, []string{b64("tok-123:")}},
		{"api-key default", Auth{Type: "api-key", Key: "TOKEN"},
			http.Header{"X-Api-Key": {"tok-123"}, "Authorization": {"client"}, "Keep": {"1"}}, url.Values{"q": {"1"}},
			[]string{"TOKEN"}, nil},
		{"api-key header prefix", Auth{Type: "api-key", Key: "TOKEN", Header: "authorization", Prefix: "Token "},
			http.Header{"Authorization": {"Token tok-123"}, "Keep": {"1"}}, url.Values{"q": {"1"}},
			[]string{"TOKEN"}, nil},
		{"custom", Auth{Type: "custom", Headers: map[string]string{"x-one": "{{ A }}", "X-Two": "{{A}}:{{ B }}", "X-Lit": "v2", "Authorization": "Key {{ B }}"}},
			http.Header{"X-One": {"aaa"}, "X-Two": {"aaa:bbb"}, "X-Lit": {"v2"}, "Authorization": {"Key bbb"}, "Keep": {"1"}}, url.Values{"q": {"1"}},
			[]string{"A", "B"}, nil},
		{"query", Auth{Type: "query", Key: "PASS", Param: "api_key"},
			http.Header{"Authorization": {"client"}, "Keep": {"1"}}, url.Values{"q": {"1"}, "api_key": {"p@ss word"}},
			[]string{"PASS"}, []string{"p%40ss+word"}},
		{"passthrough", Auth{Type: "passthrough"},
			http.Header{"Authorization": {"client"}, "Keep": {"1"}}, url.Values{"q": {"1"}},
			nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := compiled(t, tt.auth)
			// Client-sent values, including a non-canonical spelling,
			// must be replaced rather than added to.
			h := http.Header{"Authorization": {"client"}, "Keep": {"1"}}
			for name := range tt.wantHeader {
				if name != "Keep" && name != "Authorization" {
					h[strings.ToLower(name)] = []string{"client-lower"}
					h.Add(name, "client")
				}
			}
			q := url.Values{"q": {"1"}, "api_key": {"client"}}
			if tt.auth.Type != "query" {
				delete(q, "api_key")
			}
			r := &http.Request{Header: h, URL: &url.URL{Path: "/", RawQuery: q.Encode()}}
			var asked []string
			value := func(n string) (string, error) {
				asked = append(asked, n)
				if v, ok := creds[n]; ok {
					return v, nil
				}
				return "", errors.New("no such credential")
			}
			written, err := c.Inject(r, value)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(h, tt.wantHeader) {
				t.Errorf("header = %v, want %v", h, tt.wantHeader)
			}
			if got := r.URL.Query(); !reflect.DeepEqual(got, tt.wantQuery) {
				t.Errorf("query = %v, want %v", got, tt.wantQuery)
			}
			if !reflect.DeepEqual(asked, tt.wantCreds) {
				t.Errorf("asked for %q, want %q", asked, tt.wantCreds)
			}
			if !reflect.DeepEqual(written, tt.wantWritten) {
				t.Errorf("written = %q, want %q", written, tt.wantWritten)
			}
			if c.Injects() != (tt.auth.Type != "passthrough") {
				t.Errorf("Injects() = %v", c.Injects())
			}
		})
	}
}

func TestInjectFailuresWriteNothing(t *testing.T) {
	tests := []struct {
		name    string
		auth    Auth
		creds   map[string]string
		missing string
		wantErr string
	}{
		{"missing bearer", Auth{Type: "bearer", Token: "T"}, nil, "T", ""},
		{"missing second of two", Auth{Type: "custom", Headers: map[string]string{"X-A": "{{ A }}", "X-B": "{{ B }}"}},
			map[string]string{"A": "secret-a"}, "B", ""},
		{"missing first of two", Auth{Type: "basic", Username: "{{ A }}", Password: "B"},
			map[string]string{"B": "secret-b"}, "A", ""},
		{"missing query", Auth{Type: "query", Key: "K", Param: "k"}, nil, "K", ""},
		{"empty value", Auth{Type: "bearer", Token: "T"}, map[string]string{"T": ""}, "", "empty"},
		{"CRLF in header value", Auth{Type: "api-key", Key: "K"}, map[string]string{"K": "secret\r\nX-Evil: 1"}, "", "not allowed"},
		{"colon in basic username", Auth{Type: "basic", Username: "{{ U }}", Password: "P"},
			map[string]string{"U": "sec:ret", "P": "secret-p"}, "", "':'"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := compiled(t, tt.auth)
			h := http.Header{"Authorization": {"client"}}
			r := &http.Request{Header: h, URL: &url.URL{Path: "/", RawQuery: "k=client"}}
			missing := &missingError{}
			written, err := c.Inject(r, func(n string) (string, error) {
				if v, ok := tt.creds[n]; ok {
					return v, nil
				}
				missing.name = n
				return "", missing
			})
			if err == nil {
				t.Fatal("Inject succeeded")
			}
			if written != nil {
				t.Errorf("Inject returned %q with an error", written)
			}
			var unusable *UnusableCredentialError
			if tt.missing != "" {
				if err != error(missing) || missing.name != tt.missing {
					t.Errorf("err = %v, want the lookup's own error for %q", err, tt.missing)
				}
			} else if !errors.As(err, &unusable) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("err = %v, want it to contain %q", err, tt.wantErr)
			}
			for _, v := range tt.creds {
				if v != "" && strings.Contains(err.Error(), v) {
					t.Errorf("error %q reveals a secret", err)
				}
			}
			if !reflect.DeepEqual(h, http.Header{"Authorization": {"client"}}) || r.URL.RawQuery != "k=client" {
				t.Errorf("request modified on error: %v %v", h, r.URL.RawQuery)
			}
		})
	}
}

// missingError stands for the caller's lookup error.
type missingError struct{ name string }

func (e *missingError) Error() string { return "missing " + e.name }

func TestInjectIncompleteRequest(t *testing.T) {
	val := func(string) (string, error) { return "v", nil }
	if _, err := compiled(t, Auth{Type: "query", Key: "K", Param: "k"}).Inject(&http.Request{Header: http.Header{}}, val); err == nil {
		t.Error("query auth without a URL succeeded")
	}
	if _, err := compiled(t, Auth{Type: "bearer", Token: "K"}).Inject(&http.Request{URL: &url.URL{}}, val); err == nil {
		t.Error("header auth without a header succeeded")
	}
}

// TestConcurrentUse exercises the shared, immutable values from many
// goroutines; run with -race.
func TestConcurrentUse(t *testing.T) {
	tab := mustTable(t,
		Service{Name: "a", Host: "*.example.com", Auth: Auth{Type: "bearer", Token: "T"}},
		Service{Name: "b", Host: "api.example.com/v1/*", Auth: Auth{Type: "custom", Headers: map[string]string{"X-K": "k={{ T }}"}}},
	)
	done := make(chan error)
	for g := 0; g < 8; g++ {
		go func() {
			for i := 0; i < 200; i++ {
				c, ok := tab.Lookup("api.example.com", 443, true, "/v1/x", nil)
				if !ok {
					done <- errors.New("no match")
					return
				}
				r := &http.Request{Header: http.Header{}, URL: &url.URL{Path: "/v1/x"}}
				if _, err := c.Inject(r, func(string) (string, error) { return "secret-value", nil }); err != nil {
					done <- err
					return
				}
				if got := r.Header.Get("X-K"); got != "k=secret-value" {
					done <- fmt.Errorf("injected %q", got)
					return
				}
			}
			done <- nil
		}()
	}
	for g := 0; g < 8; g++ {
		if err := <-done; err != nil {
			t.Error(err)
		}
	}
}
