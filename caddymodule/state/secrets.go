package state

import (
	"net/url"
	"sort"
	"strings"
)

// redacted replaces a secret in a message.
const redacted = "xxxxx"

// dsnSecrets returns every substring of a PostgreSQL DSN that may be a
// password, for a DSN that may not parse: the text after the userinfo's
// first ':' up to each '@' (a password may itself contain '@'), and the
// value of every password= or sslpassword= setting, in URL query or
// keyword/value form, raw and percent-decoded. Over-reporting only
// masks more of a message; under-reporting would leak.
func dsnSecrets(dsn string) []string {
	var out []string
	if _, rest, ok := strings.Cut(dsn, "://"); ok {
		// The userinfo ends at an '@' before the path; a malformed DSN
		// leaves it ambiguous which one, so take them all.
		end := len(rest)
		if i := strings.IndexAny(rest, "/?"); i >= 0 {
			if j := strings.LastIndex(rest, "@"); j > i {
				end = j + 1 // an '@' after '/' or '?': still possibly userinfo
			} else {
				end = i
			}
		}
		info := rest[:end]
		if _, pw, ok := strings.Cut(info, ":"); ok {
			// Without an '@' there is no userinfo: "host:port".
			for i := 0; i < len(pw); i++ {
				if pw[i] == '@' {
					out = addSecrets(out, pw[:i])
				}
			}
		}
	}
	for _, key := range []string{"password=", "sslpassword="} {
		for i := 0; ; {
			j := strings.Index(dsn[i:], key)
			if j < 0 {
				break
			}
			start := i + j + len(key)
			v := dsn[start:]
			if strings.HasPrefix(v, "'") {
				// keyword/value quoting: up to the next unescaped quote.
				body := v[1:]
				end := len(body)
				for k := 0; k < len(body); k++ {
					if body[k] == '\\' {
						k++
						continue
					}
					if body[k] == '\'' {
						end = k
						break
					}
				}
				out = addSecrets(out, body[:end], strings.ReplaceAll(body[:end], `\'`, `'`))
			}
			if k := strings.IndexAny(v, " \t\n&#"); k >= 0 {
				v = v[:k]
			}
			out = addSecrets(out, v)
			i = start
		}
	}
	return out
}

// addSecrets adds the non-empty candidates and their percent-decoded
// forms to list.
func addSecrets(list []string, candidates ...string) []string {
	for _, c := range candidates {
		for _, s := range []string{c, decode(c)} {
			if s != "" && !contains(list, s) {
				list = append(list, s)
			}
		}
	}
	return list
}

func decode(s string) string {
	if d, err := url.PathUnescape(s); err == nil {
		return d
	}
	return ""
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// scrub replaces every secret in msg, longest first so that a secret
// containing a shorter one is replaced whole.
func scrub(msg string, secrets []string) string {
	if len(secrets) == 0 {
		return msg
	}
	sorted := append([]string(nil), secrets...)
	sort.Slice(sorted, func(i, j int) bool { return len(sorted[i]) > len(sorted[j]) })
	for _, s := range sorted {
		msg = strings.ReplaceAll(msg, s, redacted)
	}
	return msg
}
