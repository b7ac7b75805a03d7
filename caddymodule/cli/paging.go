package cli

import "github.com/spf13/cobra"

// pageFlags adds the flags of a paged list (--limit, --before), the
// same for every list the API pages by cursor.
func pageFlags(cmd *cobra.Command, limit *int, before *string) {
	cmd.Flags().IntVar(limit, "limit", 0, "entries per page (server default 100, at most 1000)")
	cmd.Flags().StringVar(before, "before", "", "the cursor printed by the previous page, or an RFC 3339 time")
}

// notePage tells how to read the page after this one. again is the
// command that printed this page (without --before), next the server's
// cursor (empty: this was the last page), filtered whether the list
// takes filters, which must be given again.
func (r *runner) notePage(again, next string, filtered bool) {
	if next == "" {
		return
	}
	same := ""
	if filtered {
		same = " (and the same filters)"
	}
	r.note("older entries: %s %s --before %s%s", progName, again, quoted(next), same)
}
