package e2etest

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// tokenStub is a token server on loopback that follows RFC 6749 (§4.4,
// §6: form-encoded POST, client_secret_basic or _post, rotation of
// refresh tokens) and GitHub's installation access-token endpoint
// (RS256 App JWT, 201 {token, expires_at}). It also serves the API the
// tokens are for: /api/... answers 200 with a valid token and 401
// otherwise; /api/reject always 401.
type tokenStub struct {
	*httptest.Server
	mu       sync.Mutex
	refresh  string          // the refresh token it accepts now
	valid    map[string]bool // access tokens it issued and accepts
	issued   []string        // every access and refresh token, to grep for
	lifetime int             // expires_in of the next answer, seconds
	oauth    atomic.Int64    // calls of /token
	gh       atomic.Int64    // calls of the GitHub endpoint
	api      atomic.Int64    // calls of /api/...
	down     atomic.Bool
	ghKey    *rsa.PublicKey
	ghClaims map[string]any
	ghErr    error
	gotRT    []string // refresh tokens presented, in order
}

func newTokenStub(t *testing.T, ca *testCA) *tokenStub {
	st := &tokenStub{refresh: "rt-initial-0001", valid: map[string]bool{}, lifetime: 3600}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /token", st.token)
	mux.HandleFunc("POST /gh/app/installations/{id}/access_tokens", st.github)
	mux.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		st.api.Add(1)
		tok := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		st.mu.Lock()
		ok := st.valid[tok]
		st.mu.Unlock()
		if !ok || r.URL.Path == "/api/reject" {
			w.WriteHeader(http.StatusUnauthorized)
			io.WriteString(w, "bad token "+tok+"\n")
			return
		}
		io.WriteString(w, "hello, you sent "+r.Header.Get("Authorization")+"\n")
	})
	srv := httptest.NewUnstartedServer(mux)
	srv.Listener.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv.Listener = ln
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{ca.leaf(t)}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	st.Server = srv
	return st
}

func (st *tokenStub) newToken(prefix string) string {
	b := make([]byte, 12)
	rand.Read(b)
	tok := prefix + base64.RawURLEncoding.EncodeToString(b)
	st.issued = append(st.issued, tok)
	return tok
}

func (st *tokenStub) token(w http.ResponseWriter, r *http.Request) {
	st.oauth.Add(1)
	if st.down.Load() {
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	if r.Header.Get("Content-Type") != "application/x-www-form-urlencoded" || r.ParseForm() != nil {
		w.WriteHeader(400)
		io.WriteString(w, `{"error":"invalid_request"}`)
		return
	}
	id, secret, basic := r.BasicAuth()
	if basic {
		id, _ = url.QueryUnescape(id)
		secret, _ = url.QueryUnescape(secret)
	} else {
		id, secret = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	}
	if id != "123-abc.apps.googleusercontent.com" || secret != "GOCSPX-client-secret" {
		w.WriteHeader(401)
		io.WriteString(w, `{"error":"invalid_client"}`)
		return
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	resp := map[string]any{"token_type": "Bearer", "expires_in": st.lifetime}
	switch r.PostForm.Get("grant_type") {
	case "refresh_token":
		st.gotRT = append(st.gotRT, r.PostForm.Get("refresh_token"))
		if r.PostForm.Get("refresh_token") != st.refresh {
			w.WriteHeader(400)
			io.WriteString(w, `{"error":"invalid_grant"}`)
			return
		}
		st.refresh = st.newToken("1//rt-")
		resp["refresh_token"] = st.refresh
	case "client_credentials":
	default:
		w.WriteHeader(400)
		io.WriteString(w, `{"error":"unsupported_grant_type"}`)
		return
	}
	tok := st.newToken("ya29.")
	st.valid[tok] = true
	resp["access_token"] = tok
	json.NewEncoder(w).Encode(resp)
}

func (st *tokenStub) github(w http.ResponseWriter, r *http.Request) {
	st.gh.Add(1)
	claims, err := verifyJWT(strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "), st.ghKey)
	st.mu.Lock()
	defer st.mu.Unlock()
	st.ghClaims, st.ghErr = claims, err
	if err != nil || r.Header.Get("Accept") != "application/vnd.github+json" || r.PathValue("id") != "456" {
		w.WriteHeader(401)
		io.WriteString(w, `{"message":"A JSON web token could not be decoded"}`)
		return
	}
	tok := st.newToken("ghs_")
	st.valid[tok] = true
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(201)
	fmt.Fprintf(w, `{"token":%q,"expires_at":%q}`, tok, time.Now().Add(time.Hour).UTC().Format(time.RFC3339))
}

// verifyJWT checks an RS256 compact JWT against pub and returns its
// claims.
func verifyJWT(jwt string, pub *rsa.PublicKey) (map[string]any, error) {
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 || pub == nil {
		return nil, errors.New("not a JWT")
	}
	var hdr map[string]string
	h, _ := base64.RawURLEncoding.DecodeString(parts[0])
	if json.Unmarshal(h, &hdr) != nil || hdr["alg"] != "RS256" {
		return nil, fmt.Errorf("header %s", h)
	}
	sig, _ := base64.RawURLEncoding.DecodeString(parts[2])
	sum := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if err := rsa.VerifyPKCS1v15(pub, crypto.SHA256, sum[:], sig); err != nil {
		return nil, err
	}
	var claims map[string]any
	c, _ := base64.RawURLEncoding.DecodeString(parts[1])
	return claims, json.Unmarshal(c, &claims)
}

func (st *tokenStub) secrets() []string {
	st.mu.Lock()
	defer st.mu.Unlock()
	return append([]string(nil), st.issued...)
}

// curlCode runs one curl through the proxy and returns the body and
// the HTTP status.
func curlCode(t *testing.T, s *server, caFile, token, target string) (string, int) {
	t.Helper()
	cmd := exec.Command("curl", "-sS", "--max-time", "20", "-w", "\n%{http_code}",
		"--proxy", "http://"+s.proxyAddr, "--proxy-user", "av:"+token, "--cacert", caFile, target)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("curl: %v %s", err, out)
	}
	body := strings.TrimSpace(string(out))
	i := strings.LastIndex(body, "\n")
	code, _ := strconv.Atoi(body[i+1:])
	return body[:max(i, 0)], code
}

// waitFor retries f (each try is a real request) until it reports
// true, for at most 20 s (pollUntil of cluster_bench_test.go).
func waitFor(t *testing.T, what string, f func() bool) {
	t.Helper()
	if !pollUntil(20*time.Second, f) {
		t.Fatalf("timed out waiting for %s", what)
	}
}

// TestTokenSourceJourneys: credentials that mint their own tokens, end
// to end through the proxy with real curl.
func TestTokenSourceJourneys(t *testing.T) {
	top := t
	ca := newTestCA(t)
	st := newTokenStub(t, ca)
	s := startServer(t, ca, serverOpts{})
	base := st.URL

	s.putCredential("GMAIL_CLIENT_SECRET", "GOCSPX-client-secret")
	s.putCredential("GMAIL_REFRESH_TOKEN", "rt-initial-0001")
	st.lifetime = 2
	var put map[string]any
	if code := s.api("PUT", "/api/v1/credentials/GMAIL", map[string]any{"kind": "oauth2_refresh", "token_url": base + "/token",
		"client_id": "123-abc.apps.googleusercontent.com", "client_secret": "GMAIL_CLIENT_SECRET", "refresh_token": "GMAIL_REFRESH_TOKEN",
		"scopes": []string{"https://www.googleapis.com/auth/gmail.readonly"}}, &put); code != http.StatusCreated || put["kind"] != "oauth2_refresh" {
		t.Fatalf("PUT token source: %d %v", code, put)
	}
	// The contract's refusals: unknown fields and kinds, values where names go.
	for _, bad := range []map[string]any{
		{"kind": "saml"},
		{"kind": "github_app", "app_id": "1", "private_key": "K", "installation_id": "2", "colour": "red"},
		{"kind": "oauth2_refresh", "token_url": base + "/token", "client_id": "c", "refresh_token": "1//not a name"},
		{"kind": "oauth2_refresh", "value": "x"},
		// Field names match exactly; another kind's field is refused even when null.
		{"kind": "oauth2_client_credentials", "TOKEN_URL": base + "/token", "client_id": "c", "client_secret": "GMAIL_CLIENT_SECRET"},
		{"kind": "oauth2_client_credentials", "token_url": base + "/token", "client_id": "c", "client_secret": "GMAIL_CLIENT_SECRET", "refresh_token": nil},
		// A secret pasted where a name belongs (a valid name's shape, too long).
		{"kind": "oauth2_client_credentials", "token_url": base + "/token", "client_id": "c", "client_secret": "GOCSPX_" + strings.Repeat("k", 60)},
		// An input that mints tokens itself, or the source itself.
		{"kind": "oauth2_client_credentials", "token_url": base + "/token", "client_id": "c", "client_secret": "GMAIL"},
		{"kind": "oauth2_client_credentials", "token_url": base + "/token", "client_id": "c", "client_secret": "BAD"},
	} {
		var answer map[string]any
		if code := s.api("PUT", "/api/v1/credentials/BAD", bad, &answer); code != http.StatusBadRequest {
			t.Errorf("PUT %v: %d, want 400", bad, code)
		}
		if strings.Contains(fmt.Sprint(answer), strings.Repeat("k", 60)) {
			t.Errorf("the answer echoes the pasted value: %v", answer)
		}
	}
	// A second source on the same refresh token is 409.
	if code := s.api("PUT", "/api/v1/credentials/GMAIL2", map[string]any{"kind": "oauth2_refresh", "token_url": base + "/token",
		"client_id": "c", "refresh_token": "GMAIL_REFRESH_TOKEN"}, nil); code != http.StatusConflict {
		t.Errorf("second reader of one refresh token: %d, want 409", code)
	}
	// A missing input is named to the operator only, never logged.
	var warned struct{ Warnings []string }
	if code := s.api("PUT", "/api/v1/credentials/LATER", map[string]any{"kind": "oauth2_client_credentials", "token_url": base + "/token",
		"client_id": "c", "client_secret": "NOT_STORED_YET_CS"}, &warned); code != http.StatusCreated || !strings.Contains(fmt.Sprint(warned.Warnings), "NOT_STORED_YET_CS") {
		t.Errorf("PUT with a missing input: %d %v", code, warned)
	}
	host := strings.TrimPrefix(base, "https://")
	s.putService("gmail", map[string]any{"host": host + "/api/gmail/*", "auth": map[string]any{"type": "bearer", "token": "GMAIL"}})
	s.putService("reject", map[string]any{"host": host + "/api/reject", "auth": map[string]any{"type": "bearer", "token": "GMAIL"}})
	sess := s.newSession(t, nil, "30m")
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(caFile, []byte(sess.CAPEM), 0o600)
	var agentSaw strings.Builder
	var logs []*logBuffer
	get := func(path string) (string, int) {
		body, code := curlCode(t, s, caFile, sess.Token, base+path)
		agentSaw.WriteString(body + "\n")
		return body, code
	}

	t.Run("first use fetches", func(t *testing.T) {
		body, code := get("/api/gmail/messages")
		if code != 200 || !strings.Contains(body, "hello") || st.oauth.Load() != 1 {
			t.Fatalf("%d %q after %d token calls", code, body, st.oauth.Load())
		}
	})
	t.Run("expiry triggers refresh", func(t *testing.T) {
		waitFor(t, "a refresh", func() bool {
			_, code := get("/api/gmail/messages")
			if code != 200 {
				t.Fatalf("status %d while refreshing", code)
			}
			return st.oauth.Load() >= 2
		})
	})
	st.mu.Lock()
	st.lifetime = 3600
	st.mu.Unlock()
	// Let the short-lived one be replaced by a long-lived one.
	waitFor(t, "a long-lived token", func() bool {
		get("/api/gmail/messages")
		var list struct{ Credentials []map[string]any }
		s.mustAPI("GET", "/api/v1/credentials", nil, 200, &list)
		for _, c := range list.Credentials {
			if c["name"] == "GMAIL" {
				exp, _ := time.Parse(time.RFC3339Nano, fmt.Sprint(c["expires_at"]))
				return time.Until(exp) > time.Hour/2
			}
		}
		return false
	})

	t.Run("401 refreshes once and never loops", func(t *testing.T) {
		before, apiBefore := st.oauth.Load(), st.api.Load()
		_, code := get("/api/reject")
		if code != 401 {
			t.Fatalf("status %d", code)
		}
		if d, a := st.oauth.Load()-before, st.api.Load()-apiBefore; d != 1 || a != 2 {
			t.Fatalf("a 401 caused %d refreshes and %d upstream requests, want 1 and 2", d, a)
		}
		// The new token works; nothing else refreshed.
		if _, code := get("/api/gmail/messages"); code != 200 || st.oauth.Load()-before != 1 {
			t.Fatalf("after the 401: %d, %d refreshes", code, st.oauth.Load()-before)
		}
	})

	t.Run("a persistent 401 does not refresh per request", func(t *testing.T) {
		before := st.oauth.Load()
		for range 10 {
			if _, code := get("/api/reject"); code != 401 {
				t.Fatalf("status %d", code)
			}
		}
		if d := st.oauth.Load() - before; d > 1 {
			t.Fatalf("10 rejected requests caused %d refreshes", d)
		}
	})

	t.Run("an accepted request ends the 401 back-off", func(t *testing.T) {
		// The token works elsewhere: a later 401 refreshes at once again.
		if _, code := get("/api/gmail/messages"); code != 200 {
			t.Fatalf("status %d", code)
		}
		before := st.oauth.Load()
		if _, code := get("/api/reject"); code != 401 {
			t.Fatalf("status %d", code)
		}
		if d := st.oauth.Load() - before; d != 1 {
			t.Fatalf("a 401 after an accepted request caused %d refreshes, want 1", d)
		}
	})

	t.Run("burst of 100 causes one fetch", func(t *testing.T) {
		s.putCredential("CC_SECRET", "GOCSPX-client-secret")
		s.mustAPI("PUT", "/api/v1/credentials/CC", map[string]any{"kind": "oauth2_client_credentials", "token_url": base + "/token",
			"client_id": "123-abc.apps.googleusercontent.com", "client_secret": "CC_SECRET", "client_auth": "client_secret_post",
			"audience": "https://api.example"}, http.StatusCreated, nil)
		s.putService("cc", map[string]any{"host": host + "/api/cc/*", "auth": map[string]any{"type": "bearer", "token": "CC"}})
		// Four sessions of 25: under max_concurrent_per_session's default (64).
		var burst [4]session
		for i := range burst {
			burst[i] = s.newSession(t, nil, "10m")
		}
		before := st.oauth.Load()
		var wg sync.WaitGroup
		codes := make(chan string, 100)
		for i := range 100 {
			wg.Add(1)
			burst := burst[i%4]
			go func() {
				defer wg.Done()
				cmd := exec.Command("curl", "-sS", "--max-time", "30", "-o", "/dev/null", "-w", "%{http_code}",
					"--proxy", "http://"+s.proxyAddr, "--proxy-user", "av:"+burst.Token, "--cacert", caFile, base+"/api/cc/x")
				out, _ := cmd.CombinedOutput()
				codes <- string(out)
			}()
		}
		wg.Wait()
		close(codes)
		for c := range codes {
			if c != "200" {
				t.Fatalf("a burst request answered %q", c)
			}
		}
		if n := st.oauth.Load() - before; n != 1 {
			t.Fatalf("a burst of 100 caused %d fetches, want 1", n)
		}
	})

	t.Run("github app", func(t *testing.T) {
		key, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			t.Fatal(err)
		}
		st.mu.Lock()
		st.ghKey = &key.PublicKey
		st.mu.Unlock()
		// A value holds no line break: the PEM is stored as base64 -w0 makes it.
		s.putCredential("APP_KEY", base64.StdEncoding.EncodeToString(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})))
		s.mustAPI("PUT", "/api/v1/credentials/GH", map[string]any{"kind": "github_app", "app_id": "123", "private_key": "APP_KEY",
			"installation_id": "456", "api_url": base + "/gh"}, http.StatusCreated, nil)
		s.putService("gh", map[string]any{"host": host + "/api/gh/*", "auth": map[string]any{"type": "bearer", "token": "GH"}})
		gh := s.newSession(t, nil, "10m")
		body, code := curlCode(t, s, caFile, gh.Token, base+"/api/gh/repos")
		agentSaw.WriteString(body)
		if code != 200 || st.gh.Load() != 1 {
			t.Fatalf("%d %q, %d GitHub calls", code, body, st.gh.Load())
		}
		st.mu.Lock()
		claims, verr := st.ghClaims, st.ghErr
		st.mu.Unlock()
		if verr != nil {
			t.Fatalf("the App JWT does not verify against the public key: %v", verr)
		}
		iat, exp, now := int64(claims["iat"].(float64)), int64(claims["exp"].(float64)), time.Now().Unix()
		if claims["iss"] != "123" || iat > now-50 || iat < now-120 || exp-iat > 600 || exp <= now {
			t.Fatalf("claims %v (now %d)", claims, now)
		}
	})

	t.Run("rotation persists across a restart", func(t *testing.T) {
		s.stop()
		// On the parent test: the later subtests use it.
		s2 := startServer(top, ca, serverOpts{dataDir: s.dataDir})
		before := st.oauth.Load()
		body, code := curlCode(t, s2, caFile, sess.Token, base+"/api/gmail/after-restart")
		agentSaw.WriteString(body)
		st.mu.Lock()
		last := st.gotRT[len(st.gotRT)-1]
		st.mu.Unlock()
		if code != 200 || st.oauth.Load() != before+1 || last == "rt-initial-0001" {
			t.Fatalf("after restart: %d %q, refresh token presented %q", code, body, last)
		}
		logs = append(logs, s.logs)
		s = s2
	})

	t.Run("endpoint down past expiry gives 503", func(t *testing.T) {
		st.mu.Lock()
		st.lifetime = 1
		st.mu.Unlock()
		// Force a refresh onto the short lifetime, then take the endpoint down.
		if _, code := get("/api/reject"); code != 401 {
			t.Fatalf("reject: %d", code)
		}
		st.down.Store(true)
		var body string
		waitFor(t, "a 503", func() bool {
			var code int
			body, code = get("/api/gmail/messages")
			return code == 503
		})
		mustContain(t, "refusal", body, "credential GMAIL cannot be used: its token could not be refreshed")
		mustNotContain(t, "refusal", body, host)
		var list struct{ Credentials []map[string]any }
		s.mustAPI("GET", "/api/v1/credentials", nil, 200, &list)
		for _, c := range list.Credentials {
			if c["name"] == "GMAIL" && (c["kind"] != "oauth2_refresh" || c["last_refresh"] == nil || !strings.Contains(fmt.Sprint(c["last_error"]), "503")) {
				t.Fatalf("listing %v", c)
			}
		}
	})

	logs = append(logs, s.logs)
	for _, l := range logs {
		mustNotContain(t, "server log", l.String(), "NOT_STORED_YET_CS")
	}
	for _, secret := range append(st.secrets(), "GOCSPX-client-secret") {
		mustNotContain(t, "agent's view", agentSaw.String(), secret)
		for _, l := range logs {
			mustNotContain(t, "server log", l.String(), secret)
		}
	}
	raw := s.apiRaw(t, "GET", "/api/v1/credentials")
	for _, secret := range st.secrets() {
		mustNotContain(t, "API listing", raw, secret)
	}
}

// apiRaw is one API call's raw answer.
func (s *server) apiRaw(t *testing.T, method, path string) string {
	req, _ := http.NewRequest(method, "http://"+s.apiAddr+path, nil)
	req.Header.Set("Authorization", "Bearer "+s.adminToken())
	resp, err := directClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}
