package identity

import (
	"fmt"
	"slices"
	"time"

	"github.com/agentvault/caddy-agent-vault/caddymodule/apiwire"
	"github.com/agentvault/caddy-agent-vault/caddymodule/services"
)

// AllServices, as an agent's only service, allows every service, those
// defined later included.
const AllServices = apiwire.AllServices

// Covers reports whether an agent whose allowed services are allowed
// may use service.
func Covers(allowed []string, service string) bool {
	return slices.Contains(allowed, AllServices) || slices.Contains(allowed, service)
}

// NormalizeAgentServices checks the services given for an agent (POST
// /api/v1/agents, PATCH): at least one; each an existing service
// (exists), or AllServices alone. It returns them sorted without
// duplicates, as they are kept; its errors are *InvalidError naming
// the offending service.
func NormalizeAgentServices(list []string, exists func(string) bool) ([]string, error) {
	if len(list) == 0 {
		return nil, &InvalidError{Reason: `"services" is empty: name the services the agent may use, or ["*"] for every service`}
	}
	if slices.Contains(list, AllServices) {
		if slices.ContainsFunc(list, func(s string) bool { return s != AllServices }) {
			return nil, &InvalidError{Reason: `"*" must be the only service: it already allows every service`}
		}
		return []string{AllServices}, nil
	}
	for _, s := range list {
		if !exists(s) {
			return nil, &InvalidError{Reason: "unknown service " + quoteName(s)}
		}
	}
	out := slices.Clone(list)
	slices.Sort(out)
	return slices.Compact(out), nil
}

// AgentMaxTTL checks an agent's max_session_ttl against the server's
// max_session_ttl (appMax): 0 (not given) means appMax; otherwise it
// must be 1s to appMax (an *InvalidError).
func AgentMaxTTL(requested, appMax time.Duration) (time.Duration, error) {
	switch {
	case requested == 0:
		return appMax, nil
	case requested < time.Second:
		return 0, &InvalidError{Reason: "max_session_ttl must be at least 1s"}
	case requested > appMax:
		return 0, &InvalidError{Reason: fmt.Sprintf("max_session_ttl %s exceeds the server's max_session_ttl %s", apiwire.FormatDuration(requested), apiwire.FormatDuration(appMax))}
	}
	return requested, nil
}

// SessionServices decides the services of a session agent (allowed
// allowed) mints, given existing (the services defined now).
// requested nil (omitted) means every allowed service that exists; an
// empty, non-nil list is an *InvalidError, never "all". Each requested
// service must be a service name (else *InvalidError), be allowed (else
// a *ForbiddenError saying how to ask for it) and exist (else
// *InvalidError). Allowed is checked first, for every service, so that
// an agent cannot tell which services it may not use exist (it learns
// that at POST /api/v1/requests). The result is sorted, without
// duplicates, and never empty: an agent none of whose services exists
// is refused (*ForbiddenError).
func SessionServices(agent string, requested, allowed, existing []string) ([]string, error) {
	var out []string
	if requested == nil {
		for _, s := range existing {
			if Covers(allowed, s) {
				out = append(out, s)
			}
		}
		if len(out) == 0 {
			return nil, &ForbiddenError{Reason: "agent " + agent + " may use no service that exists now: ask with POST /api/v1/requests"}
		}
	} else {
		if len(requested) == 0 {
			return nil, &InvalidError{Reason: `"services" is empty: name at least one service, or omit it for every service agent ` + agent + " may use"}
		}
		for _, s := range requested {
			if !services.IsValidName(s) {
				return nil, &InvalidError{Reason: "invalid service name " + quoteName(s)}
			}
		}
		for _, s := range requested {
			if !Covers(allowed, s) {
				return nil, &ForbiddenError{Reason: fmt.Sprintf(`agent %s may not use service %s: ask with POST /api/v1/requests {"service":"%s"}`, agent, s, s)}
			}
		}
		for _, s := range requested {
			if !slices.Contains(existing, s) {
				return nil, &InvalidError{Reason: "unknown service " + quoteName(s)}
			}
		}
		out = slices.Clone(requested)
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// OperatorSessionServices decides the services of a session an
// operator or the admin token mints (no agent's limits apply): nil
// (omitted) is every service defined now (existing; the scope never
// grows afterwards), an empty, non-nil list is an *InvalidError, never
// "all", and each name must exist (else *InvalidError). The result is
// sorted, without duplicates.
func OperatorSessionServices(requested, existing []string) ([]string, error) {
	switch {
	case requested == nil:
		out := slices.Clone(existing)
		slices.Sort(out)
		return slices.Compact(out), nil
	case len(requested) == 0:
		return nil, &InvalidError{Reason: `"services" is empty: name at least one service, or omit it for all services`}
	}
	for _, s := range requested {
		if !slices.Contains(existing, s) {
			return nil, &InvalidError{Reason: "unknown service " + quoteName(s)}
		}
	}
	out := slices.Clone(requested)
	slices.Sort(out)
	return slices.Compact(out), nil
}

// SessionTTL decides the lifetime of a session agent mints: requested
// 0 (omitted) means the server's default_session_ttl (appDefault),
// capped at the agent's max_session_ttl (agentMax); a negative one or
// one under a second is an *InvalidError; one above agentMax a
// *ForbiddenError ("ttl 2h exceeds agent ci-bot's max_session_ttl
// 1h"). The server's own max_session_ttl still applies after it.
func SessionTTL(agent string, requested, agentMax, appDefault time.Duration) (time.Duration, error) {
	switch {
	case agentMax <= 0:
		return 0, fmt.Errorf("agent %s has no valid max_session_ttl (%s)", agent, agentMax)
	case requested == 0 && appDefault > 0:
		return min(appDefault, agentMax), nil
	case requested == 0:
		return agentMax, nil
	case requested < time.Second:
		return 0, &InvalidError{Reason: "ttl must be at least 1s"}
	case requested > agentMax:
		return 0, &ForbiddenError{Reason: fmt.Sprintf("ttl %s exceeds agent %s's max_session_ttl %s", apiwire.FormatDuration(requested), agent, apiwire.FormatDuration(agentMax))}
	}
	return requested, nil
}

// OutOfLimits reports whether a session of an agent, using
// sessionServices with remaining time left, is beyond the agent's
// limits after they changed to allowed and maxTTL: a PATCH that
// narrows an agent revokes such sessions (fail closed).
func OutOfLimits(sessionServices []string, remaining time.Duration, allowed []string, maxTTL time.Duration) bool {
	if remaining > maxTTL {
		return true
	}
	for _, s := range sessionServices {
		if !Covers(allowed, s) {
			return true
		}
	}
	return false
}

// quoteName quotes a name from a request for an error, cut to a
// name's length so that a huge one does not fill the answer.
func quoteName(s string) string {
	if len(s) > 64 {
		return fmt.Sprintf("%q...", s[:64])
	}
	return fmt.Sprintf("%q", s)
}
