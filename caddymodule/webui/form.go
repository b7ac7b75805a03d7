package webui

// Reading the posted forms.

import (
	"errors"
	"net/url"
	"strings"
)

// errNoAction answers a form whose action the page does not know.
var errNoAction = errors.New("this page has no such action")

// action is the posted form's "action".
func (c *call) action() string { return c.r.PostForm.Get("action") }

// field is a posted field, trimmed.
func (c *call) field(name string) string { return strings.TrimSpace(c.r.PostForm.Get(name)) }

// list splits a field of names separated by commas or spaces.
func (c *call) list(name string) []string {
	return strings.FieldsFunc(c.r.PostForm.Get(name), func(r rune) bool { return r == ',' || r == ' ' || r == '\n' || r == '\r' || r == '\t' })
}

// seg escapes a name for a path segment of the API.
func seg(s string) string { return url.PathEscape(s) }
