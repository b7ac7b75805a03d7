package apiwire_test

import (
	"bytes"
	"encoding/json"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/agentvault/caddy-agent-vault/caddymodule/apiwire"
	"github.com/agentvault/caddy-agent-vault/caddymodule/services"
	"github.com/agentvault/caddy-agent-vault/storebackends"
)

var (
	t0 = time.Date(2030, 1, 2, 3, 4, 5, 123456789, time.UTC)
	t1 = t0.Add(time.Hour)
)

// assertJSON fails unless v encodes to the same JSON value as want: the
// same keys (none more, none less) and values, in any order.
func assertJSON(t *testing.T, v any, want string) {
	t.Helper()
	got, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatalf("bad want %s: %v", want, err)
	}
	if !reflect.DeepEqual(g, w) {
		t.Errorf("JSON = %s\nwant   %s", got, want)
	}
}

// decodeStrict decodes data into v, refusing fields v does not know.
func decodeStrict(t *testing.T, data string, v any) {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader([]byte(data)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("decoding %s: %v", data, err)
	}
}

// The wire shapes below are those the server wrote before these types
// existed (maps and ad-hoc structs); clients parse them.
func TestSessionShapes(t *testing.T) {
	assertJSON(t, apiwire.Session{
		ID: "s1", Token: "tok", ProxyURL: "http://127.0.0.1:14322", CAPEM: "PEM", ExpiresAt: t0,
		Services: []string{"github"}, Placeholders: map[string]string{"GITHUB_TOKEN": "agvph_x"},
	}, `{"id":"s1","token":"tok","proxy_url":"http://127.0.0.1:14322","ca_pem":"PEM",
		"expires_at":"2030-01-02T03:04:05.123456789Z","services":["github"],"placeholders":{"GITHUB_TOKEN":"agvph_x"}}`)
	// A session for no services at all still lists [] and {}.
	assertJSON(t, apiwire.Session{Services: []string{}, Placeholders: map[string]string{}},
		`{"id":"","token":"","proxy_url":"","ca_pem":"","expires_at":"0001-01-01T00:00:00Z","services":[],"placeholders":{}}`)

	assertJSON(t, apiwire.SessionInfo{ID: "s1", Services: []string{"a"}, CreatedAt: t0, ExpiresAt: t1, Status: apiwire.SessionActive},
		`{"id":"s1","services":["a"],"created_at":"2030-01-02T03:04:05.123456789Z","expires_at":"2030-01-02T04:04:05.123456789Z","status":"active","requests":0}`)
	assertJSON(t, apiwire.SessionInfo{ID: "s1", Services: []string{}, CreatedAt: t0, ExpiresAt: t1, Status: apiwire.SessionRevoked, Requests: 3, LastUsed: &t1},
		`{"id":"s1","services":[],"created_at":"2030-01-02T03:04:05.123456789Z","expires_at":"2030-01-02T04:04:05.123456789Z","status":"revoked","requests":3,"last_used":"2030-01-02T04:04:05.123456789Z"}`)
	assertJSON(t, apiwire.SessionList{Sessions: []apiwire.SessionInfo{}}, `{"sessions":[]}`)
}

// "All services" is an absent (or null) field, "none" an empty list: the
// server accepts the first and refuses the second, so the two must not
// collapse on the way, in either direction.
func TestSessionRequestTellsAllFromEmpty(t *testing.T) {
	assertJSON(t, apiwire.SessionRequest{TTL: "1h"}, `{"ttl":"1h"}`)
	assertJSON(t, apiwire.SessionRequest{Services: []string{}, TTL: "1h"}, `{"services":[],"ttl":"1h"}`)
	assertJSON(t, apiwire.SessionRequest{Services: []string{"a", "b"}}, `{"services":["a","b"],"ttl":""}`)
	for body, wantNil := range map[string]bool{
		`{"ttl":"1h"}`:                  true,
		`{"services":null,"ttl":"1h"}`:  true,
		`{"services":[],"ttl":"1h"}`:    false,
		`{"services":["a"],"ttl":"1h"}`: false,
	} {
		var r apiwire.SessionRequest
		decodeStrict(t, body, &r)
		if (r.Services == nil) != wantNil {
			t.Errorf("%s: services = %#v, want nil %v", body, r.Services, wantNil)
		}
	}
}

func TestCredentialShapes(t *testing.T) {
	meta := apiwire.Credential{Name: "A", Store: "builtin", Version: "3", UpdatedAt: t0}
	assertJSON(t, meta, `{"name":"A","store":"builtin","version":"3","updated_at":"2030-01-02T03:04:05.123456789Z"}`)
	synced := apiwire.Credential{Name: "B", Store: "vault", Version: "hmac:x", UpdatedAt: t0, Source: "secret/agents#b", SyncedAt: &t1}
	assertJSON(t, apiwire.CredentialList{Credentials: []apiwire.Credential{meta, synced}}, `{"credentials":[
		{"name":"A","store":"builtin","version":"3","updated_at":"2030-01-02T03:04:05.123456789Z"},
		{"name":"B","store":"vault","version":"hmac:x","updated_at":"2030-01-02T03:04:05.123456789Z","source":"secret/agents#b","synced_at":"2030-01-02T04:04:05.123456789Z"}]}`)
	// As before: no credentials at all is null, not [].
	assertJSON(t, apiwire.CredentialList{}, `{"credentials":null}`)

	var req apiwire.CredentialPutRequest
	decodeStrict(t, `{"value":""}`, &req)
	if req.Value == nil || *req.Value != "" {
		t.Errorf("an empty value decodes as %v, want a pointer to \"\"", req.Value)
	}
	req = apiwire.CredentialPutRequest{}
	decodeStrict(t, `{}`, &req)
	if req.Value != nil {
		t.Error("a missing value decodes as set")
	}
}

func TestServiceShapes(t *testing.T) {
	svc := services.Service{Name: "github", Host: "api.github.com", Auth: services.Auth{Type: "bearer", Token: "GITHUB_TOKEN"}}
	plain, err := json.Marshal(svc)
	if err != nil {
		t.Fatal(err)
	}
	// Without warnings, the PUT answer is the service exactly, as before.
	got, err := json.Marshal(apiwire.ServicePutResponse{Service: svc})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, plain) {
		t.Errorf("PUT answer without warnings = %s, want the bare service %s", got, plain)
	}
	// The service's fields stay inline next to the warnings (this would
	// break if Service ever gained its own MarshalJSON).
	assertJSON(t, apiwire.ServicePutResponse{Service: svc, Warnings: []string{"w"}},
		`{"name":"github","host":"api.github.com","auth":{"type":"bearer","token":"GITHUB_TOKEN"},"warnings":["w"]}`)
	var back apiwire.ServicePutResponse
	decodeStrict(t, `{"name":"github","host":"api.github.com","auth":{"type":"bearer","token":"GITHUB_TOKEN"},"warnings":["w"]}`, &back)
	if !reflect.DeepEqual(back, apiwire.ServicePutResponse{Service: svc, Warnings: []string{"w"}}) {
		t.Errorf("decoded PUT answer = %+v", back)
	}
	assertJSON(t, apiwire.ServiceList{Services: []apiwire.Service{}}, `{"services":[]}`)
	assertJSON(t, apiwire.ServiceList{Services: []apiwire.Service{svc}}, `{"services":[`+string(plain)+`]}`)
}

func TestStoreStatusShapes(t *testing.T) {
	yes, no := true, false
	// A store that is not synced: exactly store, status, credentials and
	// writable (false included).
	builtin := apiwire.StoreStatus{Store: "builtin", Status: storebackends.StatusOK, Credentials: 2, Writable: &yes}
	assertJSON(t, builtin, `{"store":"builtin","status":"ok","credentials":2,"writable":true}`)
	assertJSON(t, apiwire.StoreStatus{Store: "ro", Status: "ok", Writable: &no}, `{"store":"ro","status":"ok","credentials":0,"writable":false}`)

	// A synced store that never synced: zero times and an empty
	// staleness are written, not omitted; no writable.
	assertJSON(t, apiwire.StoreStatus{Store: "vault", Status: storebackends.StatusNeverSynced, SyncStatus: &storebackends.SyncStatus{
		LastAttempt: t0, LastError: "fetch failed: connection refused", MaxStaleness: "5m0s",
	}}, `{"store":"vault","status":"never_synced","last_success":"0001-01-01T00:00:00Z","last_attempt":"2030-01-02T03:04:05.123456789Z",
		"last_error":"fetch failed: connection refused","staleness":"","max_staleness":"5m0s","credentials":0,"syncs":0,"changes":0}`)
	synced := apiwire.StoreStatus{Store: "vault", Status: storebackends.StatusOK, Credentials: 4, SyncStatus: &storebackends.SyncStatus{
		LastSuccess: t0, LastAttempt: t0, Staleness: "1.5s", MaxStaleness: "5m0s",
		Problems: []storebackends.Problem{{Source: "secret/agents/x", Name: "X", Reason: "deleted"}, {Source: "secret/agents/y", Reason: "no value"}},
		Syncs:    7, Changes: 2,
	}}
	const syncedJSON = `{"store":"vault","status":"ok","last_success":"2030-01-02T03:04:05.123456789Z","last_attempt":"2030-01-02T03:04:05.123456789Z",
		"staleness":"1.5s","max_staleness":"5m0s","credentials":4,
		"problems":[{"source":"secret/agents/x","name":"X","reason":"deleted"},{"source":"secret/agents/y","reason":"no value"}],"syncs":7,"changes":2}`
	assertJSON(t, synced, syncedJSON)

	// A client gets each kind back as it was: SyncStatus only for synced
	// stores, Writable only for the others.
	var list apiwire.StoreList
	data, err := json.Marshal(apiwire.StoreList{Stores: []apiwire.StoreStatus{builtin, synced}})
	if err != nil {
		t.Fatal(err)
	}
	decodeStrict(t, string(data), &list)
	if !reflect.DeepEqual(list.Stores, []apiwire.StoreStatus{builtin, synced}) {
		t.Errorf("decoded stores = %+v", list.Stores)
	}
	if list.Stores[0].SyncStatus != nil || list.Stores[1].Writable != nil {
		t.Errorf("kinds mixed up on decoding: %+v", list.Stores)
	}
}

func TestErrorAndHealthShapes(t *testing.T) {
	assertJSON(t, apiwire.Error{Error: "no such endpoint"}, `{"error":"no such endpoint"}`)
	assertJSON(t, apiwire.Health{Status: apiwire.HealthOK}, `{"status":"ok"}`)
	assertJSON(t, apiwire.Health{Status: apiwire.HealthDegraded, Reason: "stale"}, `{"status":"degraded","reason":"stale"}`)
}

// AuthTypes is the server's list: each is a type services accepts, and
// the server's own message for an unknown type names exactly these.
func TestAuthTypesAreTheServers(t *testing.T) {
	types := apiwire.AuthTypes()
	_, err := compiledType(t, "no-such-type")
	if err == nil || !strings.Contains(err.Error(), "unknown type") {
		t.Fatalf("an unknown type: %v", err)
	}
	listed := err.Error()[strings.Index(err.Error(), "(want "):]
	for _, typ := range types {
		if e, _ := compiledType(t, typ); e {
			t.Errorf("the server does not know the type %q apiwire.AuthTypes offers", typ)
		}
		if !regexp.MustCompile(`\b` + regexp.QuoteMeta(typ) + `\b`).MatchString(listed) {
			t.Errorf("the server's list %q lacks %q", listed, typ)
		}
	}
	if n := strings.Count(listed, ",") + 2; n != len(types) { // "a, b, ... or z"
		t.Errorf("the server lists %d types (%s), apiwire.AuthTypes %d: %v", n, listed, len(types), types)
	}
	types[0] = "changed"
	if apiwire.AuthTypes()[0] != apiwire.AuthBearer {
		t.Error("AuthTypes returns a shared slice a caller can change")
	}
}

// compiledType reports whether the server calls typ unknown, with the
// error of a service of that type.
func compiledType(t *testing.T, typ string) (unknown bool, err error) {
	t.Helper()
	err = apiwire.Service{Name: "x", Host: "api.example.com", Auth: apiwire.ServiceAuth{Type: typ}}.Validate()
	return err != nil && strings.Contains(err.Error(), "unknown type"), err
}
