package webui

// The overview and the CA page.

import (
	"net/http"

	"github.com/agentvault/caddy-agent-vault/caddymodule/apiwire"
)

type overviewData struct {
	Stores                 []apiwire.StoreStatus
	StoresErr              string
	Credentials, Services  int
	ActiveSessions, Agents int
	PendingRequests        int
	Refusals               []apiwire.ActivityEntry
	RefusalsErr            string
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
	if c.get("/api/v1/credentials", &creds) == nil {
		d.Credentials = len(creds.Credentials)
	}
	var svcs apiwire.ServiceList
	if c.get("/api/v1/services", &svcs) == nil {
		d.Services = len(svcs.Services)
	}
	var sess apiwire.SessionList
	if c.get("/api/v1/sessions", &sess) == nil {
		for _, s := range sess.Sessions {
			if s.Status == apiwire.SessionActive {
				d.ActiveSessions++
			}
		}
	}
	var agents apiwire.AgentList
	if c.get("/api/v1/agents", &agents) == nil {
		d.Agents = len(agents.Agents)
	}
	var reqs apiwire.AccessRequestList
	if c.get("/api/v1/requests", &reqs) == nil {
		for _, q := range reqs.Requests {
			if q.Status == apiwire.RequestPending {
				d.PendingRequests++
			}
		}
	}
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
