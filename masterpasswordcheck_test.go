package agentvault

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCheckMasterPassword(t *testing.T) {
	t.Setenv("AGENT_VAULT_DATA_DIR", t.TempDir())
	t.Setenv("AGENT_VAULT_MASTER_PASSWORD", "")
	t.Setenv("AGENT_VAULT_MASTER_PASSWORD_FILE", "")
	raw := quietConfig("Caddyfile.example", "caddyfile")
	if raw == nil {
		t.Fatal("Caddyfile.example does not adapt")
	}
	err := checkMasterPassword(raw)
	if err == nil {
		t.Fatal("no master password accepted")
	}
	for _, want := range []string{"no master password", "AGENT_VAULT_MASTER_PASSWORD (the passphrase)",
		"AGENT_VAULT_MASTER_PASSWORD_FILE (a file holding it", "AGENT_VAULT_MASTER_PASSWORD='a long passphrase you keep' agent-vault server"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}

	// The first line, the one a user reads, says what to set.
	if first, _, _ := strings.Cut(err.Error(), "\n"); !strings.Contains(first, "Set AGENT_VAULT_MASTER_PASSWORD") || len(first) > 300 {
		t.Errorf("first line %q: want one naming AGENT_VAULT_MASTER_PASSWORD, under 300 characters", first)
	}

	t.Setenv("AGENT_VAULT_MASTER_PASSWORD", "a long test passphrase")
	if err := checkMasterPassword(raw); err != nil {
		t.Errorf("with AGENT_VAULT_MASTER_PASSWORD: %v", err)
	}
	t.Setenv("AGENT_VAULT_MASTER_PASSWORD", "")
	file := filepath.Join(t.TempDir(), "pw")
	os.WriteFile(file, []byte("from a file\n"), 0o600)
	t.Setenv("AGENT_VAULT_MASTER_PASSWORD_FILE", file)
	if err := checkMasterPassword(raw); err != nil {
		t.Errorf("with AGENT_VAULT_MASTER_PASSWORD_FILE: %v", err)
	}
	// A file that cannot be read is said at once too, without its content.
	t.Setenv("AGENT_VAULT_MASTER_PASSWORD_FILE", filepath.Join(t.TempDir(), "missing"))
	if err := checkMasterPassword(raw); err == nil || !strings.Contains(err.Error(), "reading master_password_file") {
		t.Errorf("unreadable file: %v", err)
	}
	// An empty file is no password: said of the file, which takes
	// precedence over a passphrase set as well (never "none is set").
	os.WriteFile(file, []byte("\n"), 0o600)
	t.Setenv("AGENT_VAULT_MASTER_PASSWORD_FILE", file)
	t.Setenv("AGENT_VAULT_MASTER_PASSWORD", "a long test passphrase")
	err = checkMasterPassword(raw)
	if err == nil || !strings.Contains(err.Error(), "master_password_file "+file+" is empty") ||
		!strings.Contains(err.Error(), "master_password is set too") || strings.Contains(err.Error(), "none is set") {
		t.Errorf("empty file: %v", err)
	}
	// A literal passphrase with braces is never quoted.
	if err := checkMasterPassword([]byte(`{"apps":{"agent_vault":{"stores":[{"backend":"builtin","master_password":"hunter{x9q}2"}]}}}`)); err == nil ||
		strings.Contains(err.Error(), "x9q") || !strings.Contains(err.Error(), "unknown {placeholder}") {
		t.Errorf("literal braces: %v", err)
	}
}

func TestCheckMasterPasswordOtherConfigs(t *testing.T) {
	t.Setenv("MY_PW", "")
	for _, tc := range []struct {
		name, config, says string
	}{
		{"no builtin store", `{"apps":{"agent_vault":{"stores":[{"backend":"hashicorp"}]}}}`, ""},
		{"no app", `{"apps":{"http":{}}}`, ""},
		{"not JSON", `{`, ""},
		{"own variable", `{"apps":{"agent_vault":{"stores":[{"backend":"builtin","master_password":"{env.MY_PW}"}]}}}`, "Set MY_PW (the passphrase), for example:\n  MY_PW="},
		{"file variable only", `{"apps":{"agent_vault":{"stores":[{"backend":"builtin","master_password_file":"{env.MY_PW_FILE}"}]}}}`, "MY_PW_FILE=/run/secrets/"},
		{"nothing configured", `{"apps":{"agent_vault":{"stores":[{"backend":"builtin"}]}}}`, "Set master_password or master_password_file in its config"},
		{"state storage", `{"storage":{"module":"agent_vault_state","master_password":"{env.MY_PW}"},"apps":{}}`, "the Caddy storage in the state database"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := checkMasterPassword([]byte(tc.config))
			if tc.says == "" {
				if err != nil {
					t.Errorf("refused: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.says) {
				t.Errorf("error %v, want it to say %q", err, tc.says)
			}
		})
	}
	// A literal password in the config is a password.
	if err := checkMasterPassword([]byte(`{"apps":{"agent_vault":{"stores":[{"backend":"builtin","master_password":"literal pw"}]}}}`)); err != nil {
		t.Errorf("literal: %v", err)
	}
}
