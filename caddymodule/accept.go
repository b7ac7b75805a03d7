package caddymodule

import (
	"strconv"
	"strings"
)

// prefersJSON reports whether an Accept header asks for JSON over text:
// application/json is named with a quality above zero and at least
// that of text/plain (or text/*). A bare */* (curl's, a browser's) or
// no header at all gets text.
func prefersJSON(accept string) bool {
	jsonQ, textQ := -1.0, -1.0
	for len(accept) > 0 {
		var item string
		item, accept, _ = strings.Cut(accept, ",")
		media, params, _ := strings.Cut(item, ";")
		q := 1.0
		for params != "" {
			var p string
			p, params, _ = strings.Cut(params, ";")
			k, v, ok := strings.Cut(strings.TrimSpace(p), "=")
			if !ok || !strings.EqualFold(strings.TrimSpace(k), "q") {
				continue
			}
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil || f < 0 || f > 1 {
				f = 0 // a quality that does not parse does not count
			}
			q = f
		}
		switch strings.ToLower(strings.TrimSpace(media)) {
		case "application/json":
			jsonQ = max(jsonQ, q)
		case "text/plain", "text/*":
			textQ = max(textQ, q)
		}
	}
	return jsonQ > 0 && jsonQ >= textQ
}
