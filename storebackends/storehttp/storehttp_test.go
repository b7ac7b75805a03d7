package storehttp

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestValidateAddress(t *testing.T) {
	for _, ok := range []string{"https://vault.example:8200", "http://127.0.0.1:8200", "http://localhost:1", "http://[::1]:8200/"} {
		if err := ValidateAddress("vault", "address", ok); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "vault:8200", "ftp://x", "https://", "https://u:p@h", "https://h/path", "https://h?q", "http://10.0.0.1:8200", "http://vault.example"} {
		if err := ValidateAddress("vault", "address", bad); err == nil || !strings.HasPrefix(err.Error(), "vault: ") {
			t.Errorf("%q: %v", bad, err)
		}
	}
}

func TestClientRefusesRedirectsCapsBodiesAndIgnoresProxy(t *testing.T) {
	decoy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Errorf("the decoy proxy or redirect target was contacted: %s", r.URL)
	}))
	defer decoy.Close()
	t.Setenv("HTTPS_PROXY", decoy.URL)
	t.Setenv("HTTP_PROXY", decoy.URL)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/redirect":
			http.Redirect(w, r, decoy.URL+"/x", http.StatusTemporaryRedirect)
		case "/big":
			w.Write([]byte(strings.Repeat("a", 2048)))
		case "/exact":
			w.Write([]byte(strings.Repeat("a", 1024)))
		}
	}))
	defer srv.Close()
	c, tr, err := NewClient(Options{Service: "infisical", Timeout: 5 * time.Second, MaxBody: 1024})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.CloseIdleConnections()
	if tr.Proxy != nil {
		t.Fatal("transport has a proxy")
	}
	if _, err := c.Get(srv.URL + "/redirect"); err == nil || !strings.Contains(err.Error(), "redirect") {
		t.Fatalf("redirect: %v", err)
	}
	resp, err := c.Get(srv.URL + "/big")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(resp.Body); !errors.Is(err, ErrResponseTooLarge) {
		t.Fatalf("big body: %v", err)
	}
	resp, err = c.Get(srv.URL + "/exact")
	if err != nil {
		t.Fatal(err)
	}
	if b, err := io.ReadAll(resp.Body); err != nil || len(b) != 1024 {
		t.Fatalf("exact body: %d %v", len(b), err)
	}
}

func TestCACertFile(t *testing.T) {
	if _, err := NewTransport(Options{Service: "vault", CACertFile: "/nonexistent"}); err == nil {
		t.Fatal("missing CA file accepted")
	}
}
