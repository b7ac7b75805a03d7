package caddymodule

import (
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
)

// metrics_token: placeholders expanded, the admin token's rule, and
// errors that never repeat the token.
func TestCheckMetricsToken(t *testing.T) {
	t.Setenv("AGENT_VAULT_TEST_METRICS_TOKEN", "scrape-"+strings.Repeat("a1", 10))
	for _, tc := range []struct {
		token, want, err string
	}{
		{"", "", ""},
		{"{env.AGENT_VAULT_TEST_METRICS_TOKEN}", "scrape-" + strings.Repeat("a1", 10), ""},
		{"{env.AGENT_VAULT_TEST_METRICS_UNSET}", "", ""},
		{"short-secret", "", "metrics_token: the metrics token is 12 bytes long: use at least 16"},
		{"with a space in the middle", "", "space"},
		{"avt_" + strings.Repeat("0", 40), "", "prefix of agent tokens"},
	} {
		a := App{MetricsToken: tc.token}
		err := a.checkMetricsToken(caddy.NewReplacer())
		switch {
		case tc.err == "" && (err != nil || a.MetricsToken != tc.want):
			t.Errorf("%q: %v, token %q, want %q", tc.token, err, a.MetricsToken, tc.want)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%q: %v, want an error saying %q", tc.token, err, tc.err)
		case err != nil && strings.Contains(err.Error(), tc.token):
			t.Errorf("%q: the error repeats the token: %v", tc.token, err)
		}
	}
}
