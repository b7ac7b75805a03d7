package launcher

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestBuildWgetrcKeepsUserLinesAndAppendsOurs(t *testing.T) {
	user := "# my settings\r\ntries = 3\nHTTPS_PROXY = http://corp:3128\nuse-proxy=off\n  Proxy_User = me\nproxy_password=pw\nca_certificate=/etc/other.pem\ncheck_certificate = on\nno_proxy = *\ntimeout = 9"
	got := string(buildWgetrc([]byte(user), "/tmp/bundle.pem"))
	for _, kept := range []string{"\n# my settings\n", "\ntries = 3\n", "\ncheck_certificate = on\n", "\ntimeout = 9\n"} {
		if !strings.Contains(got, kept) {
			t.Errorf("user line %q not kept:\n%s", kept, got)
		}
	}
	for _, line := range []string{"HTTPS_PROXY = http://corp:3128", "use-proxy=off", "  Proxy_User = me", "proxy_password=pw", "ca_certificate=/etc/other.pem", "no_proxy = *"} {
		if !strings.Contains(got, "\n# av-launch: set below or by the proxy variables: "+line+"\n") {
			t.Errorf("%q not commented out:\n%s", line, got)
		}
	}
	if !strings.HasSuffix(got, "ca_certificate = /tmp/bundle.pem\nuse_proxy = on\n") {
		t.Errorf("ours not appended last:\n%s", got)
	}
	if strings.Contains(got, "\r") {
		t.Error("CR kept")
	}
	if empty := string(buildWgetrc(nil, "/b")); strings.Contains(empty, "user's") || !strings.Contains(empty, "ca_certificate = /b\n") {
		t.Errorf("no user wgetrc: %q", empty)
	}
}

func TestWgetrcCommand(t *testing.T) {
	for line, want := range map[string]string{
		"https_proxy = x": "httpsproxy", "HTTPS-PROXY=x": "httpsproxy", "  Use_Proxy  =  off": "useproxy",
		"# https_proxy = x": "", "": "", "   ": "", "tries": "tries",
	} {
		if got := wgetrcCommand(line); got != want {
			t.Errorf("wgetrcCommand(%q) = %q, want %q", line, got, want)
		}
	}
}

func TestUserWgetrc(t *testing.T) {
	home := t.TempDir()
	if got, err := userWgetrc([]string{"HOME=" + home}); got != nil || err != nil {
		t.Errorf("no ~/.wgetrc: %q %v", got, err)
	}
	if err := os.WriteFile(filepath.Join(home, ".wgetrc"), []byte("tries = 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, err := userWgetrc([]string{"HOME=" + home}); string(got) != "tries = 1\n" || err != nil {
		t.Errorf("~/.wgetrc: %q %v", got, err)
	}
	other := filepath.Join(t.TempDir(), "rc")
	if err := os.WriteFile(other, []byte("tries = 2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// $WGETRC wins over ~/.wgetrc, as in wget.
	if got, err := userWgetrc([]string{"HOME=" + home, "WGETRC=" + other}); string(got) != "tries = 2\n" || err != nil {
		t.Errorf("$WGETRC: %q %v", got, err)
	}
	if _, err := userWgetrc([]string{"WGETRC=" + home}); err == nil {
		t.Error("a directory as WGETRC was read")
	}
}

func TestWriteWgetrcFile(t *testing.T) {
	home, tmp := t.TempDir(), t.TempDir()
	if err := os.WriteFile(filepath.Join(home, ".wgetrc"), []byte("tries = 7\nhttps_proxy = http://corp:1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cfg := &Config{Env: []string{"HOME=" + home}, TempDir: tmp, Stderr: &stderr, ProgName: "av-launch"}
	h, err := writeWgetrc(cfg, "/tmp/b.pem")
	if err != nil {
		t.Fatal(err)
	}
	defer h.release()
	info, err := os.Stat(h.path)
	if err != nil || info.Mode().Perm() != 0o600 || filepath.Dir(h.path) != tmp {
		t.Fatalf("WGETRC %s: %v %v", h.path, info, err)
	}
	if pid, ok := caFilePID(filepath.Base(h.path)); !ok || pid != os.Getpid() {
		t.Errorf("%s is not a file the stale cleanup knows", h.path)
	}
	data, _ := os.ReadFile(h.path)
	if !strings.Contains(string(data), "\ntries = 7\n") || !strings.HasSuffix(string(data), "ca_certificate = /tmp/b.pem\nuse_proxy = on\n") {
		t.Errorf("content:\n%s", data)
	}
	if stderr.Len() != 0 {
		t.Errorf("warned: %s", stderr.String())
	}
	// An unreadable user wgetrc: a warning, and ours all the same.
	cfg.Env = []string{"WGETRC=" + home}
	h2, err := writeWgetrc(cfg, "/tmp/b.pem")
	if err != nil {
		t.Fatal(err)
	}
	defer h2.release()
	if !strings.Contains(stderr.String(), "warning: not keeping your wgetrc settings") {
		t.Errorf("no warning: %q", stderr.String())
	}
}

func TestParseNodeVersion(t *testing.T) {
	for in, want := range map[string][2]int{"v20.20.2": {20, 20}, "v22.21.0": {22, 21}, "v24.0.0-pre": {24, 0}} {
		major, minor, ok := parseNodeVersion(in)
		if !ok || major != want[0] || minor != want[1] {
			t.Errorf("parseNodeVersion(%q) = %d.%d %v", in, major, minor, ok)
		}
	}
	for _, in := range []string{"", "20.1.0", "v20", "vx.1", "v-1.2"} {
		if _, _, ok := parseNodeVersion(in); ok {
			t.Errorf("parseNodeVersion(%q) accepted", in)
		}
	}
	for v, want := range map[[2]int]bool{{20, 20}: false, {22, 20}: false, {22, 21}: true, {23, 11}: false, {24, 0}: true, {25, 1}: true} {
		if got := nodeHonoursEnvProxy(v[0], v[1]); got != want {
			t.Errorf("nodeHonoursEnvProxy(%v) = %v", v, got)
		}
	}
}

func TestWarnOldNode(t *testing.T) {
	dir := t.TempDir()
	fake := func(name, version string) string {
		p := filepath.Join(dir, name)
		// Says so if it sees the launcher's environment: it must not.
		script := "#!/bin/sh\n[ -n \"$AGENT_VAULT_TOKEN\" ] && echo leaked\necho " + version + "\n"
		if err := os.WriteFile(p, []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, c := range []struct {
		path string
		warn bool
	}{
		{fake("node", "v20.20.2"), true},
		{fake("nodejs", "v22.3.0"), true},
		{filepath.Join(dir, "new", "node"), false},
		{fake("notnode", "v20.0.0"), false},
	} {
		if strings.Contains(c.path, "new") {
			os.Mkdir(filepath.Dir(c.path), 0o755)
			os.WriteFile(c.path, []byte("#!/bin/sh\necho v24.11.1\n"), 0o755)
		}
		var stderr bytes.Buffer
		cfg := &Config{ProgName: "av-launch", Stderr: &stderr, Env: []string{"AGENT_VAULT_TOKEN=secret"}}
		warnOldNode(context.Background(), cfg, c.path)
		got := stderr.String()
		if (got != "") != c.warn {
			t.Errorf("%s: warning %q, want one: %v", c.path, got, c.warn)
		}
		if c.warn && (!strings.Contains(got, "ignores HTTPS_PROXY") || strings.Count(got, "\n") != 1 || strings.Contains(got, "leaked")) {
			t.Errorf("%s: warning %q", c.path, got)
		}
	}
}

func TestPlaceholderMayNotNameAnNPMSetting(t *testing.T) {
	for _, name := range []string{"NPM_CONFIG_CAFILE", "npm_config_cafile", "Npm_Config_Https_Proxy", "WGETRC", "PIP_CERT"} {
		if err := checkPlaceholders(map[string]string{name: "x"}); err == nil {
			t.Errorf("placeholder %s accepted", name)
		}
	}
	if err := checkPlaceholders(map[string]string{"NPM_TOKEN": "x"}); err != nil {
		t.Errorf("NPM_TOKEN refused: %v", err)
	}
}
