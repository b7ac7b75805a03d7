package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

const testToken = "ava_0123456789abcdef0123456789abcdef"

// seen is one request the fake server received.
type seen struct {
	method, path, query, auth string
	body                      []byte
}

// server is a loopback management API: routes answer, every request is
// recorded.
type server struct {
	srv *httptest.Server
	mux *http.ServeMux
	mu  sync.Mutex
	got []seen
}

func newServer(t *testing.T) *server {
	t.Helper()
	s := &server{mux: http.NewServeMux()}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		s.mu.Lock()
		s.got = append(s.got, seen{r.Method, r.URL.Path, r.URL.RawQuery, r.Header.Get("Authorization"), body})
		s.mu.Unlock()
		s.mux.ServeHTTP(w, r)
	}))
	t.Cleanup(s.srv.Close)
	return s
}

// answer makes pattern answer status with v as JSON (nothing if v is nil).
func (s *server) answer(pattern string, status int, v any) {
	s.mux.HandleFunc(pattern, func(w http.ResponseWriter, _ *http.Request) {
		if v == nil {
			w.WriteHeader(status)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(v)
	})
}

func (s *server) requests() []seen {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]seen(nil), s.got...)
}

// only returns the one request the server received.
func (s *server) only(t *testing.T) seen {
	t.Helper()
	got := s.requests()
	if len(got) != 1 {
		t.Fatalf("the server received %d requests, want 1: %+v", len(got), got)
	}
	return got[0]
}

func (s *server) none(t *testing.T) {
	t.Helper()
	if got := s.requests(); len(got) != 0 {
		t.Errorf("the server received %d requests, want none: %+v", len(got), got)
	}
}

// result is one run of the command line.
type result struct {
	code           int
	stdout, stderr string
}

// call configures one run.
type call struct {
	env      map[string]string
	stdin    string
	terminal Terminal
	// ctx, after and stdout (a copy of what is printed, as it is) go
	// to Env as they are; nil for the defaults.
	ctx    context.Context
	after  func(time.Duration) <-chan time.Time
	stdout io.Writer
}

// run runs args against s (nil: no server) with the test token.
func run(t *testing.T, s *server, args ...string) result {
	t.Helper()
	return call{}.run(t, s, args...)
}

func (c call) run(t *testing.T, s *server, args ...string) result {
	t.Helper()
	env := map[string]string{"AGENT_VAULT_TOKEN": testToken, "HOME": t.TempDir()}
	if s != nil {
		env["AGENT_VAULT_ADDR"] = s.srv.URL
	}
	for k, v := range c.env {
		env[k] = v
	}
	var stdout, stderr bytes.Buffer
	var out io.Writer = &stdout
	if c.stdout != nil {
		out = io.MultiWriter(&stdout, c.stdout)
	}
	code := Main(args, Env{
		Getenv:   func(k string) string { return env[k] },
		Stdin:    strings.NewReader(c.stdin),
		Stdout:   out,
		Stderr:   &stderr,
		Terminal: c.terminal,
		Context:  c.ctx,
		After:    c.after,
	})
	return result{code, stdout.String(), stderr.String()}
}

func (r result) want(t *testing.T, code int) {
	t.Helper()
	if r.code != code {
		t.Fatalf("exit code %d, want %d\nstdout: %s\nstderr: %s", r.code, code, r.stdout, r.stderr)
	}
}

// stdoutIs fails unless stdout is exactly want.
func (r result) stdoutIs(t *testing.T, want string) {
	t.Helper()
	if r.stdout != want {
		t.Errorf("stdout:\n%s\nwant:\n%s", r.stdout, want)
	}
}

// stderrHas fails unless stderr holds every part.
func (r result) stderrHas(t *testing.T, parts ...string) {
	t.Helper()
	for _, p := range parts {
		if !strings.Contains(r.stderr, p) {
			t.Errorf("stderr lacks %q:\n%s", p, r.stderr)
		}
	}
}

// nowhere fails if secret shows up in either stream.
func (r result) nowhere(t *testing.T, secret string) {
	t.Helper()
	if strings.Contains(r.stdout, secret) || strings.Contains(r.stderr, secret) {
		t.Errorf("%q printed:\nstdout: %s\nstderr: %s", secret, r.stdout, r.stderr)
	}
}

// fakeTerminal answers prompts from a list.
type fakeTerminal struct {
	answers []string
	prompts []string
}

func (f *fakeTerminal) ReadSecret(prompt string) ([]byte, error) {
	f.prompts = append(f.prompts, prompt)
	if len(f.answers) == 0 {
		return nil, errors.New("no more input")
	}
	a := f.answers[0]
	f.answers = f.answers[1:]
	return []byte(a), nil
}

// decodeStrict decodes data into v, refusing unknown fields and
// trailing data: --json output must be exactly an apiwire value.
func decodeStrict(t *testing.T, data string, v any) {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("decoding %s: %v", data, err)
	}
	if dec.More() {
		t.Fatalf("more than one JSON value in %s", data)
	}
}

// body decodes a request body as JSON.
func body(t *testing.T, req seen) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(req.body, &m); err != nil {
		t.Fatalf("request body %q: %v", req.body, err)
	}
	return m
}
