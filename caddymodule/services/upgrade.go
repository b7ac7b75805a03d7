package services

import (
	"net/http"
	"strings"

	"golang.org/x/net/http/httpguts"
)

// Upgrades returns the protocols a request asks to switch to (its
// Upgrade header, when Connection names "upgrade"), or nil.
func Upgrades(h http.Header) []string {
	if !httpguts.HeaderValuesContainsToken(h["Connection"], "upgrade") {
		return nil
	}
	var protos []string
	for _, v := range h.Values("Upgrade") {
		for p := range strings.SplitSeq(v, ",") {
			if p = strings.TrimSpace(p); p != "" {
				protos = append(protos, p)
			}
		}
	}
	return protos
}

// AllowsUpgrade reports whether a request to the service, in a session
// whose answers must be scanned, may switch to proto ("name" or
// "name/version"): WebSocket always (its frames are the data plane's to
// handle), anything else only when listed in AllowUpgrades. A nil
// service (an absolute-form request no service covers) allows only
// WebSocket.
func (c *Compiled) AllowsUpgrade(proto string) bool {
	name, _, _ := strings.Cut(proto, "/")
	if strings.EqualFold(name, "websocket") {
		return true
	}
	if c == nil {
		return false
	}
	for _, allowed := range c.Service.AllowUpgrades {
		a, _, hasVersion := strings.Cut(allowed, "/")
		if hasVersion && strings.EqualFold(allowed, proto) || !hasVersion && strings.EqualFold(a, name) {
			return true
		}
	}
	return false
}

// validUpgradeToken checks "token" or "token/token" (RFC 9110 7.8).
func validUpgradeToken(s string) bool {
	name, version, hasVersion := strings.Cut(s, "/")
	return httpguts.ValidHeaderFieldName(name) && (!hasVersion || httpguts.ValidHeaderFieldName(version))
}
