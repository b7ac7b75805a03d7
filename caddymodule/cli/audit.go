package cli

import (
	"github.com/spf13/cobra"

	"github.com/agentvault/caddy-agent-vault/caddymodule/apiclient"
)

func (r *runner) auditCommand() *cobra.Command {
	var q apiclient.AuditQuery
	list := &cobra.Command{
		Use:   "list [--actor A] [--action X] [--target T] [--limit N] [--before CURSOR]",
		Short: "Lists audit entries, newest first",
		Long: `Lists who changed what: time, actor (an operator, admin-token or an
agent), action (credential.put, agent.create, login.failed, ...),
target and client address. Values, passwords and tokens are never
recorded. One page at a time: the next page's --before is printed on
stderr when there is one.`,
		Args: args(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if q.Limit < 0 || q.Limit > 1000 {
				return usagef("--limit %d: want 1 to 1000", q.Limit)
			}
			c, err := r.client()
			if err != nil {
				return err
			}
			page, err := c.Audit(cmd.Context(), q)
			if err != nil {
				return err
			}
			if r.json {
				return r.printJSON(page)
			}
			rows := make([][]string, 0, len(page.Entries))
			for _, e := range page.Entries {
				rows = append(rows, []string{when(e.Time), e.Actor, e.ActorKind, e.Action, e.Target, e.Client, e.Detail})
			}
			if err := r.table("audit entries", []string{"TIME", "ACTOR", "KIND", "ACTION", "TARGET", "CLIENT", "DETAIL"}, rows); err != nil {
				return err
			}
			r.notePage("audit list", page.NextBefore, true)
			return nil
		},
	}
	fl := list.Flags()
	fl.StringVar(&q.Actor, "actor", "", "only this actor's entries")
	fl.StringVar(&q.Action, "action", "", "only this action, e.g. agent.rotate")
	fl.StringVar(&q.Target, "target", "", "only entries about this target")
	pageFlags(list, &q.Limit, &q.Before)
	return group("audit", "", "", list)
}
