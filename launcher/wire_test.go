package launcher

import (
	"context"
	"net/url"
	"reflect"
	"testing"
	"time"

	"github.com/agentvault/caddy-agent-vault/caddymodule/apiwire"
)

// The server encodes its create answer as an apiwire.Session; the
// launcher must get every field back as sent.
func TestCreateSessionDecodesServerAnswer(t *testing.T) {
	api := newFakeAPI(t)
	want := apiwire.Session{
		ID:           testSessionID,
		Token:        testSessionToken,
		ProxyURL:     testProxyURL,
		CAPEM:        api.caPEM,
		ExpiresAt:    time.Date(2030, 1, 2, 3, 4, 5, 123456789, time.UTC),
		Services:     []string{"github", "openai"},
		Placeholders: map[string]string{"GITHUB_TOKEN": testPlaceholder, "OPENAI_API_KEY": "agvph_openai"},
	}
	api.set(func(f *fakeAPI) { f.session = want })
	c := &apiClient{base: mustParseURL(t, api.srv.URL), token: testAdminToken, http: newHTTPClient()}
	got, err := c.createSession(context.Background(), []string{"github", "openai"}, 90*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(*got, want) {
		t.Errorf("decoded session = %+v\nwant %+v", *got, want)
	}
}

// "All services" (nil) and "no services" (empty) must reach the server as
// different requests: the first omits the field, the second sends [] for
// the server to refuse, rather than both meaning all.
func TestCreateSessionServicesOnTheWire(t *testing.T) {
	for _, tc := range []struct {
		name     string
		services []string
		raw      any // the "services" field as sent; nil means absent
	}{
		{"all", nil, nil},
		{"empty", []string{}, []any{}},
		{"some", []string{"github"}, []any{"github"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			api := newFakeAPI(t)
			c := &apiClient{base: mustParseURL(t, api.srv.URL), token: testAdminToken, http: newHTTPClient()}
			if _, err := c.createSession(context.Background(), tc.services, time.Hour); err != nil {
				t.Fatal(err)
			}
			creates, _ := api.calls()
			if len(creates) != 1 {
				t.Fatalf("creates = %d", len(creates))
			}
			raw, present := creates[0].raw["services"]
			if present != (tc.raw != nil) || !reflect.DeepEqual(raw, tc.raw) {
				t.Errorf("services sent = %#v (present %v), want %#v", raw, present, tc.raw)
			}
			// The server tells nil from empty by decoding into the same type.
			if got := creates[0].body.Services; (got == nil) != (tc.services == nil) || len(got) != len(tc.services) {
				t.Errorf("server decodes services as %#v, want %#v", got, tc.services)
			}
		})
	}
}

func mustParseURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}
