package caddymodule

// Helpers for the management API tests: calls to the pipeline's API
// as one kind of caller or another, and the few things every test
// makes (agents, operators, logins, sessions).

import (
	"bytes"
	"encoding/json"
	"io"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentvault/caddy-agent-vault/caddymodule/apiwire"
	"github.com/agentvault/caddy-agent-vault/storebackends"
)

// apiAnswer is one answer of the management API.
type apiAnswer struct {
	status int
	header http.Header
	body   string
}

// errText is the "error" of an error answer.
func (a apiAnswer) errText() string {
	var e apiwire.Error
	json.Unmarshal([]byte(a.body), &e)
	return e.Error
}

// apiCall is one request to the management API.
type apiCall struct {
	token   string // Bearer token; "" sends none
	cookie  string // login cookie value; "" sends none
	headers []string
}

// asToken calls with a Bearer token.
func asToken(tok string) apiCall { return apiCall{token: tok} }

// call sends method path with body (nil: none; a string: as is) and
// returns the answer.
func (pl *pipeline) call(t testing.TB, c apiCall, method, path string, body any) apiAnswer {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		data, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequest(method, pl.apiURL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	if c.cookie != "" {
		req.AddCookie(&http.Cookie{Name: "agent_vault_login", Value: c.cookie})
	}
	for i := 0; i+1 < len(c.headers); i += 2 {
		req.Header.Add(c.headers[i], c.headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return apiAnswer{status: resp.StatusCode, header: resp.Header, body: string(data)}
}

// must is call that fails the test unless the status is want; the body
// is decoded into out (if not nil).
func (pl *pipeline) must(t testing.TB, c apiCall, method, path string, body any, want int, out any) apiAnswer {
	t.Helper()
	a := pl.call(t, c, method, path, body)
	if a.status != want {
		t.Fatalf("%s %s: %d %s, want %d", method, path, a.status, a.body, want)
	}
	if out != nil {
		if err := json.Unmarshal([]byte(a.body), out); err != nil {
			t.Fatalf("%s %s: decoding %s: %v", method, path, a.body, err)
		}
	}
	return a
}

// wantAPIError fails unless a has status and an error text holding
// every fragment.
func wantAPIError(t testing.TB, what string, a apiAnswer, status int, fragments ...string) {
	t.Helper()
	if a.status != status {
		t.Errorf("%s: %d %s, want %d", what, a.status, a.body, status)
		return
	}
	for _, f := range fragments {
		if !strings.Contains(a.errText(), f) {
			t.Errorf("%s: %d %q does not say %q", what, a.status, a.errText(), f)
		}
	}
}

func (pl *pipeline) admin() apiCall { return asToken(pl.adminToken) }

func (pl *pipeline) createAgent(t testing.TB, name string, svcs []string, maxTTL string) apiwire.Agent {
	t.Helper()
	var a apiwire.Agent
	pl.must(t, pl.admin(), "POST", "/api/v1/agents", apiwire.AgentCreateRequest{Name: name, Services: svcs, MaxSessionTTL: maxTTL}, 201, &a)
	return a
}

func (pl *pipeline) createOperator(t testing.TB, name, password, role string) {
	t.Helper()
	pl.must(t, pl.admin(), "POST", "/api/v1/operators", apiwire.OperatorCreateRequest{Name: name, Password: password, Role: role}, 201, nil)
}

func (pl *pipeline) login(t testing.TB, name, password string) apiwire.Login {
	t.Helper()
	var l apiwire.Login
	pl.must(t, apiCall{}, "POST", "/api/v1/login", apiwire.LoginRequest{Name: name, Password: password}, 200, &l)
	return l
}

func (pl *pipeline) mint(t testing.TB, c apiCall, req apiwire.SessionRequest) apiwire.Session {
	t.Helper()
	var s apiwire.Session
	pl.must(t, c, "POST", "/api/v1/sessions", req, 201, &s)
	return s
}

// asAgentSession is a minted session as the proxy tests hold one.
func asAgentSession(s apiwire.Session) agentSession {
	return agentSession{id: s.ID, token: s.Token, placeholders: s.Placeholders}
}

// sessionStatus is the session's status in GET /api/v1/sessions ("" if
// not listed).
func (pl *pipeline) sessionStatus(t testing.TB, id string) string {
	t.Helper()
	var l apiwire.SessionList
	pl.must(t, pl.admin(), "GET", "/api/v1/sessions", nil, 200, &l)
	for _, s := range l.Sessions {
		if s.ID == id {
			return s.Status
		}
	}
	return ""
}

// auditEntries reads the audit trail with the query given.
func (pl *pipeline) auditEntries(t testing.TB, q url.Values) []apiwire.AuditEntry {
	t.Helper()
	var l apiwire.AuditList
	pl.must(t, pl.admin(), "GET", "/api/v1/audit?"+q.Encode(), nil, 200, &l)
	return l.Entries
}

const testPassword = "correct horse battery"

// writableStore is a store the API can write to, in memory.
type writableStore struct {
	mu     sync.Mutex
	values map[string]string
	meta   map[string]storebackends.Meta
}

func newWritableStore() *writableStore {
	return &writableStore{values: map[string]string{}, meta: map[string]storebackends.Meta{}}
}

func (s *writableStore) StoreName() string { return "builtin" }

func (s *writableStore) List() []storebackends.Meta {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]storebackends.Meta, 0, len(s.meta))
	for _, m := range s.meta {
		out = append(out, m)
	}
	slices.SortFunc(out, func(a, b storebackends.Meta) int { return strings.Compare(a.Name, b.Name) })
	return out
}

func (s *writableStore) Values() map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.values)
}

func (s *writableStore) Put(name, value string) (storebackends.Meta, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := storebackends.Meta{Name: name, Store: "builtin", Version: strconv.Itoa(len(s.meta) + 1), UpdatedAt: time.Now().UTC()}
	s.values[name], s.meta[name] = value, m
	return m, nil
}

func (s *writableStore) Delete(name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.meta[name]; !ok {
		return storebackends.ErrNotFound
	}
	delete(s.values, name)
	delete(s.meta, name)
	return nil
}
