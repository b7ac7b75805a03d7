package agentvault

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"syscall"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"

	"github.com/agentvault/caddy-agent-vault/internal/procguard"
	"github.com/agentvault/caddy-agent-vault/launcher"
)

// serverCommand is the cobra command of `server` in the root being
// built, for decorateRoot.
var serverCommand *cobra.Command

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "server",
		Usage: "[--config <path>] [--port <port>] [--proxy-port <port>] [-d] | stop",
		Short: "Runs agent-vault (management API and agents' proxy)",
		Long: `
Runs agent-vault with the given Caddyfile, or with the embedded
Caddyfile.example when --config is not given. --port and --proxy-port
override the management API (default 14321) and proxy (default 14322)
ports; -d runs it in the background like 'caddy start'. 'server stop'
stops a server started that way.

The built-in store needs AGENT_VAULT_MASTER_PASSWORD or
AGENT_VAULT_MASTER_PASSWORD_FILE.`,
		CobraFunc: func(cmd *cobra.Command) {
			serverCommand = cmd
			// Persistent, so `server stop --config F` finds the same admin endpoint.
			cmd.PersistentFlags().StringP("config", "c", "", "Caddyfile to run (default: the embedded Caddyfile.example)")
			cmd.PersistentFlags().Int("port", 0, "management API port")
			cmd.PersistentFlags().Int("proxy-port", 0, "proxy port")
			cmd.Flags().BoolP("daemon", "d", false, "run in the background")
			cmd.Args = cobra.NoArgs
			cmd.RunE = func(cmd *cobra.Command, _ []string) error { return runServer(cmd, "run") }
			cmd.AddCommand(&cobra.Command{
				Use:   "stop",
				Short: "Stops a server started with 'server -d'",
				Args:  cobra.NoArgs,
				RunE:  func(sub *cobra.Command, _ []string) error { return runServer(sub, "stop") },
			})
		},
	})
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "vault",
		Usage: "run [--addr URL] [--token-file F] [--services a,b] [--ttl 1h] | [--session-token-file F|-] -- <command> [args...]",
		Short: "Runs an agent with brokered credentials (same as av-launch)",
		CobraFunc: func(cmd *cobra.Command) {
			cmd.AddCommand(&cobra.Command{
				Use:                "run [flags] -- command [args...]",
				Short:              "Runs a command in a new session: proxy, CA and placeholders set, secrets never",
				DisableFlagParsing: true, // av-launch parses its own flags and passes the rest to the child
				RunE: func(_ *cobra.Command, args []string) error {
					procguard.NonDumpable()
					os.Exit(launcher.MainNamed("agent-vault vault run", args, os.Environ(), os.Stdin, os.Stdout, os.Stderr))
					return nil
				},
			})
			// The last command registered here: the root has the
			// others by now (see help.go).
			decorateRoot(serverCommand)
		},
	})
}

// runServer turns `server` flags into the environment Caddyfile.example
// reads and replaces this process with `agent-vault run|start|stop`.
func runServer(cmd *cobra.Command, verb string) error {
	flags := cmd.Flags()
	if port, _ := flags.GetInt("port"); port != 0 {
		if err := setPort("AGENT_VAULT_API_ADDR", port); err != nil {
			return err
		}
	}
	if port, _ := flags.GetInt("proxy-port"); port != 0 {
		if err := setPort("AGENT_VAULT_PROXY_ADDR", port); err != nil {
			return err
		}
	}
	ApplyEnvDefaults()
	if daemon, err := flags.GetBool("daemon"); err == nil && daemon && verb == "run" {
		verb = "start"
	}
	config, _ := flags.GetString("config")
	if config == "" {
		config = filepath.Join(os.Getenv("AGENT_VAULT_DATA_DIR"), "Caddyfile.default")
		if err := os.WriteFile(config, DefaultCaddyfile, 0o600); err != nil {
			return fmt.Errorf("writing the default Caddyfile: %v", err)
		}
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	args := []string{self, verb, "--config", config, "--adapter", "caddyfile"}
	return syscall.Exec(self, args, os.Environ())
}

func setPort(name string, port int) error {
	if port < 1 || port > 65535 {
		return errors.New("port out of range")
	}
	host, _, err := net.SplitHostPort(os.Getenv(name))
	if err != nil || host == "" {
		host = "127.0.0.1"
	}
	return os.Setenv(name, net.JoinHostPort(host, strconv.Itoa(port)))
}
