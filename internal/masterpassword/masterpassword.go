// Package masterpassword reads the master password from a module's
// config, the one rule for every module that takes one (the built-in
// store and the cluster's Caddy storage): both must derive their keys
// from the same bytes, or a cluster's brokers would disagree.
package masterpassword

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/caddyserver/caddy/v2"
)

// ErrMissing means neither option yields a password; callers wrap it
// with what needs it and how to set it.
var ErrMissing = errors.New("no master password")

// Resolve expands placeholders in value and file and returns the
// password: the file's content without trailing newlines when file is
// set (it takes precedence), else value. Errors name the option, never
// the password.
func Resolve(repl *caddy.Replacer, value, file string) ([]byte, error) {
	path, err := repl.ReplaceOrErr(file, false, true)
	if err != nil {
		return nil, fmt.Errorf("master_password_file: %v", err)
	}
	var pw []byte
	if path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("reading master_password_file: %v", err)
		}
		pw = []byte(strings.TrimRight(string(data), "\r\n"))
		clear(data)
	} else {
		v, err := repl.ReplaceOrErr(value, false, true)
		if err != nil {
			return nil, fmt.Errorf("master_password: %v", err)
		}
		pw = []byte(v)
	}
	if len(pw) == 0 {
		return nil, ErrMissing
	}
	return pw, nil
}
