package cli

import (
	"net"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
)

func (r *runner) discoveredCommand() *cobra.Command {
	var limit int
	var before string
	cmd := &cobra.Command{
		Use: "discovered [--limit N] [--before CURSOR]",
		Long: `Lists the hosts agents tried that no service in their session's scope
covers, most recently seen first: how many requests were refused, when
first and last, how the agents tried to authenticate (a scheme such as
Bearer, or the name of an API-key header; never a value), and the most
recent agents. Define a service for a host to let agents use it
("agent-vault service add NAME --host HOST ..."). One page at a time:
the next page's --before is printed on stderr when there is one.`,
		Args: args(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if limit < 0 || limit > 1000 {
				return usagef("--limit %d: want 1 to 1000", limit)
			}
			c, err := r.client()
			if err != nil {
				return err
			}
			page, err := c.Discovered(cmd.Context(), limit, before)
			if err != nil {
				return err
			}
			if r.json {
				return r.printJSON(page)
			}
			rows := make([][]string, 0, len(page.Hosts))
			for _, h := range page.Hosts {
				rows = append(rows, []string{net.JoinHostPort(h.Host, strconv.Itoa(h.Port)), strconv.FormatInt(h.Count, 10),
					when(h.FirstSeen), when(h.LastSeen), strings.Join(h.Schemes, ", "), strings.Join(h.Agents, ", ")})
			}
			if err := r.table("discovered hosts", []string{"HOST", "COUNT", "FIRST SEEN", "LAST SEEN", "AUTH", "AGENTS"}, rows); err != nil {
				return err
			}
			r.notePage("discovered", page.NextBefore, true)
			return nil
		},
	}
	pageFlags(cmd, &limit, &before)
	return cmd
}
