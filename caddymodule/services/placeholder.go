package services

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/url"
	"strings"
)

// PlaceholderPrefix starts every placeholder. A placeholder is the prefix
// followed by exactly 32 lower-case hex digits (128 random bits).
const PlaceholderPrefix = "agvph_"

const (
	placeholderHexLen = 32
	placeholderLen    = len(PlaceholderPrefix) + placeholderHexLen
)

// NewPlaceholder returns a fresh random placeholder.
func NewPlaceholder() (string, error) {
	var b [placeholderHexLen / 2]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("generating placeholder: %w", err)
	}
	return PlaceholderPrefix + hex.EncodeToString(b[:]), nil
}

// placeholderAt reports whether a placeholder starts at s[i], where s[i:]
// is known to start with the prefix. Whatever follows the 32 hex digits
// does not matter, so placeholders can be written back to back or glued
// to other text; 128 random bits make accidental matches impossible.
func placeholderAt(s string, i int) bool {
	end := i + placeholderLen
	return end <= len(s) && isLowerHex(s[i+len(PlaceholderPrefix):end])
}

func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		if !isLowerHexByte(s[i]) {
			return false
		}
	}
	return true
}

func isLowerHexByte(c byte) bool { return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' }

// replacePlaceholders replaces every placeholder in s with
// resolve(placeholder), encoded by escape for where it lands (escape may
// be nil), and appends to written each escaped secret that differs from
// the raw one. When s does not contain PlaceholderPrefix it returns s
// without allocating. Text that starts with the prefix but is not
// followed by 32 lower-case hex digits is left alone; anything after the
// 32 digits is ordinary text. The first error from resolve is returned
// unchanged, and the caller should refuse the request.
// afterUnfinishedEscape reports whether s[:i] ends with "%" or "%H".
func afterUnfinishedEscape(s string, i int) bool {
	return i >= 1 && s[i-1] == '%' || i >= 2 && s[i-2] == '%' && isHex(s[i-1])
}

func replacePlaceholders(s string, resolve func(string) (string, error), escape func(string) string, written *[]string) (string, bool, error) {
	i := strings.Index(s, PlaceholderPrefix)
	if i < 0 {
		return s, false, nil
	}
	var b strings.Builder
	copied := 0 // s[:copied] is already in b (or replaced)
	for i >= 0 {
		next := i + len(PlaceholderPrefix)
		if placeholderAt(s, i) {
			if escape != nil && afterUnfinishedEscape(s, i) {
				// "%2" + placeholder: the escape would take the secret's
				// first byte, and its error (or its absence) would tell
				// the agent what that byte is.
				return s, false, &RewriteError{"a placeholder follows an unfinished %-escape"}
			}
			ph := s[i : i+placeholderLen]
			secret, err := resolve(ph)
			if err != nil {
				return s, false, err
			}
			if escape != nil {
				if esc := escape(secret); esc != secret {
					secret = esc
					*written = append(*written, esc)
				}
			}
			if copied == 0 {
				b.Grow(len(s) + len(secret))
			}
			b.WriteString(s[copied:i])
			b.WriteString(secret)
			copied = i + placeholderLen
			next = copied
		}
		j := strings.Index(s[next:], PlaceholderPrefix)
		if j < 0 {
			break
		}
		i = next + j
	}
	if copied == 0 {
		return s, false, nil
	}
	b.WriteString(s[copied:])
	return b.String(), true, nil
}

// RewriteRequest replaces placeholders with secrets in r's header values
// (all but Proxy-Authorization, which the caller strips), URL path, raw
// query and URL user info. An "Authorization: Basic" value is also
// decoded, rewritten and re-encoded, since git and curl put URL user info
// there. Secrets are percent-encoded where they land in the path or
// query, so they cannot add path segments or query parameters.
//
// resolve returns the secret for a placeholder; the caller learns each
// raw secret there. RewriteRequest returns the other secret-bearing
// strings it wrote, exactly as they go on the wire (escaped secrets and
// re-encoded Basic values), for scrubbing the answer. URL user info is
// rewritten under the same rules, but the proxy never sends it (see
// Proxy.rewrite). A
// placeholder in a header name, a secret that is not a valid header
// value, or an error from resolve fails the whole call and leaves r
// unchanged. A request without placeholders is checked without
// allocating.
func RewriteRequest(r *http.Request, resolve func(ph string) (string, error)) (written []string, err error) {
	type headerEdit struct {
		name  string
		index int
		value string
	}
	var edits []headerEdit
	for name, values := range r.Header {
		if containsPrefixFold(name) {
			return nil, &RewriteError{fmt.Sprintf("header name %q contains a placeholder; placeholders may only appear in values", name)}
		}
		if headerIs(name, "Proxy-Authorization") {
			continue
		}
		isAuth := headerIs(name, "Authorization")
		for i, v := range values {
			nv, changed, err := replacePlaceholders(v, resolve, nil, &written)
			if err != nil {
				return nil, err
			}
			if !changed && isAuth {
				if nv, changed, err = rewriteBasicAuth(v, resolve, &written); err != nil {
					return nil, err
				}
			}
			if !changed {
				continue
			}
			if !validHeaderValue(nv) {
				return nil, &RewriteError{fmt.Sprintf("header %q: a secret contains characters not allowed in an HTTP header", name)}
			}
			edits = append(edits, headerEdit{name, i, nv})
		}
	}

	u := r.URL
	if u == nil {
		u = &url.URL{} // nothing to rewrite
	}
	var newPath, newRawPath string
	pathChanged := false
	if strings.Contains(u.Path, PlaceholderPrefix) || strings.Contains(u.RawPath, PlaceholderPrefix) {
		// Work on the escaped form, which is what goes on the wire, and
		// derive Path from it so the two stay consistent.
		esc, changed, err := replacePlaceholders(u.EscapedPath(), resolve, url.PathEscape, &written)
		if err != nil {
			return nil, err
		}
		if changed {
			if newPath, err = url.PathUnescape(esc); err != nil {
				// Not err's text: it quotes the bytes around the fault,
				// which may be the secret's.
				return nil, &RewriteError{"rewriting the path failed: the result is not a valid escaped path"}
			}
			if (&url.URL{Path: newPath}).EscapedPath() != esc {
				newRawPath = esc
			}
			pathChanged = true
		}
	}
	newQuery, queryChanged, err := replacePlaceholders(u.RawQuery, resolve, url.QueryEscape, &written)
	if err != nil {
		return nil, err
	}
	newUser, userChanged, err := rewriteUserinfo(u.User, resolve, &written)
	if err != nil {
		return nil, err
	}

	// Everything resolved: apply.
	for _, e := range edits {
		r.Header[e.name][e.index] = e.value
	}
	if pathChanged {
		u.Path, u.RawPath = newPath, newRawPath
	}
	if queryChanged {
		u.RawQuery = newQuery
	}
	if userChanged {
		u.User = newUser
	}
	return written, nil
}

// RewriteError is a request whose placeholders cannot be swapped
// safely. Its text never contains a secret.
type RewriteError struct{ reason string }

func (e *RewriteError) Error() string { return e.reason }

// rewriteBasicAuth handles "Basic base64(user:pass)" values whose decoded
// form holds a placeholder. Values that are not valid Basic credentials
// are left as they are. Decoding happens in stack buffers so that the
// common case (no placeholder) does not allocate.
func rewriteBasicAuth(v string, resolve func(string) (string, error), written *[]string) (string, bool, error) {
	const scheme = "basic "
	if len(v) <= len(scheme) || !strings.EqualFold(v[:len(scheme)], scheme) {
		return v, false, nil
	}
	enc := strings.Trim(v[len(scheme):], " \t")
	var decoded []byte
	var src [1024]byte
	var dst [768]byte
	if len(enc) <= len(src) {
		n := copy(src[:], enc)
		m, err := base64.StdEncoding.Decode(dst[:], src[:n])
		if err != nil {
			return v, false, nil
		}
		decoded = dst[:m]
	} else {
		var err error
		if decoded, err = base64.StdEncoding.DecodeString(enc); err != nil {
			return v, false, nil
		}
	}
	if !bytes.Contains(decoded, []byte(PlaceholderPrefix)) {
		return v, false, nil
	}
	out, changed, err := replacePlaceholders(string(decoded), resolve, nil, written)
	if err != nil || !changed {
		return v, false, err
	}
	blob := base64.StdEncoding.EncodeToString([]byte(out))
	*written = append(*written, blob)
	return "Basic " + blob, true, nil
}

func rewriteUserinfo(u *url.Userinfo, resolve func(string) (string, error), written *[]string) (*url.Userinfo, bool, error) {
	if u == nil {
		return nil, false, nil
	}
	name, changedName, err := replacePlaceholders(u.Username(), resolve, nil, written)
	if err != nil {
		return nil, false, err
	}
	pass, hasPass := u.Password()
	pass, changedPass, err := replacePlaceholders(pass, resolve, nil, written)
	if err != nil {
		return nil, false, err
	}
	if !changedName && !changedPass {
		return u, false, nil
	}
	if hasPass {
		return url.UserPassword(name, pass), true, nil
	}
	return url.User(name), true, nil
}

// headerIs compares header names case-insensitively; the length check
// first keeps it cheap, since EqualFold does not do that itself.
func headerIs(name, canonical string) bool {
	return len(name) == len(canonical) && (name == canonical || strings.EqualFold(name, canonical))
}

// containsPrefixFold reports whether s contains PlaceholderPrefix in any
// letter case (header names get canonicalized, "agvph_" -> "Agvph_").
func containsPrefixFold(s string) bool {
	if strings.IndexByte(s, '_') < 0 {
		return false // fast path: the prefix has an underscore
	}
	for i := 0; i+len(PlaceholderPrefix) <= len(s); i++ {
		if strings.EqualFold(s[i:i+len(PlaceholderPrefix)], PlaceholderPrefix) {
			return true
		}
	}
	return false
}
