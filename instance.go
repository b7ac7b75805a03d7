package agentvault

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"

	"github.com/agentvault/caddy-agent-vault/caddymodule"
)

// One instance per data dir and admin endpoint, checked before Caddy
// runs (see caddymodule/instancelock.go for the lock and why).
//
// Caddy's `run` opens the admin endpoint before it provisions a single
// module, and opening a unix socket means unlinking whatever is at its
// path first: by the time the agent_vault app could refuse a second
// process on the same data dir, that process has already replaced the
// first one's admin socket (and removes its own on the way out), leaving
// the first unreachable by `stop` and `reload`. So for a config with the
// agent_vault app:
//
//   - `run` (and `start` and `server`, which end in a `run` child or
//     exec) takes the data dir's instance lock for the life of the
//     process before Caddy loads the config, and refuses an admin
//     endpoint another process already serves: a unix socket that
//     answers, or a TCP address bound elsewhere (Caddy would share it
//     through SO_REUSEPORT, and `stop` would stop either process).
//   - `stop` and `reload` with --config (and no --address) refuse a data
//     dir that no process holds, instead of knocking on a socket nobody
//     listens on, or on whatever else now answers there.
//   - `validate` and `adapt` provision without serving: the checks are
//     off there (caddymodule.DisableInstanceChecks), or they would
//     refuse the config of the very server that runs.
//
// These run as a cobra initializer, after cobra parsed the command line
// and before Caddy's own command function, with the flags re-read from
// the command's own definitions. The config is read and adapted quietly
// here and again by Caddy. Any config this cannot read is left to Caddy
// to report; with --envfile the check is skipped, since the environment
// Caddy will expand the config with is not loaded yet (the agent_vault
// app's own lock still applies, but only once the admin socket is open).

func init() { cobra.OnInitialize(checkInstanceOnCommand) }

// checkInstanceOnCommand dispatches on Caddy's verb (os.Args[1]: Caddy's
// commands take no flags before the verb).
func checkInstanceOnCommand() {
	if len(os.Args) < 2 {
		return
	}
	var err error
	switch verb := os.Args[1]; verb {
	case "environ":
		// It prints the environment and does nothing else (environ.go).
		hideSecretEnv(verbFlags(verb, os.Args[2:]).list("envfile"))
	case "run", "start":
		fl := verbFlags(verb, os.Args[2:])
		// Before anything is printed (environ.go).
		if fl.boolean("environ") {
			if err = refuseEnvironWithSecrets(verb, fl.list("envfile")); err != nil {
				break
			}
		}
		// The master password first (masterpasswordcheck.go): its
		// absence is the likeliest failure of a first start.
		raw := startConfig(fl)
		if err = checkMasterPassword(raw); err == nil && verb == "run" {
			err = claimInstance(raw)
		}
	case "stop", "reload":
		err = requireInstance(verb, verbFlags(verb, os.Args[2:]))
	case "validate", "adapt":
		caddymodule.DisableInstanceChecks()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "Error:", err)
		os.Exit(caddy.ExitCodeFailedStartup)
	}
}

// verbFlags parses args with the flags Caddy's own command defines, so
// they mean here what they mean to Caddy. Nil if the command is unknown
// or the arguments do not parse (cobra has refused them then anyway).
func verbFlags(verb string, args []string) *cobraFlags {
	c, ok := caddycmd.Commands()[verb]
	if !ok || c.CobraFunc == nil {
		return nil
	}
	cmd := &cobra.Command{Use: verb}
	c.CobraFunc(cmd)
	if err := cmd.Flags().Parse(args); err != nil {
		return nil
	}
	return &cobraFlags{cmd}
}

// cobraFlags reads flags a command may not define as empty.
type cobraFlags struct{ cmd *cobra.Command }

func (f *cobraFlags) str(name string) string {
	if f == nil || f.cmd.Flags().Lookup(name) == nil {
		return ""
	}
	v, _ := f.cmd.Flags().GetString(name)
	return v
}

func (f *cobraFlags) boolean(name string) bool {
	if f == nil || f.cmd.Flags().Lookup(name) == nil {
		return false
	}
	v, _ := f.cmd.Flags().GetBool(name)
	return v
}

func (f *cobraFlags) list(name string) []string {
	if f == nil || f.cmd.Flags().Lookup(name) == nil {
		return nil
	}
	v, _ := f.cmd.Flags().GetStringSlice(name)
	return v
}

// instanceConfig is what the checks read of a config.
type instanceConfig struct {
	Admin *caddy.AdminConfig `json:"admin,omitempty"`
	Apps  struct {
		AgentVault *struct {
			DataDir string `json:"data_dir,omitempty"`
		} `json:"agent_vault,omitempty"`
	} `json:"apps"`
}

// startConfig is the JSON config `run` or `start` will load, read
// quietly; nil if unknown (with --envfile, the environment the config is
// expanded with is not loaded yet).
func startConfig(fl *cobraFlags) []byte {
	if fl == nil || len(fl.list("envfile")) > 0 {
		return nil
	}
	var raw []byte
	if fl.boolean("resume") {
		raw, _ = os.ReadFile(caddy.ConfigAutosavePath) // Caddy prefers it over --config
	}
	if raw == nil {
		raw = quietConfig(fl.str("config"), fl.str("adapter"))
	}
	return raw
}

// claimInstance is the check of `run`, on its config (startConfig).
func claimInstance(raw []byte) error {
	cfg, dataDir := parseInstanceConfig(raw)
	if dataDir == "" {
		return nil
	}
	if err := caddymodule.HoldInstance(dataDir); err != nil {
		return err
	}
	return checkAdminFree(cfg.Admin)
}

// requireInstance is the check of `stop` and `reload`: pointed at a
// config whose data dir no process holds, they say so and fail.
func requireInstance(verb string, fl *cobraFlags) error {
	if fl == nil || fl.str("address") != "" || fl.str("config") == "" {
		return nil // Caddy goes to that address, or to its default one
	}
	_, dataDir := parseInstanceConfig(quietConfig(fl.str("config"), fl.str("adapter")))
	if dataDir == "" {
		return nil
	}
	_, running, err := caddymodule.RunningInstance(dataDir)
	if err != nil || running {
		return nil // running, or unknown: Caddy asks the admin endpoint
	}
	return fmt.Errorf("no agent-vault instance is running on data_dir %s: nothing to %s", dataDir, verb)
}

// parseInstanceConfig decodes a JSON config and resolves its
// agent_vault data dir as the app will; "" without the app or if the
// config does not decode (Caddy reports that itself).
func parseInstanceConfig(raw []byte) (instanceConfig, string) {
	var cfg instanceConfig
	if len(raw) == 0 || json.Unmarshal(raw, &cfg) != nil || cfg.Apps.AgentVault == nil {
		return cfg, ""
	}
	dir, err := caddymodule.ResolveDataDir(cfg.Apps.AgentVault.DataDir)
	if err != nil {
		return cfg, ""
	}
	return cfg, dir
}

// quietConfig reads the config Caddy will load for file and adapter,
// adapted to JSON, without logging (Caddy logs its own load). It follows
// Caddy's documented choice: an explicit adapter; else the caddyfile
// adapter for a file named Caddyfile* or *.caddyfile that is not .json;
// else JSON; and with no file at all, ./Caddyfile if there is one. Nil
// for stdin ("-", which is Caddy's to read) or anything unreadable.
func quietConfig(file, adapter string) []byte {
	if file == "" {
		if adapter != "" {
			return nil
		}
		if _, err := os.Stat("Caddyfile"); err != nil {
			return nil
		}
		file = "Caddyfile"
	}
	if file == "-" {
		return nil
	}
	body, err := os.ReadFile(file)
	if err != nil {
		return nil
	}
	if adapter == "" {
		base := strings.ToLower(filepath.Base(file))
		if filepath.Ext(base) != ".json" && (strings.HasPrefix(base, "caddyfile") || strings.HasSuffix(base, ".caddyfile")) {
			adapter = "caddyfile"
		}
	}
	if adapter == "" {
		return body
	}
	a := caddyconfig.GetAdapter(adapter)
	if a == nil {
		return nil
	}
	out, _, err := a.Adapt(body, map[string]any{"filename": file})
	if err != nil {
		return nil
	}
	return out
}

// checkAdminFree refuses an admin endpoint another process serves (see
// the top of this file). Caddy's default applies when the config names
// none.
func checkAdminFree(admin *caddy.AdminConfig) error {
	if admin != nil && admin.Disabled {
		return nil
	}
	listen := caddy.DefaultAdminListen
	if admin != nil && admin.Listen != "" {
		listen = admin.Listen
	}
	na, err := caddy.ParseNetworkAddress(listen)
	if err != nil {
		return nil // Caddy reports it
	}
	switch {
	case na.IsUnixNetwork():
		path, _, _ := strings.Cut(na.Host, "|") // unix/path|0600: the mode is not part of the path
		if strings.HasPrefix(path, "@") {
			return nil // abstract: binding one in use fails by itself
		}
		if socketAnswers(path) {
			return fmt.Errorf("admin socket %s already answers: another instance is using it; stop it first, or give this one its own admin address", path)
		}
	case na.Network == "tcp" || na.Network == "tcp4" || na.Network == "tcp6":
		for i := range na.PortRangeSize() {
			hostport := na.At(i).JoinHostPort(0)
			if caddymodule.AddrInUse(na.Network, hostport) {
				return fmt.Errorf("admin address %s is already in use (another agent-vault or Caddy instance?); stop it first, or give this one its own admin address", hostport)
			}
		}
	}
	return nil
}

// socketAnswers tells whether a process accepts connections on the unix
// socket at path. A stale socket file (its server gone) refuses them,
// and Caddy replaces it.
func socketAnswers(path string) bool {
	c, err := net.DialTimeout("unix", path, 2*time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}
