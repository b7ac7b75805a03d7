package cli

import (
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/agentvault/caddy-agent-vault/caddymodule/apiclient"
	"github.com/agentvault/caddy-agent-vault/caddymodule/apiwire"
	"github.com/agentvault/caddy-agent-vault/caddymodule/identity"
	"github.com/agentvault/caddy-agent-vault/caddymodule/services"
	"github.com/agentvault/caddy-agent-vault/internal/atomicfile"
)

func (r *runner) agentCommand() *cobra.Command {
	var services, maxTTL, out string
	add := &cobra.Command{
		Use:   "add NAME --services a,b [--max-ttl 1h] [--out FILE]",
		Short: "Creates an agent and prints its token, once",
		Long: `Creates the agent NAME, allowed to open sessions for the services listed
(--services '*' for every service, those defined later included), each
at most --max-ttl long (default: the server's max_session_ttl).

The agent's token is printed once, alone on stdout (notes go to stderr);
the server keeps only its hash. Prefer --out FILE, which writes it to
FILE atomically with mode 0600 (a shell redirection creates the file
with the umask's mode, often readable by every user; a warning says so).`,
		Example: `  agent-vault agent add ci-bot --services github,npm --max-ttl 1h --out ci-bot.token
  agent-vault agent add local2 --services '*'`,
		Args: args("NAME"),
		RunE: func(cmd *cobra.Command, a []string) error {
			if err := identity.ValidName(identity.AgentName, a[0]); err != nil {
				return usageError{err}
			}
			if !cmd.Flags().Changed("services") {
				return usagef("agent add needs --services: the services the agent may use, comma-separated, or '*' for all")
			}
			list, err := parseServices(services)
			if err != nil {
				return err
			}
			if err := checkDuration("--max-ttl", maxTTL); err != nil {
				return err
			}
			c, err := r.client()
			if err != nil {
				return err
			}
			agent, err := c.CreateAgent(cmd.Context(), apiwire.AgentCreateRequest{Name: a[0], Services: list, MaxSessionTTL: maxTTL})
			if err != nil {
				return err
			}
			return r.handOutToken(agent, out, fmt.Sprintf("agent %s created (services %s, max session ttl %s)",
				quoted(agent.Name), quoted(joined(agent.Services)), quoted(agent.MaxSessionTTL)))
		},
	}
	add.Flags().StringVar(&services, "services", "", "services the agent may use, comma-separated ('*' for all)")
	add.Flags().StringVar(&maxTTL, "max-ttl", "", "longest session the agent may open, e.g. 1h (default: the server's max_session_ttl)")
	add.Flags().StringVar(&out, "out", "", "write the token to this `file` (mode 0600) instead of stdout")

	list := &cobra.Command{
		Use:   "list",
		Short: "Lists agents (never their tokens)",
		Args:  args(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := r.client()
			if err != nil {
				return err
			}
			agents, err := c.Agents(cmd.Context())
			if err != nil {
				return err
			}
			if r.json {
				return r.printJSON(apiwire.AgentList{Agents: agents})
			}
			rows := make([][]string, 0, len(agents))
			for _, ag := range agents {
				rows = append(rows, []string{ag.Name, joined(ag.Services), ag.MaxSessionTTL, when(ag.CreatedAt), when(ag.UpdatedAt)})
			}
			return r.table("agents", []string{"NAME", "SERVICES", "MAX TTL", "CREATED", "UPDATED"}, rows)
		},
	}

	var upServices, upTTL string
	update := &cobra.Command{
		Use:   "update NAME [--services a,b] [--max-ttl 1h]",
		Short: "Changes an agent's services or maximum session lifetime",
		Long: `Replaces the agent's allowed services and/or its maximum session
lifetime. Its active sessions that the new limits no longer allow are
ended, and listed.`,
		Args: args("NAME"),
		RunE: func(cmd *cobra.Command, a []string) error {
			var req apiwire.AgentPatchRequest
			if cmd.Flags().Changed("services") {
				list, err := parseServices(upServices)
				if err != nil {
					return err
				}
				req.Services = list
			}
			if cmd.Flags().Changed("max-ttl") {
				if upTTL == "" {
					return usagef("--max-ttl needs a duration, e.g. 1h")
				}
				if err := checkDuration("--max-ttl", upTTL); err != nil {
					return err
				}
				req.MaxSessionTTL = &upTTL
			}
			if req.Services == nil && req.MaxSessionTTL == nil {
				return usagef("agent update needs --services or --max-ttl")
			}
			c, err := r.client()
			if err != nil {
				return err
			}
			agent, err := c.UpdateAgent(cmd.Context(), a[0], req)
			if err != nil {
				return err
			}
			if r.json {
				return r.printJSON(agent)
			}
			r.note("agent %s updated (services %s, max session ttl %s)", quoted(agent.Name), quoted(joined(agent.Services)), quoted(agent.MaxSessionTTL))
			if len(agent.RevokedSessions) > 0 {
				r.note("sessions ended, no longer within its limits: %s", quoted(joined(agent.RevokedSessions)))
			}
			return nil
		},
	}
	update.Flags().StringVar(&upServices, "services", "", "the services the agent may use from now on, comma-separated ('*' for all)")
	update.Flags().StringVar(&upTTL, "max-ttl", "", "the longest session it may open from now on")

	var rotOut string
	rotate := &cobra.Command{
		Use:   "rotate NAME [--out FILE]",
		Short: "Gives an agent a new token, printed once; the old one stops working at once",
		Long: `Replaces the agent's token: the old one stops working on every broker at
once. The new token is printed once, alone on stdout (notes go to
stderr), unless --out FILE is given. Prefer --out:

  agent-vault agent rotate local --out ~/.local/share/agent-vault/agent.token

writes the token to a temporary file of mode 0600 and renames it into
place once the server has answered: the file is never half-written or
readable by others, and a refused rotation leaves it as it was. A shell
redirection (> FILE) instead truncates the file before the command even
runs (a refused rotation leaves it empty, and the old token, still
valid, is lost), and a file it creates gets the umask's mode (often
0644, readable by every user).`,
		Example: `  agent-vault agent rotate local --out ~/.local/share/agent-vault/agent.token
  agent-vault agent rotate ci-bot --out ci-bot.token`,
		Args: args("NAME"),
		RunE: func(cmd *cobra.Command, a []string) error {
			c, err := r.client()
			if err != nil {
				return err
			}
			agent, err := c.RotateAgent(cmd.Context(), a[0])
			if err != nil {
				return err
			}
			return r.handOutToken(agent, rotOut, fmt.Sprintf("agent %s has a new token; the old one no longer works", quoted(agent.Name)))
		},
	}
	rotate.Flags().StringVar(&rotOut, "out", "", "write the token to this `file` (mode 0600) instead of stdout")

	rm := &cobra.Command{
		Use:     "rm NAME",
		Aliases: []string{"delete"},
		Short:   "Deletes an agent and ends its sessions",
		Args:    args("NAME"),
		RunE: func(cmd *cobra.Command, a []string) error {
			c, err := r.client()
			if err != nil {
				return err
			}
			if err := c.DeleteAgent(cmd.Context(), a[0]); err != nil {
				return err
			}
			r.note("agent %s deleted; its sessions are ended", a[0])
			return nil
		},
	}
	return group("agent", "", "", add, list, update, rotate, rm)
}

// handOutToken prints the token of a new or rotated agent: to out (mode
// 0600) if given, else alone on its line on stdout; what happened goes
// to stderr. With --json the answer is printed as the server sent it
// (token included, unless it went to out).
func (r *runner) handOutToken(agent *apiwire.Agent, out, done string) error {
	token := agent.Token
	if !validToken(token) {
		return fmt.Errorf("the server's answer holds no usable token for agent %s: see its logs, and rotate the agent", quoted(agent.Name))
	}
	if out != "" {
		if err := atomicfile.Write(out, []byte(token+"\n"), 0o600); err != nil {
			return fmt.Errorf("%s, but writing its token to %s failed (%v): rotate it again", done, out, err)
		}
		if r.json {
			shown := *agent
			shown.Token = ""
			return r.printJSON(shown)
		}
		r.note("%s; its token is in %s (mode 0600)", done, out)
		return nil
	}
	r.warnSharedStdout()
	if r.json {
		return r.printJSON(agent)
	}
	r.note("%s; its token, shown this once (only its hash is kept):", done)
	_, err := fmt.Fprintln(r.env.Stdout, token)
	return err
}

// warnSharedStdout warns when stdout is a file others may read: a token
// redirected into a new file gets the umask's mode, often 0644.
func (r *runner) warnSharedStdout() {
	f, ok := r.env.Stdout.(*os.File)
	if !ok {
		return
	}
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm()&0o077 == 0 {
		return
	}
	r.warn("the token goes to a file that others may read (mode %04o): chmod 600 it, or use --out FILE", fi.Mode().Perm())
}

// validToken reports whether a token from the server can be printed as
// one line and used as a bearer token.
func validToken(t string) bool {
	if t == "" || len(t) > 512 {
		return false
	}
	for i := 0; i < len(t); i++ {
		if t[i] <= ' ' || t[i] >= 0x7f {
			return false
		}
	}
	return true
}

// parseServices splits a --services list. An empty list or entry is a
// usage error: --services "$UNSET" must not mean anything by accident.
// Each entry must be a service name (services.IsValidName), or the list
// just '*' (every service): checked here, before any request.
func parseServices(s string) ([]string, error) {
	if strings.TrimSpace(s) == "" {
		return nil, usagef("--services is empty: name at least one service, or '*' for all")
	}
	parts := strings.Split(s, ",")
	for i, p := range parts {
		if parts[i] = strings.TrimSpace(p); parts[i] == "" {
			return nil, usagef("--services %q has an empty entry", apiclient.Printable(s, 200))
		}
	}
	if len(parts) == 1 && parts[0] == apiwire.AllServices {
		return parts, nil
	}
	for i, p := range parts {
		switch {
		case p == apiwire.AllServices:
			return nil, usagef("--services: '*' means every service and goes alone, not in a list")
		case !services.IsValidName(p):
			return nil, usagef("--services: %q (entry %d) is not a service name: use 1-64 of a-z, 0-9, '_', '.', '-', starting with a letter or digit", apiclient.Printable(p, 64), i+1)
		}
	}
	return parts, nil
}

// checkDuration refuses a duration the server could not parse, before
// anything is sent. "" means the default.
func checkDuration(flag, s string) error {
	if s == "" {
		return nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return usagef("%s %q is not a positive duration such as 30m or 1h", flag, s)
	}
	return nil
}
