package agentvault

import (
	"fmt"
	"slices"
	"sync/atomic"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"

	"github.com/agentvault/caddy-agent-vault/caddymodule/cli"
)

// The agent-vault binary is Caddy's command line with agent-vault's own
// verbs. Main names it agent-vault and gives it agent-vault's purpose and
// version; in any build (xcaddy's included) the root's help lists
// agent-vault's verbs first, in a group of their own, and Caddy's after.

// longHelp is the start of `agent-vault --help`.
const longHelp = `agent-vault is a credential broker for AI agents. Agents reach APIs
through its proxy carrying placeholders; it swaps in the real
credentials, which the agents never see, only for the hosts and the
services each agent is allowed. It is Caddy with the agent-vault modules.

Quick start:
  AGENT_VAULT_MASTER_PASSWORD='a long passphrase' agent-vault server
  agent-vault credential set GITHUB_TOKEN        # the value from stdin or a prompt
  agent-vault service add github --host api.github.com --auth bearer --token GITHUB_TOKEN
  agent-vault vault run -- claude                # the agent, with proxy and placeholders

The management verbs (credential, service, agent, session, request,
operator, audit, activity) talk to --addr, else $AGENT_VAULT_ADDR
(default http://127.0.0.1:14321), with --token-file, else
$AGENT_VAULT_TOKEN, else <data dir>/admin.token (only for a server on
loopback). 'vault run' and
av-launch take the same order, with agent.token as the default. Plain
http:// to another host needs AGENT_VAULT_INSECURE_HTTP=1.
Run 'agent-vault <command> --help' for each.`

// helpFooter ends every help text of the agent-vault binary.
const helpFooter = `
Caddy's commands are documented at https://caddyserver.com/docs/command-line
`

// Command groups of the root's help.
const (
	groupAgentVault = "agent-vault"
	groupCaddy      = "caddy"
)

// branded is set by Main: the binary is agent-vault, not a Caddy build
// that merely includes it.
var branded atomic.Bool

// Main is the main function of the agent-vault binary: Caddy's
// caddycmd.Main, named agent-vault, with agent-vault's purpose as the
// help's opening and `agent-vault -v|--version|version` printing
// agent-vault's version along with Caddy's.
func Main() {
	branded.Store(true)
	caddy.CustomBinaryName = "agent-vault"
	caddy.CustomLongDescription = longHelp
	caddycmd.Main()
}

// VersionText is what `agent-vault version` prints.
func VersionText() string {
	_, full := caddy.Version()
	return fmt.Sprintf("agent-vault %s (caddy %s)", Version, full)
}

// ownVerbs are agent-vault's root commands, in help order.
func ownVerbs() []string {
	return append([]string{"server", "vault"}, cli.Verbs()...)
}

// decorateRoot arranges the root command's help (see the top of this
// file). Caddy offers no hook on its root command; decorateRoot is called
// from the CobraFunc of the last command this package registers, with a
// command registered before it, which Caddy has added to the root by
// then (caddycmd builds the root by applying each registration in turn).
// Commands other packages register later (Caddy's file-server, say) are
// not on the root yet, so the groups are assigned when help is shown.
func decorateRoot(sibling *cobra.Command) {
	if sibling == nil || !sibling.HasParent() {
		return
	}
	root := sibling.Root()
	if root.ContainsGroup(groupAgentVault) {
		return
	}
	root.AddGroup(
		&cobra.Group{ID: groupAgentVault, Title: "agent-vault commands:"},
		&cobra.Group{ID: groupCaddy, Title: "Caddy commands:"},
	)
	root.SetHelpCommandGroupID(groupCaddy)
	root.SetCompletionCommandGroupID(groupCaddy)
	// Every command inherits the root's help function: grouping first
	// costs nothing for theirs.
	show := root.HelpFunc()
	root.SetHelpFunc(func(cmd *cobra.Command, args []string) {
		groupCommands(root)
		show(cmd, args)
	})
	if !branded.Load() {
		return
	}
	root.Example = "" // Caddy's examples say "caddy"
	root.Version = VersionText()
	root.SetHelpTemplate((&cobra.Command{}).HelpTemplate() + helpFooter)
	for _, c := range root.Commands() {
		if c.Name() == "version" {
			c.Short = "Prints agent-vault's and Caddy's versions"
			c.Long = ""
			c.Run = nil
			c.RunE = func(cmd *cobra.Command, _ []string) error {
				_, err := fmt.Fprintln(cmd.OutOrStdout(), VersionText())
				return err
			}
		}
	}
}

// groupCommands puts agent-vault's verbs in the agent-vault group and
// every other ungrouped root command in Caddy's.
func groupCommands(root *cobra.Command) {
	own := ownVerbs()
	for _, c := range root.Commands() {
		switch {
		case slices.Contains(own, c.Name()):
			c.GroupID = groupAgentVault
		case c.GroupID == "":
			c.GroupID = groupCaddy
		}
	}
}
