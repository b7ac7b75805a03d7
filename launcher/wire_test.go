package launcher

import (
	"context"
	"reflect"
	"testing"
	"time"

	"github.com/agentvault/caddy-agent-vault/caddymodule/apiclient"
	"github.com/agentvault/caddy-agent-vault/caddymodule/apiwire"
)

// The fake speaks the server's wire format: a session it encodes comes
// back whole through apiclient, so the launcher tests exercise real
// decoding.
func TestFakeAPISpeaksTheWire(t *testing.T) {
	api := newFakeAPI(t)
	until := time.Date(2030, 1, 2, 3, 5, 5, 0, time.UTC)
	want := apiwire.Session{
		ID:             testSessionID,
		Token:          testSessionToken,
		ProxyURL:       testProxyURL,
		CAPEM:          api.caPEM,
		ExpiresAt:      time.Date(2030, 1, 2, 3, 4, 5, 123456789, time.UTC),
		Services:       []string{"github", "openai"},
		Placeholders:   map[string]string{"GITHUB_TOKEN": testPlaceholder, "OPENAI_API_KEY": "agvph_openai"},
		Agent:          "local",
		LeaseTimeout:   "30s",
		LeaseExpiresAt: &until,
	}
	api.set(func(f *fakeAPI) { f.session = want })
	c, err := apiclient.New(api.srv.URL, testAdminToken)
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.CreateSession(context.Background(), apiwire.SessionRequest{Services: []string{"github", "openai"}, TTL: "1h30m", Lease: true})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(*got, want) {
		t.Errorf("decoded session = %+v\nwant %+v", *got, want)
	}
	creates, _ := api.calls()
	if len(creates) != 1 || creates[0].raw["lease"] != true || creates[0].body.TTL != "1h30m" {
		t.Errorf("creates = %+v", creates)
	}
}
