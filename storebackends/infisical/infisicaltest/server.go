// Package infisicaltest is a stub of the part of Infisical's REST API
// that the infisical store uses: universal auth login and token renewal
// (/api/v1/auth/...) and the raw secrets list (/api/v3/secrets/raw). It
// follows the documented request and response shapes, keeps tokens with
// their TTL and max TTL on an injectable clock, and serves plain HTTP on
// 127.0.0.1. It is for tests only: unit tests of the fetcher and the
// end-to-end tests of the server binary share it.
package infisicaltest

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// Endpoints, as keys for Override and as Request.Endpoint.
const (
	Login = "POST /api/v1/auth/universal-auth/login"
	Renew = "POST /api/v1/auth/token/renew"
	List  = "GET /api/v3/secrets/raw"
)

// HiddenValue is what Infisical sends instead of a value the identity
// may not read (with secretValueHidden true).
const HiddenValue = "<hidden-by-infisical>"

// Secret is one secret in a folder.
type Secret struct {
	Key     string
	Value   string
	Version int
	// Personal marks a personal override (type "personal").
	Personal bool
	// Hidden makes the list answer secretValueHidden: true.
	Hidden bool
}

// Reply replaces the stub's answer for an endpoint.
type Reply struct {
	Status int
	Body   string
	Header http.Header
}

// Request is one request as the stub received it.
type Request struct {
	Endpoint      string // e.g. List
	Query         url.Values
	Authorization string
	ContentType   string
	Body          map[string]any // decoded JSON body, nil if none
}

// Server is the stub. Its methods are safe for concurrent use.
type Server struct {
	// URL is the site URL to configure, http://127.0.0.1:port.
	URL string

	srv *httptest.Server

	mu           sync.Mutex
	project      string
	clientID     string
	clientSecret string
	ttl, maxTTL  time.Duration
	now          func() time.Time
	tokens       map[string]*token
	issued       int
	folders      map[folder][]Secret
	imports      map[folder][]folder
	overrides    map[string]Reply
	requests     []Request
}

type folder struct{ env, path string }

type token struct {
	issuedAt  time.Time
	expiresAt time.Time // zero: never (static tokens)
	static    bool
}

// New starts a stub for project (its workspace ID) on 127.0.0.1 over
// plain HTTP; it is closed when the test ends. Universal auth accepts
// clientID and clientSecret; tokens live 1h, at most 24h, until SetTTL
// says otherwise.
func New(t testing.TB, project, clientID, clientSecret string) *Server {
	t.Helper()
	return start(t, false, project, clientID, clientSecret)
}

// NewTLS is New over HTTPS, with httptest's certificate (valid for
// 127.0.0.1 and example.com; see Server().Certificate()).
func NewTLS(t testing.TB, project, clientID, clientSecret string) *Server {
	t.Helper()
	return start(t, true, project, clientID, clientSecret)
}

func start(t testing.TB, useTLS bool, project, clientID, clientSecret string) *Server {
	t.Helper()
	s := &Server{
		project: project, clientID: clientID, clientSecret: clientSecret,
		ttl: time.Hour, maxTTL: 24 * time.Hour, now: time.Now,
		tokens: map[string]*token{}, folders: map[folder][]Secret{},
		imports: map[folder][]folder{}, overrides: map[string]Reply{},
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.srv = httptest.NewUnstartedServer(http.HandlerFunc(s.serve))
	s.srv.Listener.Close()
	s.srv.Listener = ln
	if useTLS {
		s.srv.StartTLS()
	} else {
		s.srv.Start()
	}
	s.URL = s.srv.URL
	t.Cleanup(s.srv.Close)
	return s
}

// Server returns the underlying httptest server (for its certificate
// and address).
func (s *Server) Server() *httptest.Server { return s.srv }

// SetClock replaces the clock that token lifetimes are measured on.
func (s *Server) SetClock(now func() time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.now = now
}

// SetTTL sets the lifetime (expiresIn) and maximum lifetime
// (accessTokenMaxTTL, 0 = none) of tokens issued from now on.
func (s *Server) SetTTL(ttl, maxTTL time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ttl, s.maxTTL = ttl, maxTTL
}

// AddStaticToken accepts tok as a bearer token that never expires
// (a token auth access token).
func (s *Server) AddStaticToken(tok string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokens[tok] = &token{static: true}
}

// RevokeTokens invalidates every token issued by login so far.
func (s *Server) RevokeTokens() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, tok := range s.tokens {
		if !tok.static {
			delete(s.tokens, k)
		}
	}
}

// Put creates or replaces (by key) a secret in env at path. The path
// must be absolute ("/" or "/a/b"); creating it creates its parents.
func (s *Server) Put(env, path string, sec Secret) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for p := path; ; p = parent(p) {
		if _, ok := s.folders[folder{env, p}]; !ok {
			s.folders[folder{env, p}] = nil
		}
		if p == "/" {
			break
		}
	}
	f := folder{env, path}
	secrets := s.folders[f]
	for i := range secrets {
		if secrets[i].Key == sec.Key && secrets[i].Personal == sec.Personal {
			secrets[i] = sec
			return
		}
	}
	s.folders[f] = append(secrets, sec)
}

// Delete removes a shared secret.
func (s *Server) Delete(env, path, key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := folder{env, path}
	s.folders[f] = slices.DeleteFunc(s.folders[f], func(x Secret) bool { return x.Key == key && !x.Personal })
}

// Import makes the folder env:path import fromEnv:fromPath (appended
// after its existing imports).
func (s *Server) Import(env, path, fromEnv, fromPath string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := folder{env, path}
	s.imports[f] = append(s.imports[f], folder{fromEnv, fromPath})
}

// Override makes endpoint answer r until Clear is called.
func (s *Server) Override(endpoint string, r Reply) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.overrides[endpoint] = r
}

// Clear removes an Override.
func (s *Server) Clear(endpoint string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.overrides, endpoint)
}

// Requests returns the requests received since the last call.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.requests
	s.requests = nil
	return r
}

// Endpoints returns the endpoints of the requests received since the
// last call to Requests or Endpoints, in order.
func (s *Server) Endpoints() []string {
	var out []string
	for _, r := range s.Requests() {
		out = append(out, r.Endpoint)
	}
	return out
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	req := Request{
		Endpoint:      r.Method + " " + r.URL.Path,
		Query:         r.URL.Query(),
		Authorization: r.Header.Get("Authorization"),
		ContentType:   r.Header.Get("Content-Type"),
	}
	if r.Body != nil {
		json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&req.Body)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests = append(s.requests, req)
	if o, ok := s.overrides[req.Endpoint]; ok {
		for k, v := range o.Header {
			w.Header()[k] = v
		}
		if w.Header().Get("Content-Type") == "" {
			w.Header().Set("Content-Type", "application/json; charset=utf-8")
		}
		w.WriteHeader(o.Status)
		fmt.Fprint(w, o.Body)
		return
	}
	switch req.Endpoint {
	case Login:
		s.login(w, req)
	case Renew:
		s.renew(w, req)
	case List:
		s.list(w, req)
	default:
		apiError(w, http.StatusNotFound, "NotFound", "Route "+req.Endpoint+" not found")
	}
}

func (s *Server) login(w http.ResponseWriter, req Request) {
	if !strings.HasPrefix(req.ContentType, "application/json") {
		apiError(w, http.StatusBadRequest, "BadRequest", "body must be JSON")
		return
	}
	id, _ := req.Body["clientId"].(string)
	secret, _ := req.Body["clientSecret"].(string)
	if id != s.clientID || secret != s.clientSecret {
		apiError(w, http.StatusUnauthorized, "UnauthorizedError", "Invalid credentials")
		return
	}
	s.issued++
	tok := fmt.Sprintf("ua.stub-access-token-%d", s.issued)
	now := s.now()
	t := &token{issuedAt: now}
	if s.ttl > 0 {
		t.expiresAt = now.Add(s.ttl)
	}
	s.tokens[tok] = t
	writeToken(w, tok, s.ttl, s.maxTTL)
}

func (s *Server) renew(w http.ResponseWriter, req Request) {
	tok, _ := req.Body["accessToken"].(string)
	t, ok := s.tokens[tok]
	now := s.now()
	switch {
	case !ok || t.static:
		apiError(w, http.StatusUnauthorized, "UnauthorizedError", "Invalid access token")
		return
	case !t.expiresAt.IsZero() && !now.Before(t.expiresAt):
		apiError(w, http.StatusUnauthorized, "UnauthorizedError", "Access token expired")
		return
	}
	ttl := s.ttl
	if s.maxTTL > 0 {
		left := t.issuedAt.Add(s.maxTTL).Sub(now)
		if left < time.Second {
			apiError(w, http.StatusUnauthorized, "UnauthorizedError", "Failed to renew access token due to max TTL expiration")
			return
		}
		ttl = min(ttl, left)
	}
	if ttl > 0 {
		t.expiresAt = now.Add(ttl)
	}
	writeToken(w, tok, ttl, s.maxTTL)
}

func writeToken(w http.ResponseWriter, tok string, ttl, maxTTL time.Duration) {
	writeJSON(w, http.StatusOK, map[string]any{
		"accessToken":       tok,
		"expiresIn":         int64(ttl / time.Second),
		"accessTokenMaxTTL": int64(maxTTL / time.Second),
		"tokenType":         "Bearer",
	})
}

// authorized checks the bearer token; the caller holds s.mu.
func (s *Server) authorized(w http.ResponseWriter, req Request) bool {
	tok, ok := strings.CutPrefix(req.Authorization, "Bearer ")
	t, known := s.tokens[tok]
	if !ok || !known || (!t.expiresAt.IsZero() && !s.now().Before(t.expiresAt)) {
		apiError(w, http.StatusUnauthorized, "UnauthorizedError", "Token missing, invalid or expired")
		return false
	}
	return true
}

// secretJSON is a secret as the v3 raw list shows it.
type secretJSON struct {
	ID            string `json:"id"`
	Workspace     string `json:"workspace"`
	Environment   string `json:"environment"`
	Version       int    `json:"version"`
	Type          string `json:"type"`
	SecretKey     string `json:"secretKey"`
	SecretValue   string `json:"secretValue"`
	SecretComment string `json:"secretComment"`
	SecretPath    string `json:"secretPath"`
	Hidden        bool   `json:"secretValueHidden"`
	UpdatedAt     string `json:"updatedAt"`
}

type importJSON struct {
	SecretPath  string       `json:"secretPath"`
	Environment string       `json:"environment"`
	FolderID    string       `json:"folderId"`
	Secrets     []secretJSON `json:"secrets"`
}

func (s *Server) list(w http.ResponseWriter, req Request) {
	if !s.authorized(w, req) {
		return
	}
	q := req.Query
	if q.Get("workspaceId") != s.project {
		apiError(w, http.StatusNotFound, "NotFound", "Project with ID '"+q.Get("workspaceId")+"' not found")
		return
	}
	env, path := q.Get("environment"), q.Get("secretPath")
	if path == "" {
		path = "/"
	}
	root := folder{env, path}
	if _, ok := s.folders[root]; !ok {
		apiError(w, http.StatusNotFound, "NotFound", "Folder with path '"+path+"' in environment with slug '"+env+"' not found")
		return
	}
	out := struct {
		Secrets []secretJSON `json:"secrets"`
		Imports []importJSON `json:"imports,omitempty"`
	}{Secrets: []secretJSON{}}
	for _, f := range s.sortedFolders() {
		if f == root || (q.Get("recursive") == "true" && f.env == env && isBelow(f.path, path)) {
			out.Secrets = append(out.Secrets, s.secretsJSON(f)...)
		}
	}
	if q.Get("include_imports") == "true" {
		// Only the imports of the folder itself are listed.
		for _, from := range s.imports[root] {
			out.Imports = append(out.Imports, importJSON{
				SecretPath: from.path, Environment: from.env, FolderID: "folder-" + from.env + from.path,
				Secrets: s.secretsJSON(from),
			})
		}
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) secretsJSON(f folder) []secretJSON {
	out := []secretJSON{}
	for i, sec := range s.folders[f] {
		j := secretJSON{
			ID: fmt.Sprintf("%s%s#%d", f.env, f.path, i), Workspace: s.project, Environment: f.env,
			Version: sec.Version, Type: "shared", SecretKey: sec.Key, SecretValue: sec.Value,
			SecretPath: f.path, UpdatedAt: "2025-03-01T12:00:00.000Z",
		}
		if sec.Personal {
			j.Type = "personal"
		}
		if sec.Hidden {
			j.Hidden, j.SecretValue = true, HiddenValue
		}
		out = append(out, j)
	}
	return out
}

func (s *Server) sortedFolders() []folder {
	var fs []folder
	for f := range s.folders {
		fs = append(fs, f)
	}
	slices.SortFunc(fs, func(a, b folder) int { return strings.Compare(a.env+a.path, b.env+b.path) })
	return fs
}

func isBelow(p, dir string) bool {
	return p == dir || strings.HasPrefix(p, strings.TrimSuffix(dir, "/")+"/")
}

func parent(p string) string {
	i := strings.LastIndex(p, "/")
	if i <= 0 {
		return "/"
	}
	return p[:i]
}

// apiError answers in Infisical's error shape.
func apiError(w http.ResponseWriter, status int, kind, msg string) {
	writeJSON(w, status, map[string]any{"statusCode": status, "message": msg, "error": kind})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}
