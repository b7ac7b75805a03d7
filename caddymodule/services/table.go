package services

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strings"
)

// Table is an immutable, compiled set of services, built once per
// configuration change. It is safe for concurrent use.
type Table struct {
	byName   []*Compiled            // sorted by name
	exact    map[string][]*Compiled // host -> services, most specific first
	wildcard map[string][]*Compiled // wildcard base domain -> services, most specific first
	raw      bool                   // some service says intercept: false (RawTunnel)
}

// Compiled is one validated service with its pattern and auth parsed.
type Compiled struct {
	// Service is the table's copy of the definition. Treat it as
	// read-only; injection uses the compiled form, not this field.
	Service Service
	pattern HostPattern
	auth    compiledAuth
	rules   compiledRules
}

// NewTable validates every service, rejects duplicate names and
// precompiles patterns and templates.
func NewTable(svcs []Service) (*Table, error) {
	t := &Table{
		exact:    make(map[string][]*Compiled),
		wildcard: make(map[string][]*Compiled),
	}
	seen := make(map[string]bool, len(svcs))
	for _, s := range svcs {
		p, a, err := s.compile()
		if err != nil {
			return nil, err
		}
		if seen[s.Name] {
			return nil, fmt.Errorf("service %q is defined twice", s.Name)
		}
		seen[s.Name] = true
		rules, _ := compileRules(s) // checked by compile
		c := &Compiled{Service: cloneService(s), pattern: p, auth: a, rules: rules}
		t.byName = append(t.byName, c)
		t.raw = t.raw || !s.Intercepts()
		if p.wildcard {
			t.wildcard[p.host] = append(t.wildcard[p.host], c)
		} else {
			t.exact[p.host] = append(t.exact[p.host], c)
		}
	}
	slices.SortFunc(t.byName, func(x, y *Compiled) int { return strings.Compare(x.Service.Name, y.Service.Name) })
	for _, m := range []map[string][]*Compiled{t.exact, t.wildcard} {
		for _, list := range m {
			slices.SortFunc(list, func(x, y *Compiled) int {
				return cmp.Or(cmp.Compare(y.pattern.spec, x.pattern.spec), strings.Compare(x.Service.Name, y.Service.Name))
			})
		}
	}
	return t, nil
}

func cloneService(s Service) Service {
	s.Auth.Headers = maps.Clone(s.Auth.Headers)
	s.AllowUpgrades, s.Methods, s.Paths = slices.Clone(s.AllowUpgrades), slices.Clone(s.Methods), slices.Clone(s.Paths)
	if s.BodySubstitution != nil {
		v := *s.BodySubstitution
		s.BodySubstitution = &v
	}
	s.Intercept = cloneBool(s.Intercept)
	return s
}

// Lookup returns the most specific in-scope service whose pattern matches
// the request; equally specific services are decided by name. host must
// be normalized as by [hostname.Normalize] and path is the escaped request
// path. A nil inScope puts every service in scope.
//
// Lookup does not look at Service.AllowCleartext: the caller decides
// whether a match over plain http may be injected.
func (t *Table) Lookup(host string, port int, tls bool, path string, inScope func(name string) bool) (*Compiled, bool) {
	return t.find(host, func(c *Compiled) bool {
		return c.pattern.matchPort(port, tls) && c.pattern.matchPath(path) && (inScope == nil || inScope(c.Service.Name))
	})
}

// AllowsHost reports whether any in-scope service covers host and port
// for some path. The proxy uses it when a CONNECT arrives, before the
// path is known.
func (t *Table) AllowsHost(host string, port int, tls bool, inScope func(name string) bool) bool {
	_, ok := t.find(host, func(c *Compiled) bool {
		return c.pattern.matchPort(port, tls) && (inScope == nil || inScope(c.Service.Name))
	})
	return ok
}

// find returns the first service, in specificity order, whose host
// matches and for which ok is true. Exact hosts outrank every wildcard,
// and a wildcard base with more labels outranks one with fewer, so the
// candidate lists are visited in that order and the first hit wins.
func (t *Table) find(host string, ok func(*Compiled) bool) (*Compiled, bool) {
	if t == nil || host == "" {
		return nil, false
	}
	for _, c := range t.exact[host] {
		if ok(c) {
			return c, true
		}
	}
	for i := 0; i < len(host); i++ {
		if host[i] != '.' {
			continue
		}
		if i == 0 || host[i-1] == '.' {
			return nil, false // not a normalized host
		}
		for _, c := range t.wildcard[host[i+1:]] {
			if ok(c) {
				return c, true
			}
		}
	}
	return nil, false
}

// Services returns copies of all services, sorted by name.
func (t *Table) Services() []Service {
	out := make([]Service, len(t.byName))
	for i, c := range t.byName {
		out[i] = cloneService(c.Service)
	}
	return out
}

// Credentials returns the sorted credential names the service uses.
func (c *Compiled) Credentials() []string { return slices.Clone(c.auth.creds) }

// Uses reports whether the service's auth references cred.
func (c *Compiled) Uses(cred string) bool {
	// A service references at most a handful of credentials.
	for _, n := range c.auth.creds {
		if n == cred {
			return true
		}
	}
	return false
}
