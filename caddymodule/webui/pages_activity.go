package webui

// Activity (filters, a table, the live view in static/app.js) and the
// audit trail.

import (
	"net/http"
	"net/url"

	"github.com/agentvault/caddy-agent-vault/caddymodule/apiwire"
)

// activityFilters are the filter form's fields, passed to the API as
// they are.
var activityFilters = []string{"session", "agent", "service", "host", "decision", "status", "code", "since"}

type activityData struct {
	Filter  map[string]string
	Entries []apiwire.ActivityEntry
	// Next is the link to the next (older) page; empty on the last.
	Next string
	// Query is the filter as a query string, for the stream and paging.
	Query string
	Err   string
	// Blank is the empty entry of the live view's row template.
	Blank apiwire.ActivityEntry
}

func (u *UI) activity(c *call) {
	if c.r.Method == http.MethodPost {
		c.done(errNoAction, "")
		return
	}
	q := c.r.URL.Query()
	d := activityData{Filter: map[string]string{}}
	filter := url.Values{}
	for _, f := range activityFilters {
		if v := q.Get(f); v != "" {
			d.Filter[f] = v
			filter.Set(f, v)
		}
	}
	d.Query = filter.Encode()
	page := url.Values{}
	for k, v := range filter {
		page[k] = v
	}
	if b := q.Get("before"); b != "" {
		page.Set("before", b)
	}
	var list apiwire.ActivityList
	if err := c.get("/api/v1/activity?"+page.Encode(), &list); err != nil {
		d.Err = errText(err)
	}
	d.Entries = list.Entries
	if list.NextBefore != "" {
		filter.Set("before", list.NextBefore)
		d.Next = "/activity?" + filter.Encode()
	}
	c.render("activity", "Activity", d)
}

type auditData struct {
	Actor, Action, Target string
	Entries               []apiwire.AuditEntry
	Next                  string
	Err                   string
}

func (u *UI) audit(c *call) {
	if c.r.Method == http.MethodPost {
		c.done(errNoAction, "")
		return
	}
	q := c.r.URL.Query()
	d := auditData{Actor: q.Get("actor"), Action: q.Get("action"), Target: q.Get("target")}
	p := url.Values{}
	for k, v := range map[string]string{"actor": d.Actor, "action": d.Action, "target": d.Target, "before": q.Get("before")} {
		if v != "" {
			p.Set(k, v)
		}
	}
	var list apiwire.AuditList
	if err := c.get("/api/v1/audit?"+p.Encode(), &list); err != nil {
		d.Err = errText(err)
	}
	d.Entries = list.Entries
	if list.NextBefore != "" {
		p.Set("before", list.NextBefore)
		d.Next = "/audit?" + p.Encode()
	}
	c.render("audit", "Audit trail", d)
}
