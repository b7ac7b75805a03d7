package caddymodule

import (
	"log"
	"strings"

	"go.uber.org/zap"

	"github.com/agentvault/caddy-agent-vault/caddymodule/scrub"
)

// scrubbedLog is the error log of the reverse proxy and the inner
// server. Their messages quote what an upstream sent (a malformed
// trailer line, say) with no session to scrub it for, so every served
// credential is replaced in them.
func (p *Proxy) scrubbedLog(name string) *log.Logger {
	return log.New(&logScrubber{p: p, l: p.logger.Named(name)}, "", 0)
}

type logScrubber struct {
	p *Proxy
	l *zap.Logger
}

func (w *logScrubber) Write(b []byte) (int, error) {
	var all scrub.SecretSet
	for v := range w.p.deps.creds.Snapshot().AllForScrubbing() {
		all.Add(v, scrub.Redacted)
	}
	msg := strings.TrimSuffix(string(b), "\n")
	w.l.Warn(w.p.redactors.Redactor(&all).String(msg))
	return len(b), nil
}
