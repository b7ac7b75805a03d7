package cli

import (
	"strings"

	"github.com/spf13/cobra"

	"github.com/agentvault/caddy-agent-vault/caddymodule/apiwire"
	"github.com/agentvault/caddy-agent-vault/storebackends"
)

func (r *runner) credentialCommand() *cobra.Command {
	set := &cobra.Command{
		Use:   "set NAME",
		Short: "Stores a credential; the value comes from stdin or a no-echo prompt",
		Long: `Stores the credential NAME in the first writable store (replacing its
value if it exists). The value is read from stdin when stdin is not a
terminal (one trailing line break is dropped), else from a prompt that
does not echo. It is never taken from the command line, where shell
history and ps would keep it.`,
		Example: `  printf %s "$GITHUB_TOKEN" | agent-vault credential set GITHUB_TOKEN
  agent-vault credential set GITHUB_TOKEN          # asks for the value`,
		Args: func(cmd *cobra.Command, got []string) error {
			if len(got) > 1 {
				return usagef("credential set takes the value from stdin or a prompt, never from the command line (shell history and ps keep it): printf %%s \"$VALUE\" | %s credential set NAME", progName)
			}
			return args("NAME")(cmd, got)
		},
		RunE: func(cmd *cobra.Command, a []string) error {
			// Checked before the value is asked for, as the server will.
			if err := checkCredentialName(a[0]); err != nil {
				return err
			}
			c, err := r.client()
			if err != nil {
				return err
			}
			v, err := r.readSecret("value of "+a[0], false)
			if err != nil {
				return err
			}
			value := string(v)
			clear(v)
			meta, err := c.PutCredential(cmd.Context(), a[0], value)
			if err != nil {
				return err
			}
			if r.json {
				return r.printJSON(meta)
			}
			r.note("credential %s stored (store %s, version %s)", quoted(meta.Name), quoted(meta.Store), quoted(meta.Version))
			return nil
		},
	}
	refuseSecretFlag(set, "value")

	list := &cobra.Command{
		Use:   "list",
		Short: "Lists credentials: names, stores and versions, never values",
		Args:  args(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := r.client()
			if err != nil {
				return err
			}
			creds, err := c.Credentials(cmd.Context())
			if err != nil {
				return err
			}
			if r.json {
				return r.printJSON(apiwire.CredentialList{Credentials: creds})
			}
			rows := make([][]string, 0, len(creds))
			for _, m := range creds {
				rows = append(rows, []string{m.Name, m.Store, m.Version, when(m.UpdatedAt), m.Source})
			}
			return r.table("credentials", []string{"NAME", "STORE", "VERSION", "UPDATED", "SOURCE"}, rows)
		},
	}

	rm := &cobra.Command{
		Use:     "rm NAME",
		Aliases: []string{"delete"},
		Short:   "Deletes a credential",
		Args:    args("NAME"),
		RunE: func(cmd *cobra.Command, a []string) error {
			if err := checkCredentialName(a[0]); err != nil {
				return err
			}
			c, err := r.client()
			if err != nil {
				return err
			}
			if err := c.DeleteCredential(cmd.Context(), a[0]); err != nil {
				return err
			}
			r.note("credential %s deleted", a[0])
			return nil
		},
	}
	return group("credential", "", "", set, list, rm)
}

// refuseSecretFlag adds a hidden --name flag that only says why a
// secret is never taken from the command line. Its value is never
// printed or used.
func refuseSecretFlag(cmd *cobra.Command, name string) {
	cmd.Flags().String(name, "", "")
	_ = cmd.Flags().MarkHidden(name)
	prev := cmd.PreRunE
	cmd.PreRunE = func(c *cobra.Command, a []string) error {
		if c.Flags().Changed(name) {
			return usagef("--%s is not accepted: %s reads secrets from stdin or a no-echo prompt, never from the command line (shell history and ps keep it)", name, progName)
		}
		if prev != nil {
			return prev(c, a)
		}
		return nil
	}
}

// checkCredentialName refuses a credential name the server would refuse,
// without repeating it: what was typed where a name belongs may be a
// value (NAME=value, or the value itself).
func checkCredentialName(name string) error {
	if storebackends.ValidateName(name) == nil {
		return nil
	}
	if strings.Contains(name, "=") {
		return usagef("invalid credential name (it contains '='; the value is read from stdin, never the command line): printf %%s \"$VALUE\" | %s credential set NAME", progName)
	}
	return usagef("invalid credential name: use letters, digits and '_', not starting with a digit, at most 128 characters")
}
