package launcher

import (
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

func TestFormatTTL(t *testing.T) {
	if got := formatTTL(0); got != "" {
		t.Errorf("formatTTL(0) = %q, want the server's default", got)
	}
	for d, want := range map[time.Duration]string{
		time.Hour:                    "1h",
		90 * time.Minute:             "1h30m",
		30 * time.Minute:             "30m",
		90 * time.Second:             "1m30s",
		time.Hour + time.Second:      "1h0m1s",
		1500 * time.Millisecond:      "1.5s",
		24*time.Hour + 5*time.Minute: "24h5m",
	} {
		got := formatTTL(d)
		if got != want {
			t.Errorf("formatTTL(%v) = %q, want %q", d, got, want)
		}
		if back, err := time.ParseDuration(got); err != nil || back != d {
			t.Errorf("formatTTL(%v) = %q does not parse back", d, got)
		}
	}
}

func TestHostPort(t *testing.T) {
	for addr, want := range map[string]string{
		"http://127.0.0.1:14321":  "127.0.0.1:14321",
		"http://localhost":        "localhost:80",
		"https://vault.internal/": "vault.internal:443",
		"http://[::1]:9/base":     "[::1]:9",
	} {
		u, err := url.Parse(addr)
		if err != nil {
			t.Fatal(err)
		}
		if got := hostPort(u); got != want {
			t.Errorf("hostPort(%q) = %q, want %q", addr, got, want)
		}
	}
}

func TestChildEnv(t *testing.T) {
	parent := []string{
		"KEEP=1", "HTTPS_PROXY=outer", "https_proxy=outer", "Https_Proxy=other-case",
		"ALL_PROXY=outer", "all_proxy=outer", "NO_PROXY=*", "no_proxy=*",
		"SSL_CERT_FILE=/old", "NODE_EXTRA_CA_CERTS=/old", "NODE_USE_ENV_PROXY=0",
		"PIP_CERT=/old", "AWS_CA_BUNDLE=/old", "NIX_SSL_CERT_FILE=/old", "HTTPLIB2_CA_CERTS=/old",
		"NPM_CONFIG_CAFILE=/old", "Npm_Config_Proxy=old", "npm_config_ca=old", "WGETRC=/old",
		"npm_config_registry=kept",
		"AGENT_VAULT_TOKEN=admin", "API_KEY=real", "API_KEY=real-dup",
		"=C:=C:\\", "NOEQUALS",
	}
	got := childEnv(parent, childSettings{
		proxyURL:     "http://av:t@127.0.0.1:2",
		noProxy:      "127.0.0.1:1",
		bundlePath:   "/tmp/bundle",
		nodeCAPath:   "/tmp/ca",
		wgetrcPath:   "/tmp/wgetrc",
		placeholders: map[string]string{"API_KEY": "ph1", "OTHER": "ph2"},
	})
	want := []string{
		"KEEP=1", "Https_Proxy=other-case", "npm_config_registry=kept", "=C:=C:\\", "NOEQUALS",
		"HTTPS_PROXY=http://av:t@127.0.0.1:2", "https_proxy=http://av:t@127.0.0.1:2",
		"HTTP_PROXY=http://av:t@127.0.0.1:2", "http_proxy=http://av:t@127.0.0.1:2",
		"npm_config_proxy=http://av:t@127.0.0.1:2", "npm_config_https_proxy=http://av:t@127.0.0.1:2",
		"PIP_PROXY=http://av:t@127.0.0.1:2",
		"NO_PROXY=127.0.0.1:1", "no_proxy=127.0.0.1:1", "npm_config_noproxy=127.0.0.1:1", "NODE_USE_ENV_PROXY=1",
		"SSL_CERT_FILE=/tmp/bundle", "REQUESTS_CA_BUNDLE=/tmp/bundle", "CURL_CA_BUNDLE=/tmp/bundle",
		"GIT_SSL_CAINFO=/tmp/bundle", "DENO_CERT=/tmp/bundle",
		"PIP_CERT=/tmp/bundle", "AWS_CA_BUNDLE=/tmp/bundle", "NIX_SSL_CERT_FILE=/tmp/bundle",
		"HTTPLIB2_CA_CERTS=/tmp/bundle", "CARGO_HTTP_CAINFO=/tmp/bundle",
		"CLOUDSDK_CORE_CUSTOM_CA_CERTS_FILE=/tmp/bundle", "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH=/tmp/bundle",
		"npm_config_cafile=/tmp/bundle", "NODE_EXTRA_CA_CERTS=/tmp/ca", "WGETRC=/tmp/wgetrc",
		"API_KEY=ph1", "OTHER=ph2",
	}
	if !slices.Equal(got, want) {
		t.Errorf("childEnv =\n%q\nwant\n%q", got, want)
	}
}

func TestEnvNameAndLookup(t *testing.T) {
	for kv, want := range map[string]string{"A=b": "A", "A==b": "A", "A=": "A", "A": "A", "": "", "=C:=x": "=C:", "=": "="} {
		if got := envName(kv); got != want {
			t.Errorf("envName(%q) = %q, want %q", kv, got, want)
		}
	}
	env := []string{"PATH=/a", "PATHX=/x", "PATH=/b", "EMPTY=", "BARE"}
	for name, want := range map[string]string{"PATH": "/b", "EMPTY": "", "BARE": "", "MISSING": "", "PAT": ""} {
		if got := lookupEnv(env, name); got != want {
			t.Errorf("lookupEnv(%q) = %q, want %q", name, got, want)
		}
	}
}

func TestProxyURLWithCredentials(t *testing.T) {
	got, err := proxyURLWithCredentials("http://127.0.0.1:14322", "a/b@c:d%e f")
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(got)
	if err != nil {
		t.Fatal(err)
	}
	if pw, _ := u.User.Password(); pw != "a/b@c:d%e f" || u.User.Username() != "av" || u.Host != "127.0.0.1:14322" {
		t.Errorf("round trip failed: %q", got)
	}
	for _, raw := range []string{"", "127.0.0.1:1", "socks5://h:1", "http://", "http://h\x7f"} {
		if _, err := proxyURLWithCredentials(raw, "t"); err == nil {
			t.Errorf("%q accepted", raw)
		}
	}
	if _, err := proxyURLWithCredentials("http://h:1", ""); err == nil {
		t.Error("empty token accepted")
	}
}

func TestCheckPlaceholders(t *testing.T) {
	if err := checkPlaceholders(map[string]string{"GITHUB_TOKEN": "x", "_a1": "", "lower": "y"}); err != nil {
		t.Errorf("valid placeholders rejected: %v", err)
	}
	for _, bad := range []map[string]string{
		{"": "x"}, {"1A": "x"}, {"A-B": "x"}, {"A=B": "x"}, {"A B": "x"},
		{"SSL_CERT_FILE": "x"}, {"no_proxy": "x"}, {"AGENT_VAULT_TOKEN": "x"}, {"NODE_USE_ENV_PROXY": "x"},
		{"OK": "nul\x00byte"},
	} {
		if err := checkPlaceholders(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestParseCACerts(t *testing.T) {
	a, b := newTestCert(t, "a"), newTestCert(t, "b")
	got, err := parseCACerts("\n" + a + "\n\n" + b + "  \n")
	if err != nil || string(got) != a+b {
		t.Errorf("parseCACerts = %q, %v", got, err)
	}
	for name, text := range map[string]string{
		"empty":        "",
		"text":         "hello",
		"trailing":     a + "junk",
		"key":          a + "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n",
		"bad der":      "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
		"leading junk": "junk\n" + a,
	} {
		if _, err := parseCACerts(text); err == nil {
			t.Errorf("%s accepted", name)
		}
	}
}

func TestReadSystemRoots(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	explicit, first, second, blank := write("explicit", "E"), write("first", "F"), write("second", "S"), write("blank", " \n")
	missing := filepath.Join(dir, "missing")
	for _, tc := range []struct {
		sslCertFile string
		candidates  []string
		want        string
	}{
		{explicit, []string{first}, "E"},
		{missing, []string{missing, blank, dir, first, second}, "F"},
		{"", []string{second, first}, "S"},
		{missing, []string{missing}, ""},
	} {
		if got := string(readSystemRoots(tc.sslCertFile, tc.candidates)); got != tc.want {
			t.Errorf("readSystemRoots(%q, %q) = %q, want %q", tc.sslCertFile, tc.candidates, got, tc.want)
		}
	}
}

func TestJoinPEM(t *testing.T) {
	if got := string(joinPEM([]byte("a"), []byte("b\n"), nil, []byte("c"))); got != "a\nb\nc" {
		t.Errorf("joinPEM = %q", got)
	}
	if got := joinPEM(nil, []byte("x")); string(got) != "x" {
		t.Errorf("joinPEM(nil, x) = %q", got)
	}
}
