package webui

// The overview and the CA page.

import (
	"net/http"

	"github.com/agentvault/caddy-agent-vault/caddymodule/apiwire"
)

type overviewData struct {
	Stores                 []apiwire.StoreStatus
	StoresErr              string
	Credentials, Services  count
	ActiveSessions, Agents count
	PendingRequests        count
	// CountErrs say why a count is unknown.
	CountErrs   []string
	Refusals    []apiwire.ActivityEntry
	RefusalsErr string
	// Stats are this broker's activity log counts (drops); nil when
	// the API does not say.
	Stats *apiwire.ActivityStats
}

func (u *UI) overview(c *call) {
	if c.r.Method == http.MethodPost {
		c.done(errNoAction, "")
		return
	}
	var d overviewData
	var stores apiwire.StoreList
	if err := c.get("/api/v1/stores", &stores); err != nil {
		d.StoresErr = errText(err)
	}
	d.Stores = stores.Stores
	var creds apiwire.CredentialList
	d.Credentials = d.count(c, "credentials", "/api/v1/credentials", &creds, func() int { return len(creds.Credentials) })
	var svcs apiwire.ServiceList
	d.Services = d.count(c, "services", "/api/v1/services", &svcs, func() int { return len(svcs.Services) })
	var sess apiwire.SessionList
	d.ActiveSessions = d.count(c, "sessions", "/api/v1/sessions", &sess, func() (n int) {
		for _, s := range sess.Sessions {
			if s.Status == apiwire.SessionActive {
				n++
			}
		}
		return n
	})
	var agents apiwire.AgentList
	d.Agents = d.count(c, "agents", "/api/v1/agents", &agents, func() int { return len(agents.Agents) })
	var reqs apiwire.AccessRequestList
	d.PendingRequests = d.count(c, "requests", "/api/v1/requests", &reqs, func() (n int) {
		for _, q := range reqs.Requests {
			if q.Status == apiwire.RequestPending {
				n++
			}
		}
		return n
	})
	var act apiwire.ActivityList
	if err := c.get("/api/v1/activity?decision=refused&limit=10", &act); err != nil {
		d.RefusalsErr = errText(err)
	}
	d.Refusals = act.Entries
	var st apiwire.ActivityStats
	if c.get("/api/v1/activity/stats", &st) == nil {
		d.Stats = &st
	}
	c.render("overview", "Overview", d)
}

// count is one of the overview's counts; Err is set when the API could
// not give it (shown as unknown, not as 0).
type count struct {
	N   int
	Err bool
}

// count reads path into out and counts it with n; a failure is kept
// in d.CountErrs.
func (d *overviewData) count(c *call, what, path string, out any, n func() int) count {
	if err := c.get(path, out); err != nil {
		d.CountErrs = append(d.CountErrs, "cannot count the "+what+": "+errText(err))
		return count{Err: true}
	}
	return count{N: n()}
}

type caData struct {
	APIURL, ProxyURL string
}

func (u *UI) ca(c *call) {
	if c.r.Method == http.MethodPost {
		c.done(errNoAction, "")
		return
	}
	scheme := "http://"
	if c.r.TLS != nil {
		scheme = "https://"
	}
	c.render("ca", "CA and av-launch", caData{APIURL: scheme + c.r.Host, ProxyURL: u.opts.ProxyURL})
}
