package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/agentvault/caddy-agent-vault/caddymodule/apiwire"
)

func (r *runner) requestCommand() *cobra.Command {
	var status string
	list := &cobra.Command{
		Use:   "list [--status pending|approved|denied]",
		Short: "Lists access requests, newest first",
		Args:  args(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			switch status {
			case "", apiwire.RequestPending, apiwire.RequestApproved, apiwire.RequestDenied:
			default:
				return usagef("--status %q: want pending, approved or denied", status)
			}
			c, err := r.client()
			if err != nil {
				return err
			}
			reqs, err := c.AccessRequests(cmd.Context(), status)
			if err != nil {
				return err
			}
			if r.json {
				return r.printJSON(apiwire.AccessRequestList{Requests: reqs})
			}
			rows := make([][]string, 0, len(reqs))
			for _, q := range reqs {
				rows = append(rows, []string{q.ID, q.Agent, wants(q), q.Reason, q.Status, when(q.CreatedAt), decision(q)})
			}
			what := "access requests"
			if status != "" {
				what = status + " access requests"
			}
			return r.table(what, []string{"ID", "AGENT", "WANTS", "REASON", "STATUS", "CREATED", "DECIDED"}, rows)
		},
	}
	list.Flags().StringVar(&status, "status", "", "only requests with this status: pending, approved or denied")

	var serviceFile string
	approve := &cobra.Command{
		Use:   "approve ID [--service-file service.json]",
		Short: "Approves a request: the agent may use the service from its next session",
		Long: `Approves the pending request ID. A service request adds that service to
the agent's allowed ones. A host request needs a service covering the
host: one that exists is granted; otherwise --service-file gives the
full definition of the service to create (the JSON of 'service add
--file'; "-" for stdin), checked here before anything is sent.`,
		Args: args("ID"),
		RunE: func(cmd *cobra.Command, a []string) error {
			var body apiwire.AccessRequestApprove
			if serviceFile != "" {
				svc, err := readServiceFile(serviceFile, r.env.Stdin)
				if err != nil {
					return err
				}
				if err := svc.Validate(); err != nil {
					return usageError{err}
				}
				body.Service = &svc
			}
			c, err := r.client()
			if err != nil {
				return err
			}
			q, err := c.ApproveAccessRequest(cmd.Context(), a[0], body)
			if err != nil {
				return err
			}
			if r.json {
				return r.printJSON(q)
			}
			r.note("request %s approved: agent %s may use %s from its next session", quoted(q.ID), quoted(q.Agent), granted(q, body.Service))
			return nil
		},
	}
	approve.Flags().StringVar(&serviceFile, "service-file", "", "JSON `file` defining the service to create for a host request (- for stdin)")

	var reason string
	deny := &cobra.Command{
		Use:   "deny ID [--reason R]",
		Short: "Denies a request, with a reason the agent can read",
		Args:  args("ID"),
		RunE: func(cmd *cobra.Command, a []string) error {
			c, err := r.client()
			if err != nil {
				return err
			}
			q, err := c.DenyAccessRequest(cmd.Context(), a[0], apiwire.AccessRequestDeny{Reason: reason})
			if err != nil {
				return err
			}
			if r.json {
				return r.printJSON(q)
			}
			r.note("request %s denied", quoted(q.ID))
			return nil
		},
	}
	deny.Flags().StringVar(&reason, "reason", "", "why, for the agent (at most 500 characters)")
	return group("request", "", "", list, approve, deny)
}

// wants is what a request asks for.
func wants(q apiwire.AccessRequest) string {
	if q.Service != "" {
		return "service " + q.Service
	}
	return "host " + q.Host
}

// decision summarizes who decided a request, when, and why.
func decision(q apiwire.AccessRequest) string {
	if q.DecidedAt == nil {
		return "-"
	}
	s := when(*q.DecidedAt)
	if q.DecidedBy != "" {
		s += " by " + q.DecidedBy
	}
	if q.DecisionReason != "" {
		s += ": " + q.DecisionReason
	}
	return s
}

// granted names what an approval gave, for the confirmation.
func granted(q *apiwire.AccessRequest, created *apiwire.Service) string {
	switch {
	case q.Service != "":
		return "service " + quoted(q.Service)
	case created != nil:
		return fmt.Sprintf("the new service %s (host %s)", quoted(created.Name), quoted(created.Host))
	}
	return "the service covering " + quoted(q.Host)
}
