package apiclient

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentvault/caddy-agent-vault/caddymodule/apiwire"
)

const testToken = "avt_c2VjcmV0LXRva2VuLWZvci10ZXN0cw"

// recorded is one request the fake server saw.
type recorded struct {
	method, path, rawPath, auth, contentType string
	body                                     []byte
}

// fake is a loopback server that answers every request with handler and
// records what it saw.
type fake struct {
	srv *httptest.Server
	mu  sync.Mutex
	got []recorded
}

func newFake(t *testing.T, handler http.HandlerFunc) *fake {
	t.Helper()
	f := &fake{}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		f.mu.Lock()
		f.got = append(f.got, recorded{r.Method, r.URL.Path, r.URL.RawPath, r.Header.Get("Authorization"), r.Header.Get("Content-Type"), body})
		f.mu.Unlock()
		handler(w, r)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fake) requests() []recorded {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]recorded(nil), f.got...)
}

func (f *fake) client(t *testing.T, opts ...Option) *Client {
	t.Helper()
	c, err := New(f.srv.URL, testToken, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func TestNewValidatesAddr(t *testing.T) {
	for addr, want := range map[string]string{
		"127.0.0.1:14321":            `AGENT_VAULT_ADDR "127.0.0.1:14321" has no scheme: use http://host:port`,
		"localhost:14321":            `AGENT_VAULT_ADDR "localhost:14321" has no scheme: use http://host:port`,
		"":                           "AGENT_VAULT_ADDR is empty: use http://host:port",
		"ftp://h":                    `AGENT_VAULT_ADDR "ftp://h": use http(s)://host:port`,
		"http://":                    `AGENT_VAULT_ADDR "http://": use http(s)://host:port`,
		"http://:80":                 `AGENT_VAULT_ADDR "http://:80": use http(s)://host:port`,
		"http://u:secret@h":          `AGENT_VAULT_ADDR "http://h" must not carry a user or password: use http://host:port and AGENT_VAULT_TOKEN`,
		"http://h/?q=1":              `AGENT_VAULT_ADDR "http://h": no query or fragment allowed`,
		"http://h/#f":                `AGENT_VAULT_ADDR "http://h": no query or fragment allowed`,
		"http://h/?":                 `AGENT_VAULT_ADDR "http://h": no query or fragment allowed`,
		"http://u:secret@h\x00":      "AGENT_VAULT_ADDR is not a valid URL: use http://host:port",
		"http://h:99999999999999999": `AGENT_VAULT_ADDR "http://h:99999999999999999": the port must be 1..65535`,
		// Only scheme and host are shown: a path or query may hold a
		// secret pasted in the wrong place.
		"https://h/secret-path/?token=secret": `AGENT_VAULT_ADDR "https://h": no query or fragment allowed`,
		"ftp://h/secret-path":                 `AGENT_VAULT_ADDR "ftp://h": use http(s)://host:port`,
		"u:secret@h:1/secret-path?x=secret":   `AGENT_VAULT_ADDR "h:1" has no scheme: use http://host:port`,
		"http://h.example/secret-path":        `AGENT_VAULT_ADDR "http://h.example" is plain http:// to a host that is not loopback: the token would cross the network in clear; use https://, or set AGENT_VAULT_INSECURE_HTTP=1 if that network is trusted`,
	} {
		_, err := New(addr, "t")
		if err == nil {
			t.Errorf("New(%q) accepted", addr)
			continue
		}
		if err.Error() != want {
			t.Errorf("New(%q) = %q, want %q", addr, err, want)
		}
		if strings.Contains(err.Error(), "secret") {
			t.Errorf("New(%q) error leaks the password: %v", addr, err)
		}
	}
	if _, err := New("127.0.0.1:1", "t", WithAddrSource("--addr")); err == nil || !strings.HasPrefix(err.Error(), `--addr "127.0.0.1:1" has no scheme`) {
		t.Errorf("WithAddrSource: %v", err)
	}
	for _, addr := range []string{"http://127.0.0.1:14321", "https://vault.internal", "http://[::1]:9/base/", "http://localhost"} {
		c, err := New(addr, "")
		if err != nil {
			t.Errorf("New(%q): %v", addr, err)
		} else if c.Addr().String() != addr {
			t.Errorf("Addr() = %q, want %q", c.Addr(), addr)
		}
	}
}

func TestNewValidatesToken(t *testing.T) {
	for _, token := range []string{"a b", "a\nb", "a\x00", "é", strings.Repeat("a", maxTokenLen+1)} {
		_, err := New(DefaultAddr, token)
		if err == nil {
			t.Errorf("token %q accepted", token)
		} else if strings.Contains(err.Error(), token) {
			t.Errorf("error echoes the token: %v", err)
		}
	}
	c, err := New(DefaultAddr, "ok")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.WithToken("bad token"); err == nil {
		t.Error("WithToken accepted a bad token")
	}
}

func TestNoProxyNoRedirectTimeout(t *testing.T) {
	var redirected bool
	f := newFake(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/elsewhere" {
			redirected = true
			return
		}
		http.Redirect(w, r, "/elsewhere", http.StatusTemporaryRedirect)
	})
	t.Setenv("HTTP_PROXY", "http://127.0.0.1:1")
	t.Setenv("http_proxy", "http://127.0.0.1:1")
	c := f.client(t)
	if tr, ok := c.http.Transport.(*http.Transport); !ok || tr.Proxy != nil {
		t.Error("the client may use a proxy")
	}
	if c.http.Timeout != DefaultTimeout {
		t.Errorf("timeout = %v", c.http.Timeout)
	}
	_, err := c.Credentials(context.Background())
	if StatusOf(err) != http.StatusTemporaryRedirect {
		t.Errorf("Credentials = %v, want a 307 *Error", err)
	}
	if redirected {
		t.Error("redirect followed")
	}
}

func TestTimeout(t *testing.T) {
	release := make(chan struct{})
	f := newFake(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	defer close(release)
	c := f.client(t, WithTimeout(50*time.Millisecond))
	_, err := c.Credentials(context.Background())
	if err == nil || !strings.Contains(err.Error(), "did not answer within 50ms") {
		t.Errorf("err = %v", err)
	}
}

func TestConnectionRefused(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := "http://" + l.Addr().String()
	l.Close() // nothing listens there now
	c, err := New(addr, testToken)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.CreateSession(context.Background(), apiwire.SessionRequest{})
	if !errors.Is(err, ErrUnreachable) {
		t.Fatalf("err = %v, want ErrUnreachable", err)
	}
	for _, want := range []string{addr, "not reachable", "make run", "agent-vault server"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}

func TestContextCancelled(t *testing.T) {
	f := newFake(t, func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() })
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := f.client(t).Credentials(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
}

func TestBoundedRead(t *testing.T) {
	f := newFake(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"credentials":[`)
		io.WriteString(w, strings.Repeat(" ", MaxResponseBytes))
		io.WriteString(w, `]}`)
	})
	_, err := f.client(t).Credentials(context.Background())
	if err == nil || !strings.Contains(err.Error(), "answered more than") {
		t.Errorf("err = %v", err)
	}
}

func TestErrorMessages(t *testing.T) {
	for name, tc := range map[string]struct {
		status      int
		contentType string
		body        string
		want        string
	}{
		"server words": {403, "application/json", `{"error":"agent ci-bot may not use service stripe: ask with POST /api/v1/requests {\"service\":\"stripe\"}"}`,
			`403 agent ci-bot may not use service stripe: ask with POST /api/v1/requests {"service":"stripe"}`},
		"control chars": {400, "application/json", `{"error":"bad\u001b[31m\nthing\u0000"}`, "400 bad[31m thing"},
		"token echoed":  {401, "application/json", `{"error":"token ` + testToken + ` is unknown"}`, "401 token [redacted] is unknown"},
		"token split by a control char": {401, "application/json", `{"error":"token avt_c2VjcmV0LXRva2VuLWZvci1\u00070ZXN0cw!"}`,
			"401 token [redacted]!"},
		"empty":      {502, "application/json", `{}`, "502 Bad Gateway"},
		"not json":   {500, "text/html", `<html>oops</html>`, "500 Internal Server Error"},
		"plain text": {502, "text/plain; charset=utf-8", "upstream down\n", "502 upstream down"},
		"long":       {400, "application/json", `{"error":"` + strings.Repeat("x", 2*MaxMessageRunes) + `"}`, "400 " + strings.Repeat("x", MaxMessageRunes) + "..."},
	} {
		t.Run(name, func(t *testing.T) {
			f := newFake(t, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", tc.contentType)
				w.WriteHeader(tc.status)
				io.WriteString(w, tc.body)
			})
			_, err := f.client(t).Credentials(context.Background())
			var apiErr *Error
			if !errors.As(err, &apiErr) || apiErr.Status != tc.status {
				t.Fatalf("err = %#v", err)
			}
			if err.Error() != tc.want {
				t.Errorf("error = %q\nwant    %q", err, tc.want)
			}
		})
	}
}

// Redaction hides the token only where it stands as a whole token, so a
// short token never garbles the server's words.
func TestRedactToken(t *testing.T) {
	for _, tc := range []struct{ s, token, want string }{
		{"bad token t", "t", "bad token [redacted]"},
		{"the token test is bad", "t", "the token test is bad"},
		{"t", "t", "[redacted]"},
		{"x t.", "t", "x [redacted]."},
		{"(abc) abc abcd xabc abc_ -abc", "abc", "([redacted]) [redacted] abcd xabc abc_ -abc"},
		{"token=" + testToken + ";", testToken, "token=[redacted];"},
		{"no token here", "", "no token here"},
	} {
		if got := redactToken(tc.s, tc.token); got != tc.want {
			t.Errorf("redactToken(%q, %q) = %q, want %q", tc.s, tc.token, got, tc.want)
		}
	}
}

func TestPrintable(t *testing.T) {
	if got := Printable(" a\x00b\nc\x1b ", 10); got != "abc" {
		t.Errorf("Printable = %q", got)
	}
	if got := Printable("abcdef", 3); got != "abc..." {
		t.Errorf("Printable = %q", got)
	}
}

func TestValidID(t *testing.T) {
	for _, id := range []string{"abc", "A-b_c.d~9", "sess_0123456789abcdef"} {
		if !ValidID(id) {
			t.Errorf("%q rejected", id)
		}
	}
	for _, id := range []string{"", ".", "..", "a/b", "a%2F", "a b", "é", "a?b", strings.Repeat("a", maxIDLen+1)} {
		if ValidID(id) {
			t.Errorf("%q accepted", id)
		}
	}
}

func TestEndpointEscapesSegments(t *testing.T) {
	c, err := New("http://127.0.0.1:1/pre%20fix/", "")
	if err != nil {
		t.Fatal(err)
	}
	u, err := c.endpoint("api", "v1", "credentials", "a/b?c#d")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := u.String(), "http://127.0.0.1:1/pre%20fix/api/v1/credentials/a%2Fb%3Fc%23d"; got != want {
		t.Errorf("endpoint = %q, want %q", got, want)
	}
	for _, bad := range []string{"", ".", ".."} {
		if _, err := c.endpoint("api", bad); err == nil {
			t.Errorf("segment %q accepted", bad)
		}
	}
}

func TestCreateSession(t *testing.T) {
	want := apiwire.Session{
		ID:             "sess_0123abcd",
		Token:          "avs_secret",
		ProxyURL:       "http://127.0.0.1:14322",
		CAPEM:          "pem",
		ExpiresAt:      time.Date(2030, 1, 2, 3, 4, 5, 123456789, time.UTC),
		Services:       []string{"github"},
		Placeholders:   map[string]string{"GITHUB_TOKEN": "agvph_x"},
		Agent:          "local",
		LeaseTimeout:   "30s",
		LeaseExpiresAt: new(time.Date(2030, 1, 2, 3, 4, 35, 0, time.UTC)),
	}
	f := newFake(t, func(w http.ResponseWriter, r *http.Request) { writeJSON(w, http.StatusCreated, want) })
	got, err := f.client(t).CreateSession(context.Background(), apiwire.SessionRequest{Services: []string{"github"}, TTL: "1h", Lease: true})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(*got, want) {
		t.Errorf("session = %+v\nwant %+v", *got, want)
	}
	reqs := f.requests()
	if len(reqs) != 1 {
		t.Fatalf("requests = %d", len(reqs))
	}
	r := reqs[0]
	if r.method != "POST" || r.path != "/api/v1/sessions" || r.auth != "Bearer "+testToken || r.contentType != "application/json" {
		t.Errorf("request = %+v", r)
	}
	if string(r.body) != `{"services":["github"],"ttl":"1h","lease":true}` {
		t.Errorf("body = %s", r.body)
	}
}

func TestCreateSessionMalformed(t *testing.T) {
	for name, tc := range map[string]struct {
		body   string
		wantID string
		inErr  string
	}{
		"bad expires_at": {`{"id":"sess_1","expires_at":"soon"}`, "sess_1", "malformed response"},
		"bad token type": {`{"id":"sess_1","token":7}`, "sess_1", "malformed response"},
		"not json":       {`nope`, "", "malformed response"},
		"unsafe id":      {`{"id":"../../admin"}`, "", "invalid session id"},
		"no id":          {`{"token":"x"}`, "", "invalid session id"},
	} {
		t.Run(name, func(t *testing.T) {
			f := newFake(t, func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(http.StatusCreated)
				io.WriteString(w, tc.body)
			})
			sess, err := f.client(t).CreateSession(context.Background(), apiwire.SessionRequest{})
			if err == nil || !strings.Contains(err.Error(), tc.inErr) {
				t.Errorf("err = %v, want %q", err, tc.inErr)
			}
			if tc.wantID == "" && sess != nil {
				t.Errorf("session = %+v, want nil", sess)
			}
			if tc.wantID != "" && (sess == nil || sess.ID != tc.wantID) {
				t.Errorf("session = %+v, want id %s for revocation", sess, tc.wantID)
			}
		})
	}
}

func TestCurrentSession(t *testing.T) {
	f := newFake(t, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, apiwire.Session{ID: "sess_1", ProxyURL: "http://127.0.0.1:2", Placeholders: map[string]string{"A": "b"}})
	})
	c, err := f.client(t).WithToken("avs_the_session_token")
	if err != nil {
		t.Fatal(err)
	}
	sess, err := c.CurrentSession(context.Background())
	if err != nil || sess.ID != "sess_1" || sess.Placeholders["A"] != "b" {
		t.Fatalf("CurrentSession = %+v, %v", sess, err)
	}
	r := f.requests()[0]
	if r.method != "GET" || r.path != "/api/v1/session" || r.auth != "Bearer avs_the_session_token" {
		t.Errorf("request = %+v", r)
	}
}

func TestRenewSession(t *testing.T) {
	until := time.Date(2030, 1, 1, 0, 0, 30, 0, time.UTC)
	f := newFake(t, func(w http.ResponseWriter, r *http.Request) {
		if r.PathValue("id") == "" && strings.HasSuffix(r.URL.Path, "/gone/renew") {
			writeJSON(w, http.StatusGone, apiwire.Error{Error: "session gone has ended"})
			return
		}
		writeJSON(w, http.StatusOK, apiwire.LeaseRenewal{ID: "sess_1", LeaseExpiresAt: until})
	})
	c := f.client(t)
	got, err := c.RenewSession(context.Background(), "sess_1")
	if err != nil || got.ID != "sess_1" || !got.LeaseExpiresAt.Equal(until) {
		t.Fatalf("RenewSession = %+v, %v", got, err)
	}
	if r := f.requests()[0]; r.method != "POST" || r.path != "/api/v1/sessions/sess_1/renew" {
		t.Errorf("request = %+v", r)
	}
	_, err = c.RenewSession(context.Background(), "gone")
	if StatusOf(err) != http.StatusGone || err.Error() != "410 session gone has ended" {
		t.Errorf("RenewSession(gone) = %v", err)
	}
	if _, err := c.RenewSession(context.Background(), "../x"); err == nil || len(f.requests()) != 2 {
		t.Errorf("an unsafe id reached the server or was accepted: %v", err)
	}
}

func TestRevokeSession(t *testing.T) {
	f := newFake(t, func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/unknown") {
			writeJSON(w, http.StatusNotFound, apiwire.Error{Error: "no session unknown"})
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	c, err := New(f.srv.URL+"/prefix/", "tok")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.RevokeSession(context.Background(), "abc-1"); err != nil {
		t.Fatal(err)
	}
	if r := f.requests()[0]; r.method != "DELETE" || r.path != "/prefix/api/v1/sessions/abc-1" || r.auth != "Bearer tok" {
		t.Errorf("request = %+v", r)
	}
	if err := c.RevokeSession(context.Background(), "unknown"); StatusOf(err) != http.StatusNotFound {
		t.Errorf("RevokeSession(unknown) = %v, want a 404 *Error", err)
	}
	for _, id := range []string{"..", "a/b", ""} {
		if err := c.RevokeSession(context.Background(), id); err == nil {
			t.Errorf("id %q accepted", id)
		}
	}
	if n := len(f.requests()); n != 2 {
		t.Errorf("requests = %d, want 2 (invalid ids never sent)", n)
	}
}

func TestSessions(t *testing.T) {
	f := newFake(t, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, apiwire.SessionList{Sessions: []apiwire.SessionInfo{{ID: "s1", Status: apiwire.SessionActive}}})
	})
	list, err := f.client(t).Sessions(context.Background())
	if err != nil || len(list) != 1 || list[0].ID != "s1" {
		t.Errorf("Sessions = %+v, %v", list, err)
	}
}

func TestCredentials(t *testing.T) {
	f := newFake(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.Method {
		case http.MethodGet:
			io.WriteString(w, `{"credentials":null}`)
		case http.MethodPut:
			writeJSON(w, http.StatusCreated, apiwire.Credential{Name: "API_KEY"})
		case http.MethodDelete:
			w.WriteHeader(http.StatusNoContent)
		}
	})
	c := f.client(t)
	list, err := c.Credentials(context.Background())
	if err != nil || list == nil || len(list) != 0 {
		t.Errorf("Credentials = %#v, %v, want an empty non-nil list", list, err)
	}
	m, err := c.PutCredential(context.Background(), "API_KEY", "the-value")
	if err != nil || m.Name != "API_KEY" {
		t.Errorf("PutCredential = %+v, %v", m, err)
	}
	if err := c.DeleteCredential(context.Background(), "API_KEY"); err != nil {
		t.Error(err)
	}
	reqs := f.requests()
	if reqs[1].method != "PUT" || reqs[1].path != "/api/v1/credentials/API_KEY" || string(reqs[1].body) != `{"value":"the-value"}` {
		t.Errorf("put = %+v", reqs[1])
	}
	if reqs[2].method != "DELETE" || reqs[2].path != "/api/v1/credentials/API_KEY" {
		t.Errorf("delete = %+v", reqs[2])
	}
}

func TestCAPEM(t *testing.T) {
	f := newFake(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/x-pem-file")
		io.WriteString(w, "-----BEGIN CERTIFICATE-----\n")
	})
	c, err := New(f.srv.URL, "")
	if err != nil {
		t.Fatal(err)
	}
	pem, err := c.CAPEM(context.Background())
	if err != nil || string(pem) != "-----BEGIN CERTIFICATE-----\n" {
		t.Errorf("CAPEM = %q, %v", pem, err)
	}
	if r := f.requests()[0]; r.path != "/api/v1/ca.pem" || r.auth != "" {
		t.Errorf("request = %+v (an empty token sends no Authorization)", r)
	}
}

func TestIsLoopback(t *testing.T) {
	for host, want := range map[string]bool{
		"127.0.0.1": true, "127.1.2.3": true, "[::1]": true, "localhost": true, "LocalHost": true,
		"128.0.0.1": false, "10.0.0.1": false, "[::2]": false, "localhost.example": false, "vault.internal": false,
		"[::ffff:127.0.0.1]": true, "0.0.0.0": false,
	} {
		u, err := url.Parse("http://" + host + ":1")
		if err != nil {
			t.Fatal(err)
		}
		if got := IsLoopback(u); got != want {
			t.Errorf("IsLoopback(%s) = %v, want %v", host, got, want)
		}
	}
}

// Plain http:// carries the token in clear: only to loopback, unless
// AGENT_VAULT_INSECURE_HTTP=1 (WithInsecureHTTP) says the network is
// trusted. https is always fine.
func TestNewRefusesCleartextOffLoopback(t *testing.T) {
	for _, addr := range []string{"http://10.0.0.5:14321", "http://vault.internal", "http://[fd00::1]:1"} {
		_, err := New(addr, "t")
		if err == nil || !strings.Contains(err.Error(), "use https://, or set AGENT_VAULT_INSECURE_HTTP=1") {
			t.Errorf("New(%q) = %v, want a refusal saying what to do", addr, err)
		}
		if _, err := New(addr, "t", WithInsecureHTTP(true)); err != nil {
			t.Errorf("New(%q, WithInsecureHTTP) = %v", addr, err)
		}
	}
	for _, addr := range []string{"https://10.0.0.5:14321", "http://127.0.0.2:1", "http://localhost:1", "http://[::1]:1"} {
		if _, err := New(addr, "t"); err != nil {
			t.Errorf("New(%q) = %v", addr, err)
		}
	}
}
