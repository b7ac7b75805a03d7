package cli

import "github.com/spf13/cobra"

// verb is one top-level command.
type verb struct {
	name, short string
	build       func(*runner) *cobra.Command
	// usage follows the name in Caddy's listing; "" for a verb of
	// subcommands ("<subcommand> [flags]").
	usage string
}

// verbs in the order the help lists them.
var verbs = []verb{
	{"credential", "Stores, lists and deletes credentials (values never shown)", (*runner).credentialCommand, ""},
	{"service", "Defines, lists and deletes services (which host gets which credential, how)", (*runner).serviceCommand, ""},
	{"agent", "Creates, lists, changes, rotates and deletes agents (their tokens and allowed services)", (*runner).agentCommand, ""},
	{"session", "Lists and revokes agent sessions", (*runner).sessionCommand, ""},
	{"request", "Lists, approves and denies agents' access requests", (*runner).requestCommand, ""},
	{"operator", "Creates, lists, changes and deletes operator accounts", (*runner).operatorCommand, ""},
	{"audit", "Shows the audit trail of management changes", (*runner).auditCommand, ""},
	{"activity", "Lists and follows what the proxy forwarded, refused or failed", (*runner).activityCommand, "[flags]"},
	{"discovered", "Lists the hosts agents tried that no service covers", (*runner).discoveredCommand, "[flags]"},
}

// Verbs returns the names of the top-level commands, in help order.
func Verbs() []string {
	names := make([]string, len(verbs))
	for i, v := range verbs {
		names[i] = v.name
	}
	return names
}
