package caddymodule

import (
	"net/http/httptest"
	"strings"
	"testing"
)

// The retry writes the new token escaped as injection wrote it, in
// the query and the path as in headers.
func TestReplaceTokenEscapes(t *testing.T) {
	old, tok := "ya29.a+b/c=", "ya29.d+e/f="
	r := httptest.NewRequest("GET", "https://api.example/v1/ya29.a+b%2Fc=/x?access_token=ya29.a%2Bb%2Fc%3D&q=1", nil)
	r.Header.Set("Authorization", "Bearer "+old)
	if !replaceToken(r, old, tok) {
		t.Fatal("old token not found")
	}
	if got := r.URL.RawQuery; got != "access_token=ya29.d%2Be%2Ff%3D&q=1" {
		t.Errorf("query %q", got)
	}
	if got := r.URL.Query().Get("access_token"); got != tok {
		t.Errorf("query value %q", got)
	}
	if got := r.URL.Path; got != "/v1/"+tok+"/x" {
		t.Errorf("path %q", got)
	}
	if got := r.URL.EscapedPath(); strings.Contains(got, "ya29.a") {
		t.Errorf("escaped path %q", got)
	}
	if got := r.Header.Get("Authorization"); got != "Bearer "+tok {
		t.Errorf("header %q", got)
	}
}

// Only idempotent bodiless requests are sent twice.
func TestTokenRetryOnlyIdempotent(t *testing.T) {
	for method, want := range map[string]bool{"GET": true, "HEAD": true, "OPTIONS": true, "PUT": true, "DELETE": true, "POST": false, "PATCH": false, "CONNECT": false} {
		if got := retryable(httptest.NewRequest(method, "https://api.example/", nil)); got != want {
			t.Errorf("%s bodiless: retry %v, want %v", method, got, want)
		}
	}
	if retryable(httptest.NewRequest("PUT", "https://api.example/", strings.NewReader("x"))) {
		t.Error("a PUT with a body retried")
	}
}
