package webui

// The templates: one layout, one file per page, all escaped
// contextually by html/template.

import (
	"bytes"
	"html/template"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/agentvault/caddy-agent-vault/caddymodule/apiwire"
)

// pageTemplates are the pages' templates, parsed once (New runs on
// every API Provision, possibly at the same time).
var pageTemplates = sync.OnceValue(parseTemplates)

var funcs = template.FuncMap{
	"when": func(t any) string {
		switch v := t.(type) {
		case time.Time:
			if v.IsZero() {
				return "never"
			}
			return v.UTC().Format("2006-01-02 15:04:05Z")
		case *time.Time:
			if v == nil || v.IsZero() {
				return "never"
			}
			return v.UTC().Format("2006-01-02 15:04:05Z")
		}
		return ""
	},
	"join": func(s []string) string { return strings.Join(s, ", ") },
	"list": func(s ...string) []string { return s },
	"deref": func(p any) any {
		switch v := p.(type) {
		case *bool:
			return v != nil && *v
		case *string:
			if v == nil {
				return ""
			}
			return *v
		}
		return p
	},
}

// parseTemplates parses the layout with each page.
func parseTemplates() map[string]*template.Template {
	names, err := templateFS.ReadDir("templates")
	if err != nil {
		panic(err)
	}
	out := map[string]*template.Template{}
	for _, n := range names {
		if n.Name() == "layout.html" {
			continue
		}
		t := template.Must(template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/"+n.Name()))
		out[strings.TrimSuffix(n.Name(), ".html")] = t
	}
	return out
}

// view is what every page's template gets.
type view struct {
	Title string
	Page  string
	Me    apiwire.Whoami
	CSRF  string
	// Flash is the one-line message after a write; FlashKind "ok" or
	// "error".
	Flash, FlashKind string
	// Data is the page's own. Edit controls are rendered by Me.Can
	// (what the API says the caller may change), never by role name.
	Data any
}

// render answers the page tmpl with data (status 200).
func (c *call) render(tmpl, title string, data any) {
	c.renderStatus(http.StatusOK, tmpl, title, data)
}

func (c *call) renderStatus(status int, tmpl, title string, data any) {
	v := view{Title: title, Page: tmpl, Me: c.me, CSRF: c.csrf, Data: data}
	v.FlashKind, v.Flash = flashOf(c.csrf, c.r.URL.Query(), tmpl == "login")
	var buf bytes.Buffer
	if err := pageTemplates()[tmpl].Execute(&buf, v); err != nil {
		c.u.plainError(c.w, http.StatusInternalServerError, "the page could not be rendered")
		return
	}
	c.w.Header().Set("Content-Type", "text/html; charset=utf-8")
	c.w.WriteHeader(status)
	c.w.Write(buf.Bytes())
}

// oneLine bounds a flash message to one short line.
func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > 300 {
		s = string(r[:300]) + "…"
	}
	return s
}
