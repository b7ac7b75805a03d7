package launcher

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestParseConfineMode(t *testing.T) {
	for in, want := range map[string]ConfineMode{
		"": ConfineOff, "0": ConfineOff, "false": ConfineOff, "off": ConfineOff,
		"1": ConfineStrict, "true": ConfineStrict, "strict": ConfineStrict, " TRUE ": ConfineStrict,
		"best-effort": ConfineBestEffort,
	} {
		if got, err := ParseConfineMode(in); err != nil || got != want {
			t.Errorf("ParseConfineMode(%q) = %v, %v, want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"capture", "2", "best_effort", "yes please"} {
		if _, err := ParseConfineMode(bad); err == nil {
			t.Errorf("ParseConfineMode(%q) accepted", bad)
		} else if strings.Contains(err.Error(), bad) {
			t.Errorf("the error quotes the value: %v", err)
		}
	}
}

func TestConfinedProxy(t *testing.T) {
	child, target, port, err := confinedProxy("http://av:tok@127.0.0.1:14322")
	if err != nil || child != "http://av:tok@127.0.0.1:14322" || target != "127.0.0.1:14322" || port != 14322 {
		t.Errorf("loopback proxy: %q %q %d %v", child, target, port, err)
	}
	// A remote broker: the command still uses its own loopback, the
	// launcher dials the broker.
	child, target, port, err = confinedProxy("http://av:tok@broker.internal:8080")
	if err != nil || child != "http://av:tok@127.0.0.1:8080" || target != "broker.internal:8080" || port != 8080 {
		t.Errorf("remote proxy: %q %q %d %v", child, target, port, err)
	}
	if _, target, port, err = confinedProxy("http://broker"); err != nil || target != "broker:80" || port != 80 {
		t.Errorf("no port: %q %d %v", target, port, err)
	}
	for _, bad := range []string{"https://av:tok@127.0.0.1:14322", "::", "http://127.0.0.1:0", "http://127.0.0.1:99999"} {
		if _, _, _, err := confinedProxy(bad); err == nil {
			t.Errorf("confinedProxy(%q) accepted", bad)
		} else if strings.Contains(err.Error(), "tok") {
			t.Errorf("error leaks the URL: %v", err)
		}
	}
}

func TestHiddenPaths(t *testing.T) {
	home := t.TempDir()
	data := filepath.Join(home, ".local", "share", "agent-vault")
	caddy := filepath.Join(home, ".local", "share", "caddy")
	pw := filepath.Join(home, "pw")
	link := filepath.Join(home, "pw-link")
	extra := filepath.Join(home, "extra")
	runtime := filepath.Join(home, "run")
	for _, d := range []string{data, caddy, extra, runtime} {
		os.MkdirAll(d, 0o700)
	}
	for _, f := range []string{filepath.Join(data, "agent.token"), pw, filepath.Join(home, ".vault-token")} {
		os.WriteFile(f, []byte("x"), 0o600)
	}
	os.Symlink(pw, link)
	cfg := &Config{
		Env:         []string{"HOME=" + home, "AGENT_VAULT_MASTER_PASSWORD_FILE=" + link, "XDG_RUNTIME_DIR=" + runtime},
		TempDir:     t.TempDir(),
		ConfineHide: []string{extra},
		secretFiles: []string{filepath.Join(data, "agent.token"), filepath.Join(home, "absent-token")},
	}
	dirs, files, err := hiddenPaths(cfg)
	if err != nil {
		t.Fatal(err)
	}
	// Only what is under home is this test's; system sockets (docker,
	// D-Bus) come and go with the machine.
	mine := func(list []string) []string {
		list = slices.DeleteFunc(list, func(p string) bool { return !within(p, home) })
		slices.Sort(list)
		return list
	}
	dirs, files = mine(dirs), mine(files)
	// agent.token is under the hidden data dir: not mounted over twice;
	// the symbolic link is hidden at its target; what is absent is skipped.
	if want := []string{data, caddy, extra, runtime}; !slices.Equal(dirs, want) {
		t.Errorf("dirs = %v, want %v", dirs, want)
	}
	if want := []string{filepath.Join(home, ".vault-token"), pw}; !slices.Equal(files, want) {
		t.Errorf("files = %v, want %v", files, want)
	}

	// Hiding what holds the CA files the command needs is refused.
	cfg.ConfineHide = []string{filepath.Dir(cfg.TempDir)}
	if _, _, err := hiddenPaths(cfg); err == nil || !strings.Contains(err.Error(), "CA files") {
		t.Errorf("hiding the temp dir's parent: %v", err)
	}
	for _, bad := range []string{"relative", filepath.Join(home, "nope")} {
		cfg.ConfineHide = []string{bad}
		if _, _, err := hiddenPaths(cfg); err == nil {
			t.Errorf("--confine-hide %s accepted", bad)
		}
	}
}

func TestMainConfineFlags(t *testing.T) {
	api := newFakeAPI(t)
	for _, tc := range []struct {
		args []string
		env  []string
		want string
	}{
		{[]string{"--confine=sometimes", "--", "true"}, nil, "invalid value for a flag"},
		{nil, []string{ConfineEnv + "=sometimes"}, "$" + ConfineEnv},
		{[]string{"--confine-hide", "/tmp", "--", "true"}, nil, "--confine-hide applies only with --confine"},
	} {
		args := append([]string{"--addr", api.srv.URL}, tc.args...)
		if tc.args == nil {
			args = append(args, "--", "true")
		}
		env := append(baseEnv(), "AGENT_VAULT_TOKEN="+testAdminToken)
		env = append(env, tc.env...)
		var stderr strings.Builder
		code := Main(args, env, nil, nil, &stderr)
		if code != ExitSetup || !strings.Contains(stderr.String(), tc.want) {
			t.Errorf("%v %v: exit %d, stderr %q, want %q", tc.args, tc.env, code, stderr.String(), tc.want)
		}
	}
	if creates, _ := api.calls(); len(creates) != 0 {
		t.Errorf("%d sessions created for refused flags", len(creates))
	}
}
