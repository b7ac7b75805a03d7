package cli

import (
	"os"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"
)

// Each verb is a Caddy command of the binary that imports this package.
// Caddy's command line only dispatches to it: the verb parses its own
// flags (DisableFlagParsing) and exits with Main's code, because Caddy
// turns any error into exit 1 and a usage error must be 2. Its help,
// `agent-vault help credential` included, is Main's.
func init() {
	for _, v := range verbs {
		name, usage := v.name, v.usage
		if usage == "" {
			usage = "<subcommand> [flags]"
		}
		caddycmd.RegisterCommand(caddycmd.Command{
			Name:  name,
			Usage: usage,
			Short: v.short,
			CobraFunc: func(cmd *cobra.Command) {
				cmd.DisableFlagParsing = true
				cmd.RunE = func(_ *cobra.Command, args []string) error {
					os.Exit(Main(append([]string{name}, args...), OSEnv()))
					return nil
				}
				cmd.SetHelpFunc(func(*cobra.Command, []string) {
					os.Exit(Main([]string{name, "--help"}, OSEnv()))
				})
			},
		})
	}
}
