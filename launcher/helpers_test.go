package launcher

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentvault/caddy-agent-vault/caddymodule/apiwire"
)

const (
	testAdminToken   = "admin-secret-token"
	testSessionToken = "sess/tok+en:@x%"
	testSessionID    = "sess_0123abcd"
	testProxyURL     = "http://127.0.0.1:14322"
	testPlaceholder  = "agvph_github_placeholder"
	// testLease is the fake's default lease: long enough that no test
	// but the renewal ones sees a renewal.
	testLease = "30s"
)

// newTestCert returns a fresh self-signed CA certificate as PEM.
func newTestCert(t *testing.T, cn string) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

// createCall records one POST /api/v1/sessions.
type createCall struct {
	auth string
	raw  map[string]any
	body apiwire.SessionRequest
}

// fakeAPI is a loopback management API that records its calls.
type fakeAPI struct {
	srv   *httptest.Server
	caPEM string

	mu           sync.Mutex
	session      apiwire.Session  // answer to POST
	createStatus int              // answer status to POST (default 201)
	createError  string           // {"error":...} body when createStatus is an error
	createBody   string           // raw 201 body to send instead of session, if set
	deleteStatus int              // answer status to DELETE (default 204)
	renewStatus  int              // answer status to renewals (default 200)
	current      *apiwire.Session // answer to GET /api/v1/session (nil: 401)
	creates      []createCall
	deletes      []string // ids
	deleteAuths  []string
	renews       []string              // ids
	currentAuths []string              // Authorization of GET /api/v1/session
	requests     []string              // "METHOD /path" of every request
	onCreate     func(r *http.Request) // runs before answering a POST
}

func newFakeAPI(t *testing.T) *fakeAPI {
	t.Helper()
	f := &fakeAPI{caPEM: newTestCert(t, "agent-vault test CA")}
	f.session = apiwire.Session{
		ID:           testSessionID,
		Token:        testSessionToken,
		ProxyURL:     testProxyURL,
		CAPEM:        f.caPEM,
		ExpiresAt:    time.Now().Add(time.Hour).UTC().Truncate(time.Second),
		Services:     []string{"github"},
		Placeholders: map[string]string{"GITHUB_TOKEN": testPlaceholder},
		LeaseTimeout: testLease,
		// Every credential the server knows, in scope or not.
		CredentialNames: []string{"GITHUB_TOKEN", "OUT_OF_SCOPE_TOKEN"},
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/v1/sessions", f.create)
	mux.HandleFunc("DELETE /api/v1/sessions/{id}", f.delete)
	mux.HandleFunc("POST /api/v1/sessions/{id}/renew", f.renew)
	mux.HandleFunc("GET /api/v1/session", f.currentSession)
	// The server lets no token list credentials here, as for an agent
	// token: the names come with the session (credential_names).
	mux.HandleFunc("GET /api/v1/credentials", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusForbidden)
		io.WriteString(w, `{"error":"an agent token may not GET /api/v1/credentials"}`)
	})
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.requests = append(f.requests, r.Method+" "+r.URL.Path)
		f.mu.Unlock()
		mux.ServeHTTP(w, r)
	})) // listens on 127.0.0.1:0
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeAPI) create(w http.ResponseWriter, r *http.Request) {
	var call createCall
	call.auth = r.Header.Get("Authorization")
	data := new(bytes.Buffer)
	data.ReadFrom(r.Body)
	json.Unmarshal(data.Bytes(), &call.raw)
	json.Unmarshal(data.Bytes(), &call.body)
	f.mu.Lock()
	f.creates = append(f.creates, call)
	onCreate, status, errMsg, sess, rawBody := f.onCreate, f.createStatus, f.createError, f.session, f.createBody
	f.mu.Unlock()
	if onCreate != nil {
		onCreate(r)
	}
	w.Header().Set("Content-Type", "application/json")
	if status != 0 && status != http.StatusCreated {
		w.WriteHeader(status)
		json.NewEncoder(w).Encode(map[string]string{"error": errMsg})
		return
	}
	w.WriteHeader(http.StatusCreated)
	if rawBody != "" {
		io.WriteString(w, rawBody)
		return
	}
	// Encoded as the server's writeJSON does.
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(sess)
}

func (f *fakeAPI) delete(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.deletes = append(f.deletes, r.PathValue("id"))
	f.deleteAuths = append(f.deleteAuths, r.Header.Get("Authorization"))
	status := f.deleteStatus
	f.mu.Unlock()
	if status == 0 {
		status = http.StatusNoContent
	}
	if status >= 400 {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		json.NewEncoder(w).Encode(map[string]string{"error": "boom"})
		return
	}
	w.WriteHeader(status)
}

func (f *fakeAPI) renew(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.renews = append(f.renews, r.PathValue("id"))
	status := f.renewStatus
	lease, _ := time.ParseDuration(f.session.LeaseTimeout)
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	if status != 0 && status != http.StatusOK {
		w.WriteHeader(status)
		json.NewEncoder(w).Encode(map[string]string{"error": "session " + r.PathValue("id") + " has ended"})
		return
	}
	json.NewEncoder(w).Encode(apiwire.LeaseRenewal{ID: r.PathValue("id"), LeaseExpiresAt: time.Now().Add(lease)})
}

func (f *fakeAPI) currentSession(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.currentAuths = append(f.currentAuths, r.Header.Get("Authorization"))
	sess := f.current
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	if sess == nil || r.Header.Get("Authorization") != "Bearer "+sess.Token {
		w.WriteHeader(http.StatusUnauthorized)
		io.WriteString(w, `{"error":"unknown or expired token"}`)
		return
	}
	answer := *sess
	answer.Token = "" // the caller has it
	json.NewEncoder(w).Encode(answer)
}

// renewCount is how many renewals the fake answered.
func (f *fakeAPI) renewCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.renews)
}

// allRequests lists "METHOD /path" of every request the fake saw.
func (f *fakeAPI) allRequests() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.requests...)
}

// set changes the fake's behaviour under its lock.
func (f *fakeAPI) set(change func(f *fakeAPI)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	change(f)
}

func (f *fakeAPI) calls() (creates []createCall, deletes []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]createCall(nil), f.creates...), append([]string(nil), f.deletes...)
}

// hostPort is the API's host:port.
func (f *fakeAPI) hostPort(t *testing.T) string {
	u, err := url.Parse(f.srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	return u.Host
}

// baseEnv is a minimal parent environment that lets /bin/sh find its tools.
func baseEnv() []string {
	return []string{"PATH=" + os.Getenv("PATH"), "HOME=/nonexistent-home"}
}

// launch runs cfg against api with test defaults; stderr is returned.
func launch(t *testing.T, api *fakeAPI, cfg Config) (int, string, error) {
	t.Helper()
	if cfg.Addr == "" {
		cfg.Addr = api.srv.URL
	}
	if cfg.Token == "" && cfg.Session == nil {
		cfg.Token = testAdminToken
	}
	if cfg.Env == nil {
		cfg.Env = baseEnv()
	}
	if cfg.TempDir == "" {
		cfg.TempDir = t.TempDir()
	}
	var stderr bytes.Buffer
	cfg.Stderr = &stderr
	code, err := Run(context.Background(), cfg)
	assertNoSecrets(t, "stderr", stderr.String())
	if err != nil {
		assertNoSecrets(t, "error", err.Error())
	}
	return code, stderr.String(), err
}

// assertNoSecrets fails if text holds a token or placeholder.
func assertNoSecrets(t *testing.T, what, text string) {
	t.Helper()
	for _, secret := range []string{testAdminToken, testSessionToken, url.UserPassword("av", testSessionToken).String(), testPlaceholder} {
		if strings.Contains(text, secret) {
			t.Errorf("%s leaks a secret: %q", what, text)
		}
	}
}

// waitFor polls cond until it holds, failing the test after a deadline.
func waitFor(t *testing.T, what string, deadline time.Duration, cond func() bool) {
	t.Helper()
	end := time.Now().Add(deadline)
	for !cond() {
		if time.Now().After(end) {
			t.Fatalf("%s: not within %v", what, deadline)
		}
		time.Sleep(10 * time.Millisecond) // poll interval, not synchronization
	}
}

// waitForFile polls for path to exist, failing the test after a deadline.
func waitForFile(t *testing.T, path string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := os.Stat(path); err == nil {
			return
		}
		time.Sleep(10 * time.Millisecond) // poll interval, not synchronization
	}
	t.Fatalf("%s did not appear in time", path)
}

// assertEmptyDir fails if dir holds any file.
func assertEmptyDir(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		t.Errorf("left behind in temp dir: %s", e.Name())
	}
}

// parseEnv0 parses `env -0` output into a map and the list of names.
func parseEnv0(t *testing.T, data []byte) (map[string]string, []string) {
	t.Helper()
	env := map[string]string{}
	var names []string
	for _, kv := range strings.Split(string(data), "\x00") {
		if kv == "" {
			continue
		}
		name, value, ok := strings.Cut(kv, "=")
		if !ok {
			t.Fatalf("bad env entry %q", kv)
		}
		env[name] = value
		names = append(names, name)
	}
	return env, names
}
