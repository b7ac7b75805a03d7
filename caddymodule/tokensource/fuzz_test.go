package tokensource

import (
	"encoding/json"
	"reflect"
	"testing"
)

// FuzzParseSpec: ParseSpec never panics, and what it accepts validates,
// round-trips through JSON unchanged and names credentials only by
// valid names.
func FuzzParseSpec(f *testing.F) {
	for _, seed := range []string{
		`{"kind":"oauth2_refresh","token_url":"https://oauth2.googleapis.com/token","client_id":"c","client_secret":"CS","refresh_token":"RT","scopes":["a","b"],"client_auth":"client_secret_basic"}`,
		`{"kind":"oauth2_client_credentials","token_url":"https://x/t","client_id":"c","client_secret":"CS","audience":"aud"}`,
		`{"kind":"github_app","app_id":"1","private_key":"K","installation_id":"2","repositories":["r"],"permissions":{"contents":"read"}}`,
		`{"kind":"github_app","app_id":"1","private_key":"K","installation_id":"2","token_url":"https://x"}`,
		`{"kind":""}`, `[]`, `null`, `{"kind":"oauth2_refresh","scopes":null}`,
		`{"kind":"oauth2_client_credentials","TOKEN_URL":"https://x/t","client_id":"c","client_secret":"CS"}`,
		`{"kind":"github_app","app_id":"1","private_key":"K","installation_id":"2","token_url":null}`,
		`{"kind":"github_app","app_id":"1","private_key":"K","installation_id":"2","refresh_token":""}`,
		`{"kind":"oauth2_refresh","token_url":"https://x/t","client_id":"c","refresh_token":"ya29a0AfB_byC2xq9vNdK3kLmP0qRsTuVwXyZ1234567890abcdefghijkl"}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := ParseSpec(data)
		if err != nil {
			return
		}
		if err := s.Validate(); err != nil {
			t.Fatalf("accepted but does not validate: %v", err)
		}
		for _, n := range s.Inputs() {
			if !validInput(n) {
				t.Fatalf("input %q is not a credential name", n)
			}
		}
		doc, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		again, err := ParseSpec(doc)
		if err != nil {
			t.Fatalf("round trip of %s: %v", doc, err)
		}
		if !reflect.DeepEqual(normalize(s), normalize(again)) {
			t.Fatalf("round trip changed %+v into %+v", s, again)
		}
	})
}

// normalize maps empty lists and maps to nil (omitempty drops them).
func normalize(s Spec) Spec {
	if len(s.Scopes) == 0 {
		s.Scopes = nil
	}
	if len(s.Repositories) == 0 {
		s.Repositories = nil
	}
	if len(s.Permissions) == 0 {
		s.Permissions = nil
	}
	return s
}
