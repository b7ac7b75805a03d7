package services

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
)

// Injects reports whether the service writes a credential into requests
// (every auth type but passthrough).
func (c *Compiled) Injects() bool { return c.auth.typ != AuthPassthrough }

// UnusableCredentialError says a credential's value cannot be written
// into a request (empty, or not a valid header value). It names the
// credential, never the value.
type UnusableCredentialError struct {
	Name   string
	Reason string
}

func (e *UnusableCredentialError) Error() string {
	return fmt.Sprintf("credential %s cannot be injected: %s", e.Name, e.Reason)
}

// Inject writes the service's auth into r: its headers, or its query
// for query auth. Injected values replace whatever the client sent.
//
// value returns a credential's value; every value Inject writes comes
// from it, so the caller learns each raw secret there. An error from
// value is returned unchanged, and then nothing is written. Inject
// returns the other secret-bearing strings it wrote (the encoded Basic
// header value, a query-escaped value that differs from the raw one),
// exactly as they went on the wire, for scrubbing the answer.
// A value that is empty or not a valid header value fails with an
// *UnusableCredentialError. A passthrough service writes nothing.
func (c *Compiled) Inject(r *http.Request, value func(cred string) (string, error)) (written []string, err error) {
	a := &c.auth
	if a.typ == AuthPassthrough {
		return nil, nil
	}
	if r == nil || r.Header == nil || r.URL == nil {
		return nil, errors.New("inject: request without headers or URL")
	}
	values := make([]string, len(a.creds))
	for i, name := range a.creds {
		v, err := value(name)
		if err != nil {
			return nil, err
		}
		if v == "" {
			return nil, &UnusableCredentialError{Name: name, Reason: "its value is empty"}
		}
		if a.typ != AuthQuery && !validHeaderValue(v) {
			return nil, &UnusableCredentialError{Name: name, Reason: "it contains characters not allowed in an HTTP header"}
		}
		values[i] = v
	}
	lookup := func(name string) string {
		i, _ := slices.BinarySearch(a.creds, name)
		return values[i]
	}

	switch a.typ {
	case AuthQuery:
		v := lookup(a.token)
		q := r.URL.Query()
		q.Set(a.param, v)
		r.URL.RawQuery = q.Encode()
		if esc := url.QueryEscape(v); esc != v {
			written = append(written, esc)
		}
	case AuthBearer:
		replaceHeader(r.Header, "Authorization", "Bearer "+lookup(a.token))
	case AuthBasic:
		user := a.user.render(lookup)
		if strings.IndexByte(user, ':') >= 0 {
			return nil, &UnusableCredentialError{Name: strings.Join(a.user.creds(nil), ","), Reason: "the basic auth username contains ':' after substitution"}
		}
		pass := ""
		if a.pass != "" {
			pass = lookup(a.pass)
		}
		enc := base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))
		written = append(written, enc)
		replaceHeader(r.Header, "Authorization", "Basic "+enc)
	case AuthAPIKey:
		replaceHeader(r.Header, a.header, a.prefix+lookup(a.token))
	case AuthCustom:
		for _, ch := range a.headers {
			replaceHeader(r.Header, ch.name, ch.tmpl.render(lookup))
		}
	}
	return written, nil
}

// replaceHeader sets name to value after removing every spelling of name
// already in h. Header maps filled by hand can hold non-canonical keys,
// which Set alone would leave in place and the transport would send.
func replaceHeader(h http.Header, name, value string) {
	for k := range h {
		if strings.EqualFold(k, name) {
			delete(h, k)
		}
	}
	h[name] = []string{value}
}
