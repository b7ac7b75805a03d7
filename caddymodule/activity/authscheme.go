package activity

import (
	"net/http"
	"strings"
)

// AuthSchemeOf names how a request authenticates, never with what: the
// scheme of its Authorization header when it is one of the well-known
// schemes ("Bearer", "Basic", "token", ...; "other" for any other
// value, since a bare key is not a scheme and must not be kept), else
// "header NAME" for the first of the headers APIs commonly take a key
// in (X-Api-Key, Private-Token, ...), else "".
func AuthSchemeOf(h http.Header) string {
	if v := h.Get("Authorization"); v != "" {
		word, _, spaced := strings.Cut(strings.TrimSpace(v), " ")
		for _, s := range knownSchemes {
			if spaced && strings.EqualFold(word, s) {
				return s
			}
		}
		return "other"
	}
	for _, name := range keyHeaders {
		if h.Get(name) != "" {
			return "header " + name
		}
	}
	return ""
}

// knownSchemes are the Authorization schemes AuthSchemeOf names.
var knownSchemes = []string{"Bearer", "Basic", "token", "Bot", "Digest", "Negotiate", "NTLM", "AWS4-HMAC-SHA256", "ApiKey", "Key", "DPoP", "OAuth", "SSWS", "Splunk"}

// keyHeaders are the headers APIs commonly take a key in, in the order
// AuthSchemeOf looks.
var keyHeaders = []string{"X-Api-Key", "Api-Key", "X-Auth-Token", "Private-Token", "X-Access-Token", "X-Goog-Api-Key", "Ocp-Apim-Subscription-Key"}
