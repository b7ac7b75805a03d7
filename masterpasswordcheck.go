package agentvault

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/caddyserver/caddy/v2"

	"github.com/agentvault/caddy-agent-vault/internal/masterpassword"
)

// The master password check: without one, the built-in store (and the
// cluster's Caddy storage) fail in Provision, and the user reads that
// at the end of a chain of Caddy's JSON log lines and wrapped errors
// ("loading initial config: loading new config: loading agent_vault app
// module: ..."). `run` and `start` (so `server` too) check it first,
// from the config the instance check already reads (instance.go), and
// exit with one message saying what to set. A config this cannot read
// is left to Caddy, as are the other errors of those modules.

// passwordUser is a module of the config that needs the master password.
type passwordUser struct {
	what        string // "the built-in store", ...
	value, file string // its master_password and master_password_file
}

// passwordConfig is what the check reads of a config.
type passwordConfig struct {
	Storage *struct {
		Module             string `json:"module"`
		MasterPassword     string `json:"master_password"`
		MasterPasswordFile string `json:"master_password_file"`
	} `json:"storage,omitempty"`
	Apps struct {
		AgentVault *struct {
			Stores []struct {
				Backend            string `json:"backend"`
				MasterPassword     string `json:"master_password"`
				MasterPasswordFile string `json:"master_password_file"`
			} `json:"stores"`
		} `json:"agent_vault,omitempty"`
	} `json:"apps"`
}

// passwordUsers lists the modules of a JSON config that need the master
// password; none if the config does not decode.
func passwordUsers(raw []byte) []passwordUser {
	var cfg passwordConfig
	if len(raw) == 0 || json.Unmarshal(raw, &cfg) != nil {
		return nil
	}
	var users []passwordUser
	if av := cfg.Apps.AgentVault; av != nil {
		for _, st := range av.Stores {
			if st.Backend == "builtin" {
				users = append(users, passwordUser{"the built-in credential store", st.MasterPassword, st.MasterPasswordFile})
			}
		}
	}
	if s := cfg.Storage; s != nil && s.Module == "agent_vault_state" {
		users = append(users, passwordUser{"the Caddy storage in the state database", s.MasterPassword, s.MasterPasswordFile})
	}
	return users
}

// checkMasterPassword resolves the master password of every module of
// raw that needs one, as the modules will (masterpassword.Resolve), and
// says what to set when one does not resolve. The password read is
// cleared at once.
func checkMasterPassword(raw []byte) error {
	for _, u := range passwordUsers(raw) {
		pw, err := masterpassword.Resolve(caddy.NewReplacer(), u.value, u.file)
		clear(pw)
		switch {
		case errors.Is(err, masterpassword.ErrMissing):
			return missingPasswordError(u)
		case err != nil:
			return fmt.Errorf("%s cannot use its master password: %v", u.what, err)
		}
	}
	return nil
}

// envPlaceholder finds {env.NAME} in a config value.
var envPlaceholder = regexp.MustCompile(`\{env\.([A-Za-z_][A-Za-z0-9_]*)\}`)

// missingPasswordError says which variables to set, as the config names
// them (Caddyfile.example: AGENT_VAULT_MASTER_PASSWORD and
// AGENT_VAULT_MASTER_PASSWORD_FILE), with an example.
func missingPasswordError(u passwordUser) error {
	var vars []string
	for _, m := range envPlaceholder.FindAllStringSubmatch(u.value, -1) {
		vars = append(vars, m[1])
	}
	var fileVars []string
	for _, m := range envPlaceholder.FindAllStringSubmatch(u.file, -1) {
		fileVars = append(fileVars, m[1])
	}
	// The first line says what to set: it is the line a user reads.
	var b strings.Builder
	fmt.Fprintf(&b, "no master password: %s needs one, and none is set. ", u.what)
	if len(vars) == 0 && len(fileVars) == 0 {
		b.WriteString("Set master_password or master_password_file in its config (as {env.NAME} placeholders, to keep it out of the file).\n")
		b.WriteString(passwordKeep)
		return errors.New(b.String())
	}
	b.WriteString("Set ")
	var opts []string
	for _, v := range vars {
		opts = append(opts, v+" (the passphrase)")
	}
	for _, v := range fileVars {
		if !slices.Contains(vars, v) {
			opts = append(opts, v+" (a file holding it, e.g. a mounted secret)")
		}
	}
	b.WriteString(strings.Join(opts, " or "))
	b.WriteString(", for example:\n")
	if len(vars) > 0 {
		fmt.Fprintf(&b, "  %s='a long passphrase you keep' agent-vault server\n", vars[0])
	} else {
		fmt.Fprintf(&b, "  %s=/run/secrets/agent-vault-master agent-vault server\n", fileVars[0])
	}
	b.WriteString(passwordKeep)
	return errors.New(b.String())
}

// passwordKeep ends the missing-password message.
const passwordKeep = "It encrypts the credentials with a key derived from it. Keep it: the stored credentials cannot be decrypted without it, and every broker of a cluster needs the same one."
