package agentvault

import (
	"bufio"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/agentvault/caddy-agent-vault/internal/procguard"
)

// Caddy prints the whole environment for `environ` and for `run
// --environ`: the master password, the admin token and the stores'
// tokens included (procguard.SecretVars), into a terminal's scrollback,
// a CI log or a service manager's journal. The cobra initializer
// (instance.go) stops that before Caddy prints:
//
//   - `environ` runs nothing else, so the values of those variables are
//     replaced by hiddenValue first, those an --envfile would set
//     included (Caddy's loader never overwrites a variable already set).
//   - `run --environ` (and `start --environ`, should Caddy pass it on)
//     needs the real values, so it is refused while any of them is set,
//     in the environment or an --envfile.

// hiddenValue replaces a secret variable's value in `environ`'s output.
const hiddenValue = "[hidden]"

// hideSecretEnv replaces the value of every secret variable set in the
// environment or named in envfiles with hiddenValue.
func hideSecretEnv(envfiles []string) {
	for _, name := range presentSecrets(envfiles) {
		os.Setenv(name, hiddenValue)
	}
}

// refuseEnvironWithSecrets is the check of `run --environ`: an error
// naming the secret variables set (never their values), if any.
func refuseEnvironWithSecrets(verb string, envfiles []string) error {
	names := presentSecrets(envfiles)
	if len(names) == 0 {
		return nil
	}
	return fmt.Errorf("%s --environ would print the values of %s: drop --environ (agent-vault environ prints the environment with them hidden), or pass the secrets in files instead (AGENT_VAULT_MASTER_PASSWORD_FILE for the master password; without AGENT_VAULT_ADMIN_TOKEN the server keeps its admin token in <data dir>/admin.token)",
		verb, strings.Join(names, ", "))
}

// presentSecrets lists the secret variables set in the environment or
// assigned in one of envfiles (as Caddy's --envfile loader reads them:
// NAME=value lines, optionally after "export "), sorted.
func presentSecrets(envfiles []string) []string {
	secrets := procguard.SecretVars()
	var found []string
	for _, name := range secrets {
		if _, ok := os.LookupEnv(name); ok {
			found = append(found, name)
		}
	}
	for _, file := range envfiles {
		for _, name := range envfileNames(file) {
			if slices.Contains(secrets, name) && !slices.Contains(found, name) {
				found = append(found, name)
			}
		}
	}
	slices.Sort(found)
	return found
}

// envfileNames returns the names an env file assigns; none if it cannot
// be read (Caddy reports that).
func envfileNames(path string) []string {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var names []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if key, _, ok := strings.Cut(line, "="); ok {
			names = append(names, strings.TrimPrefix(key, "export "))
		}
	}
	return names
}
