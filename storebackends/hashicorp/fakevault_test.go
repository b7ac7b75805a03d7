package hashicorp

import (
	"encoding/json"
	"fmt"
	"io"
	"log"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// leakMarker is part of every token, AppRole credential and secret value
// used in the tests; no error and no log line may ever contain it.
const leakMarker = "do-not-leak"

const (
	rootToken = "hvs.ROOT-TOKEN-" + leakMarker
	roleID    = "ROLE-ID-" + leakMarker
	secretID  = "SECRET-ID-" + leakMarker
)

// fakeVault answers the parts of the Vault HTTP API the fetcher uses,
// with the JSON shapes Vault documents: KV v1 and v2 (LIST and read,
// including the 404-with-metadata of deleted versions), the UI mounts
// endpoint, token lookup/renewal and AppRole login. Every request must
// carry the expected namespace header and a known, unrevoked token.
type fakeVault struct {
	t   *testing.T
	srv *httptest.Server

	mu        sync.Mutex
	namespace string                // expected X-Vault-Namespace ("" = header absent)
	mounts    map[string]int        // KV mount -> version
	secrets   map[string]fakeSecret // "mount/path" -> secret
	tokens    map[string]*fakeToken
	loginTTL  int // lease of AppRole tokens, in seconds
	logins    int
	injected  map[string][]fakeReply // "METHOD /v1/path" -> replies served first
	requests  []fakeRequest
	faults    []string // protocol violations seen (wrong headers, ...)
}

type fakeSecret struct {
	data         string // JSON object
	version      int
	created      string
	deletionTime string
	destroyed    bool
}

type fakeToken struct {
	ttl, creationTTL, period int // seconds
	renewable                bool
	maxTTL                   int // renewals are capped here; 0 = no cap
	revoked                  bool
	renewals                 []int // increments asked for
}

type fakeReply struct {
	status int
	body   string
	header http.Header
}

type fakeRequest struct {
	key   string // "METHOD /v1/path", with LIST for ?list=true
	token string
}

// newFakeVault starts a fake on 127.0.0.1 (TLS when tls is true) with
// KV v2 mounted at "secret" and rootToken valid forever.
func newFakeVault(t *testing.T, tls bool) *fakeVault {
	fv := &fakeVault{
		t:        t,
		mounts:   map[string]int{"secret": 2},
		secrets:  map[string]fakeSecret{},
		tokens:   map[string]*fakeToken{rootToken: {}},
		loginTTL: 3600,
		injected: map[string][]fakeReply{},
	}
	fv.srv = httptest.NewUnstartedServer(fv)
	// Handshakes that fail on purpose (TLS tests) are not worth a log line.
	fv.srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	if tls {
		fv.srv.StartTLS()
	} else {
		fv.srv.Start()
	}
	t.Cleanup(func() {
		fv.srv.Close()
		for _, f := range fv.faultList() {
			t.Errorf("fake vault: %s", f)
		}
	})
	return fv
}

// put stores a live secret; data is a JSON object literal.
func (fv *fakeVault) put(path, data string, version int) {
	fv.mu.Lock()
	defer fv.mu.Unlock()
	fv.secrets[path] = fakeSecret{data: data, version: version, created: "2025-03-01T10:20:30.123456789Z"}
}

// putSecret stores a secret with full control over its metadata.
func (fv *fakeVault) putSecret(path string, s fakeSecret) {
	fv.mu.Lock()
	defer fv.mu.Unlock()
	fv.secrets[path] = s
}

// inject makes the next requests to key get these replies.
func (fv *fakeVault) inject(key string, replies ...fakeReply) {
	fv.mu.Lock()
	defer fv.mu.Unlock()
	fv.injected[key] = append(fv.injected[key], replies...)
}

func (fv *fakeVault) setToken(token string, tok *fakeToken) {
	fv.mu.Lock()
	defer fv.mu.Unlock()
	fv.tokens[token] = tok
}

func (fv *fakeVault) revoke(token string) {
	fv.mu.Lock()
	defer fv.mu.Unlock()
	fv.tokens[token].revoked = true
}

func (fv *fakeVault) token(token string) fakeToken {
	fv.mu.Lock()
	defer fv.mu.Unlock()
	return *fv.tokens[token]
}

func (fv *fakeVault) loginCount() int {
	fv.mu.Lock()
	defer fv.mu.Unlock()
	return fv.logins
}

// takeRequests returns the requests seen so far and forgets them.
func (fv *fakeVault) takeRequests() []fakeRequest {
	fv.mu.Lock()
	defer fv.mu.Unlock()
	r := fv.requests
	fv.requests = nil
	return r
}

func (fv *fakeVault) faultList() []string {
	fv.mu.Lock()
	defer fv.mu.Unlock()
	return slices.Clone(fv.faults)
}

func (fv *fakeVault) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	fv.mu.Lock()
	defer fv.mu.Unlock()
	method := r.Method
	if r.URL.Query().Get("list") == "true" {
		method = "LIST"
	}
	key := method + " " + r.URL.Path
	token := r.Header.Get("X-Vault-Token")
	fv.requests = append(fv.requests, fakeRequest{key: key, token: token})

	if got := r.Header.Get("X-Vault-Namespace"); got != fv.namespace {
		fv.faults = append(fv.faults, fmt.Sprintf("%s: X-Vault-Namespace %q, want %q", key, got, fv.namespace))
	}
	if r.Header.Get("X-Vault-Request") != "true" {
		fv.faults = append(fv.faults, key+": no X-Vault-Request header")
	}
	for _, h := range []string{"X-Leak", "X-Vault-Wrap-Ttl"} {
		if r.Header.Get(h) != "" {
			fv.faults = append(fv.faults, key+": unexpected header "+h)
		}
	}

	if replies := fv.injected[key]; len(replies) > 0 {
		fv.injected[key] = replies[1:]
		writeReply(w, replies[0])
		return
	}

	p := strings.TrimPrefix(r.URL.Path, "/v1/")
	if strings.HasPrefix(p, "auth/") && strings.HasSuffix(p, "/login") && (method == http.MethodPut || method == http.MethodPost) {
		if token != "" {
			fv.faults = append(fv.faults, key+": login sent a token")
		}
		fv.login(w, r, p)
		return
	}
	tok := fv.tokens[token]
	if tok == nil || tok.revoked {
		reply(w, http.StatusForbidden, `{"errors":["permission denied"]}`)
		return
	}
	switch {
	case key == "GET /v1/auth/token/lookup-self":
		fv.lookupSelf(w, token, tok)
	case key == "PUT /v1/auth/token/renew-self":
		fv.renewSelf(w, r, token, tok)
	case method == http.MethodGet && strings.HasPrefix(p, "sys/internal/ui/mounts/"):
		fv.mountInfo(w, strings.TrimPrefix(p, "sys/internal/ui/mounts/"))
	default:
		fv.kv(w, method, p)
	}
}

func (fv *fakeVault) login(w http.ResponseWriter, r *http.Request, p string) {
	if p != "auth/approle/login" && p != "auth/agents-approle/login" {
		reply(w, http.StatusNotFound, `{"errors":["no handler for route \"`+p+`\". route entry not found."]}`)
		return
	}
	var body struct {
		RoleID   string `json:"role_id"`
		SecretID string `json:"secret_id"`
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil || body.RoleID != roleID || body.SecretID != secretID {
		reply(w, http.StatusBadRequest, `{"errors":["invalid role or secret ID"]}`)
		return
	}
	fv.logins++
	token := fmt.Sprintf("hvs.APPROLE-%d-%s", fv.logins, leakMarker)
	fv.tokens[token] = &fakeToken{ttl: fv.loginTTL, creationTTL: fv.loginTTL, renewable: true}
	replyJSON(w, http.StatusOK, map[string]any{
		"request_id": "5c2e…", "lease_id": "", "renewable": false, "lease_duration": 0, "data": nil,
		"auth": map[string]any{
			"client_token": token, "accessor": "accessor-1",
			"policies": []string{"agents", "default"}, "token_policies": []string{"agents", "default"},
			"metadata": map[string]string{"role_name": "agents"}, "lease_duration": fv.loginTTL,
			"renewable": true, "entity_id": "e-1", "token_type": "service", "orphan": true,
		},
	})
}

func (fv *fakeVault) lookupSelf(w http.ResponseWriter, token string, tok *fakeToken) {
	var expire any
	if tok.ttl > 0 {
		expire = time.Now().Add(time.Duration(tok.ttl) * time.Second).Format(time.RFC3339Nano)
	}
	data := map[string]any{
		"accessor": "accessor-1", "creation_time": 1735689600, "creation_ttl": tok.creationTTL,
		"display_name": "token", "entity_id": "", "expire_time": expire, "explicit_max_ttl": 0,
		"id": token, "meta": nil, "num_uses": 0, "orphan": false, "path": "auth/token/create",
		"policies": []string{"default"}, "renewable": tok.renewable, "ttl": tok.ttl, "type": "service",
	}
	if tok.period > 0 {
		data["period"] = tok.period
	}
	replyJSON(w, http.StatusOK, map[string]any{"request_id": "r-1", "data": data})
}

func (fv *fakeVault) renewSelf(w http.ResponseWriter, r *http.Request, token string, tok *fakeToken) {
	var body struct {
		Increment int `json:"increment"`
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		reply(w, http.StatusBadRequest, `{"errors":["malformed request"]}`)
		return
	}
	tok.renewals = append(tok.renewals, body.Increment)
	if !tok.renewable {
		reply(w, http.StatusBadRequest, `{"errors":["lease is not renewable"]}`)
		return
	}
	granted := body.Increment
	var warnings []string
	if tok.maxTTL > 0 && granted > tok.maxTTL {
		granted = tok.maxTTL
		warnings = append(warnings, "TTL of \"1h\" exceeded the effective max_ttl; TTL value is capped accordingly")
	}
	tok.ttl = granted
	replyJSON(w, http.StatusOK, map[string]any{
		"request_id": "r-2", "warnings": warnings,
		"auth": map[string]any{
			"client_token": token, "accessor": "accessor-1", "policies": []string{"default"},
			"lease_duration": granted, "renewable": true,
		},
	})
}

func (fv *fakeVault) mountInfo(w http.ResponseWriter, p string) {
	mount, _, _ := strings.Cut(p, "/")
	version, ok := fv.mounts[mount]
	if !ok {
		reply(w, http.StatusForbidden, `{"errors":["preflight capability check returned 403, please ensure client's policies grant access to path \"`+p+`/\""]}`)
		return
	}
	replyJSON(w, http.StatusOK, map[string]any{"data": map[string]any{
		"accessor": "kv_1234", "config": map[string]any{"default_lease_ttl": 0, "max_lease_ttl": 0},
		"description": "key/value secret storage", "local": false, "seal_wrap": false,
		"external_entropy_access": false, "options": map[string]string{"version": fmt.Sprint(version)},
		"path": mount + "/", "plugin_version": "", "running_plugin_version": "v0.25.0+builtin",
		"type": "kv", "uuid": "c0ffee",
	}})
}

func (fv *fakeVault) kv(w http.ResponseWriter, method, p string) {
	mount, rest, _ := strings.Cut(p, "/")
	version, ok := fv.mounts[mount]
	if !ok {
		reply(w, http.StatusNotFound, `{"errors":["no handler for route \"`+p+`\". route entry not found."]}`)
		return
	}
	switch {
	case method == "LIST" && version == 1:
		fv.list(w, mount, rest)
	case method == "LIST" && (rest == "metadata" || strings.HasPrefix(rest, "metadata/")):
		fv.list(w, mount, strings.TrimPrefix(rest, "metadata"))
	case method == http.MethodGet && version == 1:
		fv.readV1(w, mount+"/"+rest)
	case method == http.MethodGet && strings.HasPrefix(rest, "data/"):
		fv.readV2(w, mount+"/"+strings.TrimPrefix(rest, "data/"))
	default:
		reply(w, http.StatusMethodNotAllowed, `{"errors":["1 error occurred:\n\t* unsupported operation\n\n"]}`)
	}
}

// list answers a LIST with the direct children of dir: secrets as
// "name", folders as "name/"; an empty folder is Vault's bare 404.
func (fv *fakeVault) list(w http.ResponseWriter, mount, dir string) {
	prefix := mount + "/"
	if dir = strings.Trim(dir, "/"); dir != "" {
		prefix += dir + "/"
	}
	seen := map[string]bool{}
	for p := range fv.secrets {
		rest, ok := strings.CutPrefix(p, prefix)
		if !ok {
			continue
		}
		if first, _, nested := strings.Cut(rest, "/"); nested {
			rest = first + "/"
		}
		seen[rest] = true
	}
	if len(seen) == 0 {
		reply(w, http.StatusNotFound, `{"errors":[]}`)
		return
	}
	keys := slices.Sorted(maps.Keys(seen))
	replyJSON(w, http.StatusOK, map[string]any{"request_id": "r-3", "data": map[string]any{"keys": keys}})
}

func (fv *fakeVault) readV1(w http.ResponseWriter, p string) {
	s, ok := fv.secrets[p]
	if !ok {
		reply(w, http.StatusNotFound, `{"errors":[]}`)
		return
	}
	replyJSON(w, http.StatusOK, map[string]any{
		"request_id": "r-4", "lease_duration": 2764800, "data": json.RawMessage(s.data), "mount_type": "kv",
	})
}

func (fv *fakeVault) readV2(w http.ResponseWriter, p string) {
	s, ok := fv.secrets[p]
	if !ok {
		reply(w, http.StatusNotFound, `{"errors":[]}`)
		return
	}
	meta := map[string]any{
		"created_time": s.created, "custom_metadata": nil, "deletion_time": s.deletionTime,
		"destroyed": s.destroyed, "version": s.version,
	}
	body := map[string]any{
		"request_id": "r-5", "lease_id": "", "renewable": false, "lease_duration": 0,
		"wrap_info": nil, "warnings": nil, "auth": nil, "mount_type": "kv",
	}
	if s.destroyed || s.deletionTime != "" {
		// Vault's answer for a deleted current version: 404, metadata only.
		body["data"] = map[string]any{"data": nil, "metadata": meta}
		replyJSON(w, http.StatusNotFound, body)
		return
	}
	body["data"] = map[string]any{"data": json.RawMessage(s.data), "metadata": meta}
	replyJSON(w, http.StatusOK, body)
}

func reply(w http.ResponseWriter, status int, body string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	fmt.Fprint(w, body)
}

func replyJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	reply(w, status, string(b))
}

func writeReply(w http.ResponseWriter, r fakeReply) {
	for k, v := range r.header {
		w.Header()[k] = v
	}
	reply(w, r.status, r.body)
}
