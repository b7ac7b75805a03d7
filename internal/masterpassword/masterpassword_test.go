package masterpassword

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
)

func TestResolve(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "pw")
	if err := os.WriteFile(file, []byte("from file\r\n\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("AV_TEST_PW", "from env")
	repl := caddy.NewReplacer()
	for _, tc := range []struct {
		name, value, file, want string
		err                     error
	}{
		{name: "value", value: "{env.AV_TEST_PW}", want: "from env"},
		{name: "file wins", value: "{env.AV_TEST_PW}", file: file, want: "from file"},
		{name: "neither", err: ErrMissing},
		{name: "unset env", value: "{env.AV_TEST_UNSET}", err: ErrMissing},
	} {
		got, err := Resolve(repl, tc.value, tc.file)
		if !errors.Is(err, tc.err) || string(got) != tc.want {
			t.Errorf("%s: got %q, %v; want %q, %v", tc.name, got, err, tc.want, tc.err)
		}
	}
	if _, err := Resolve(repl, "", filepath.Join(dir, "missing")); err == nil || !strings.Contains(err.Error(), "master_password_file") {
		t.Errorf("missing file: %v", err)
	}
}
