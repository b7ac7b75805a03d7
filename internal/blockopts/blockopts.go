// Package blockopts reads the simplest kind of Caddyfile block, one
// option per line with at most one value, the way every such block of
// ours reads: an option given with no value (as an unset {$ENV} leaves
// it) is passed on as "", so one Caddyfile can offer alternatives (a
// password or a password file) and let the environment pick one.
package blockopts

import "github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

// Parse consumes the directive's name, refuses arguments after it, and
// calls set for each option of its block. set returns d.Errf(...) for
// an unknown option or a bad value.
func Parse(d *caddyfile.Dispenser, set func(opt, val string) error) error {
	d.Next() // the directive's name
	if d.NextArg() {
		return d.ArgErr()
	}
	for d.NextBlock(0) {
		opt := d.Val()
		args := d.RemainingArgs()
		if len(args) > 1 {
			return d.ArgErr()
		}
		val := ""
		if len(args) == 1 {
			val = args[0]
		}
		if err := set(opt, val); err != nil {
			return err
		}
	}
	return nil
}
