package webui

// Services: list, a form per auth type (put creates or replaces),
// delete, templates of common APIs, and the URL tester.

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/agentvault/caddy-agent-vault/caddymodule/apiwire"
)

// serviceTemplate is one template of static/service-templates.json.
type serviceTemplate struct {
	ID      string          `json:"id"`
	Title   string          `json:"title"`
	Service apiwire.Service `json:"service"`
}

// serviceTemplates are the embedded templates, in file order.
var serviceTemplates = mustTemplates()

func mustTemplates() []serviceTemplate {
	data, err := staticFS.ReadFile("static/service-templates.json")
	if err != nil {
		panic(err)
	}
	var out []serviceTemplate
	if err := json.Unmarshal(data, &out); err != nil {
		panic(err)
	}
	return out
}

// authTypes are the auth types the form offers.
var authTypes = apiwire.AuthTypes()

type servicesData struct {
	Services  []apiwire.Service
	Err       string
	Form      serviceForm
	Templates []serviceTemplate
	AuthTypes []string
	TestURL   string
	Match     *apiwire.ServiceMatch
	MatchErr  string
	// Discovered are the hosts agents tried that no service covers,
	// each with a link that starts a service for it.
	Discovered    []apiwire.DiscoveredHost
	DiscoveredErr string
}

// serviceForm is the form's fields, as shown.
type serviceForm struct {
	Editing bool
	apiwire.Service
	// Headers is the custom type's headers, one "Name: template" a line.
	Headers       string
	AllowUpgrades string
	// Methods and Paths are the rules as edited: comma-separated
	// methods, one path glob a line.
	Methods string
	Paths   string
	// NoIntercept is a passthrough's "intercept": false.
	NoIntercept bool
}

func formOf(s apiwire.Service, editing bool) serviceForm {
	f := serviceForm{Editing: editing, Service: s, AllowUpgrades: strings.Join(s.AllowUpgrades, ", "),
		Methods: strings.Join(s.Methods, ", "), Paths: strings.Join(s.Paths, "\n"), NoIntercept: !s.Intercepts()}
	names := make([]string, 0, len(s.Auth.Headers))
	for n := range s.Auth.Headers {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		f.Headers += n + ": " + s.Auth.Headers[n] + "\n"
	}
	return f
}

// postedService builds the service the form describes; only the
// fields of the chosen auth type are taken (the API validates).
func (c *call) postedService() (apiwire.Service, error) {
	s := apiwire.Service{Name: c.field("name"), Host: c.field("host"), AllowCleartext: c.r.PostForm.Get("allow_cleartext") != ""}
	s.AllowUpgrades = c.list("allow_upgrades")
	// The rules travel with every save, so editing a service in the
	// form keeps them (a field left out would drop a limit).
	s.Methods, s.Paths = c.list("methods"), c.list("paths")
	s.RateLimit, s.MaxRequestBody = c.field("rate_limit"), c.field("max_request_body")
	a := &s.Auth
	a.Type = c.field("auth_type")
	switch a.Type {
	case apiwire.AuthBearer:
		a.Token = c.field("token")
	case apiwire.AuthBasic:
		a.Username, a.Password = c.field("username"), c.field("password")
	case apiwire.AuthAPIKey:
		a.Key, a.Header, a.Prefix = c.field("key"), c.field("header"), c.r.PostForm.Get("prefix")
	case apiwire.AuthQuery:
		a.Key, a.Param = c.field("key"), c.field("param")
	case apiwire.AuthPassthrough:
		if c.r.PostForm.Get("no_intercept") != "" {
			s.Intercept = new(bool)
		}
	case apiwire.AuthCustom:
		a.Headers = map[string]string{}
		for line := range strings.SplitSeq(c.r.PostForm.Get("headers"), "\n") {
			if strings.TrimSpace(line) == "" {
				continue
			}
			n, v, ok := strings.Cut(line, ":")
			if !ok {
				return s, fmt.Errorf("headers: each line is \"Name: template\"")
			}
			a.Headers[strings.TrimSpace(n)] = strings.TrimSpace(v)
		}
	}
	return s, nil
}

func (u *UI) services(c *call) {
	if c.r.Method == http.MethodPost {
		name := c.field("name")
		switch c.action() {
		case "put":
			s, err := c.postedService()
			if err == nil {
				var ans apiwire.ServicePutResponse
				_, err = c.do(http.MethodPut, "/api/v1/services/"+seg(name), s, &ans)
				if err == nil && len(ans.Warnings) > 0 {
					c.done(nil, "service "+name+" saved; warning: "+strings.Join(ans.Warnings, "; "))
					return
				}
			}
			c.done(err, "service "+name+" saved")
		case "delete":
			_, err := c.do(http.MethodDelete, "/api/v1/services/"+seg(name), nil, nil)
			c.done(err, "service "+name+" deleted")
		case "match":
			u.servicesPage(c, withoutQuery(c.field("url")))
		default:
			c.done(errNoAction, "")
		}
		return
	}
	u.servicesPage(c, "")
}

// withoutQuery cuts the query and fragment off a URL to test: they
// decide no match, and are where keys often are (so they are never
// sent on, shown, or kept in a history).
func withoutQuery(s string) string {
	if i := strings.IndexAny(s, "?#"); i >= 0 {
		return s[:i]
	}
	return s
}

// servicesPage renders the services page; testURL non-empty (the URL
// tester's POST) shows which service matches it.
func (u *UI) servicesPage(c *call, testURL string) {
	q := c.r.URL.Query()
	d := servicesData{Templates: serviceTemplates, AuthTypes: authTypes, Form: serviceForm{Service: apiwire.Service{Auth: apiwire.ServiceAuth{Type: apiwire.AuthBearer}}}}
	var list apiwire.ServiceList
	if err := c.get("/api/v1/services", &list); err != nil {
		d.Err = errText(err)
	}
	d.Services = list.Services
	var found apiwire.DiscoveredList
	if err := c.get("/api/v1/discovered?limit=20", &found); err != nil {
		d.DiscoveredErr = errText(err)
	}
	d.Discovered = found.Hosts
	if host := q.Get("host"); host != "" {
		// "Add a service" for a discovered host: only the host is
		// filled in; the operator picks the rest.
		d.Form.Host = host
	}
	if id := q.Get("template"); id != "" {
		for _, t := range serviceTemplates {
			if t.ID == id {
				d.Form = formOf(t.Service, false)
			}
		}
	}
	if name := q.Get("edit"); name != "" {
		for _, s := range list.Services {
			if s.Name == name {
				d.Form = formOf(s, true)
			}
		}
	}
	if t := testURL; t != "" {
		d.TestURL = t
		var m apiwire.ServiceMatch
		if err := c.get("/api/v1/services/match?url="+url.QueryEscape(t), &m); err != nil {
			d.MatchErr = errText(err)
		} else {
			d.Match = &m
		}
	}
	c.render("services", "Services", d)
}
