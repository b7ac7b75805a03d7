package cli

import (
	"strconv"

	"github.com/spf13/cobra"

	"github.com/agentvault/caddy-agent-vault/caddymodule/apiwire"
)

func (r *runner) sessionCommand() *cobra.Command {
	list := &cobra.Command{
		Use:   "list",
		Short: "Lists sessions, newest first (ended ones stay listed for a while)",
		Args:  args(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := r.client()
			if err != nil {
				return err
			}
			sessions, err := c.Sessions(cmd.Context())
			if err != nil {
				return err
			}
			if r.json {
				if sessions == nil {
					sessions = []apiwire.SessionInfo{}
				}
				return r.printJSON(apiwire.SessionList{Sessions: sessions})
			}
			rows := make([][]string, 0, len(sessions))
			for _, s := range sessions {
				rows = append(rows, []string{s.ID, s.Agent, joined(s.Services), s.Status, when(s.CreatedAt), when(s.ExpiresAt),
					whenPtr(s.LeaseExpiresAt), strconv.FormatUint(s.Requests, 10), whenPtr(s.LastUsed)})
			}
			return r.table("sessions", []string{"ID", "AGENT", "SERVICES", "STATUS", "CREATED", "EXPIRES", "LEASE UNTIL", "REQUESTS", "LAST USED"}, rows)
		},
	}
	revoke := &cobra.Command{
		Use:     "revoke ID",
		Aliases: []string{"rm"},
		Short:   "Ends a session at once, closing its tunnels",
		Args:    args("ID"),
		RunE: func(cmd *cobra.Command, a []string) error {
			c, err := r.client()
			if err != nil {
				return err
			}
			if err := c.RevokeSession(cmd.Context(), a[0]); err != nil {
				return err
			}
			r.note("session %s revoked", quoted(a[0]))
			return nil
		},
	}
	return group("session", "", "", list, revoke)
}
