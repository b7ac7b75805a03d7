package services

import (
	"errors"
	"fmt"
	"strings"

	"github.com/agentvault/caddy-agent-vault/storebackends"
)

// template is a parsed string with "{{ NAME }}" credential references.
type template []templatePart

// templatePart is either literal text or, when cred is set, a reference.
type templatePart struct {
	literal string
	cred    string
}

// parseTemplate parses s. A "{{" without "}}", a stray "}}" and anything
// between the braces other than a valid credential name (optionally
// surrounded by spaces) are errors, so typos do not silently become
// literal text.
func parseTemplate(s string) (template, error) {
	var t template
	for s != "" {
		open := strings.Index(s, "{{")
		if stray := strings.Index(s, "}}"); stray >= 0 && (open < 0 || stray < open) {
			return nil, errors.New(`"}}" without a matching "{{"`)
		}
		if open < 0 {
			t = append(t, templatePart{literal: s})
			break
		}
		if open > 0 {
			t = append(t, templatePart{literal: s[:open]})
		}
		rest := s[open+2:]
		end := strings.Index(rest, "}}")
		if end < 0 {
			return nil, errors.New(`"{{" without a matching "}}"`)
		}
		name := strings.Trim(rest[:end], " ")
		if err := storebackends.ValidateName(name); err != nil {
			return nil, fmt.Errorf("bad reference {{%s}}: %w", rest[:end], err)
		}
		t = append(t, templatePart{cred: name})
		s = rest[end+2:]
	}
	return t, nil
}

// literals returns the template's literal text, for validation.
func (t template) literals() []string {
	var out []string
	for _, p := range t {
		if p.cred == "" {
			out = append(out, p.literal)
		}
	}
	return out
}

// creds appends the credential names the template references.
func (t template) creds(dst []string) []string {
	for _, p := range t {
		if p.cred != "" {
			dst = append(dst, p.cred)
		}
	}
	return dst
}

// render substitutes references using value, which must know every
// referenced name (Inject checks that first).
func (t template) render(value func(cred string) string) string {
	if len(t) == 1 && t[0].cred == "" {
		return t[0].literal
	}
	var b strings.Builder
	for _, p := range t {
		if p.cred != "" {
			b.WriteString(value(p.cred))
		} else {
			b.WriteString(p.literal)
		}
	}
	return b.String()
}
