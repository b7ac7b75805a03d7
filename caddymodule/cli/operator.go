package cli

import (
	"github.com/spf13/cobra"

	"github.com/agentvault/caddy-agent-vault/caddymodule/apiwire"
	"github.com/agentvault/caddy-agent-vault/caddymodule/identity"
)

func (r *runner) operatorCommand() *cobra.Command {
	var role string
	add := &cobra.Command{
		Use:   "add NAME --role viewer|admin|owner",
		Short: "Creates an operator; the password comes from stdin or a no-echo prompt",
		Long: `Creates the operator NAME with a role: viewer reads everything the API
shows (never a value); admin also manages credentials, services, agents,
sessions and access requests; owner also manages operators.

The password (at least 12 characters) is read from stdin when stdin is
not a terminal (one trailing line break dropped), else asked for twice
without echo; never taken from the command line.`,
		Args: func(cmd *cobra.Command, got []string) error {
			if len(got) > 1 {
				return usagef("operator add takes the password from stdin or a prompt, never from the command line (shell history and ps keep it)")
			}
			return args("NAME")(cmd, got)
		},
		RunE: func(cmd *cobra.Command, a []string) error {
			// Name and role first: the password is not asked for in vain.
			if err := identity.ValidName(identity.OperatorName, a[0]); err != nil {
				return usageError{err}
			}
			if err := checkRole(cmd, role); err != nil {
				return err
			}
			c, err := r.client()
			if err != nil {
				return err
			}
			password, err := r.readPassword("password for " + a[0])
			if err != nil {
				return err
			}
			op, err := c.CreateOperator(cmd.Context(), apiwire.OperatorCreateRequest{Name: a[0], Password: password, Role: role})
			if err != nil {
				return err
			}
			if r.json {
				return r.printJSON(op)
			}
			r.note("operator %s created with role %s", quoted(op.Name), quoted(op.Role))
			return nil
		},
	}
	add.Flags().StringVar(&role, "role", "", "viewer, admin or owner")
	refuseSecretFlag(add, "password")

	list := &cobra.Command{
		Use:   "list",
		Short: "Lists operators and their roles",
		Args:  args(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := r.client()
			if err != nil {
				return err
			}
			ops, err := c.Operators(cmd.Context())
			if err != nil {
				return err
			}
			if r.json {
				return r.printJSON(apiwire.OperatorList{Operators: ops})
			}
			rows := make([][]string, 0, len(ops))
			for _, op := range ops {
				rows = append(rows, []string{op.Name, op.Role, when(op.CreatedAt), when(op.UpdatedAt)})
			}
			return r.table("operators", []string{"NAME", "ROLE", "CREATED", "UPDATED"}, rows)
		},
	}

	var newRole string
	var newPassword bool
	update := &cobra.Command{
		Use:   "update NAME [--role R] [--new-password]",
		Short: "Changes an operator's role, or password (which ends their logins)",
		Long: `Changes the operator's role (--role) and/or password (--new-password:
read from stdin or asked for twice without echo, like 'operator add').
A new password ends the operator's current logins.`,
		Args: args("NAME"),
		RunE: func(cmd *cobra.Command, a []string) error {
			var req apiwire.OperatorPatchRequest
			if cmd.Flags().Changed("role") {
				if err := checkRole(cmd, newRole); err != nil {
					return err
				}
				req.Role = &newRole
			}
			if req.Role == nil && !newPassword {
				return usagef("operator update needs --role or --new-password")
			}
			c, err := r.client()
			if err != nil {
				return err
			}
			if newPassword {
				password, err := r.readPassword("new password for " + a[0])
				if err != nil {
					return err
				}
				req.Password = &password
			}
			op, err := c.UpdateOperator(cmd.Context(), a[0], req)
			if err != nil {
				return err
			}
			if r.json {
				return r.printJSON(op)
			}
			r.note("operator %s updated (role %s)", quoted(op.Name), quoted(op.Role))
			if newPassword {
				r.note("their password is changed and their logins ended")
			}
			return nil
		},
	}
	update.Flags().StringVar(&newRole, "role", "", "the new role: viewer, admin or owner")
	update.Flags().BoolVar(&newPassword, "new-password", false, "set a new password, read from stdin or a no-echo prompt")
	refuseSecretFlag(update, "password")

	rm := &cobra.Command{
		Use:     "rm NAME",
		Aliases: []string{"delete"},
		Short:   "Deletes an operator and ends their logins",
		Args:    args("NAME"),
		RunE: func(cmd *cobra.Command, a []string) error {
			c, err := r.client()
			if err != nil {
				return err
			}
			if err := c.DeleteOperator(cmd.Context(), a[0]); err != nil {
				return err
			}
			r.note("operator %s deleted", a[0])
			return nil
		},
	}
	return group("operator", "", "", add, list, update, rm)
}

// checkRole refuses a role the server does not know, before any I/O.
func checkRole(cmd *cobra.Command, role string) error {
	if role == "" {
		return usagef("%s needs --role viewer, admin or owner", path(cmd))
	}
	if _, err := identity.ParseRole(role); err != nil {
		return usagef("--role: %v", err)
	}
	return nil
}

// readPassword reads an operator's new password (readSecret, asked twice
// at a terminal) and checks it as the server will, before it is sent.
func (r *runner) readPassword(what string) (string, error) {
	pw, err := r.readSecret(what, true)
	if err != nil {
		return "", err
	}
	password := string(pw)
	clear(pw)
	if err := identity.ValidPassword(password); err != nil {
		return "", usageError{err}
	}
	return password, nil
}
