// Package masterpassword reads the master password from a module's
// config, the one rule for every module that takes one (the built-in
// store and the cluster's Caddy storage): both must derive their keys
// from the same bytes, or a cluster's brokers would disagree.
package masterpassword

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/caddyserver/caddy/v2"
)

// MaxFileBytes caps what is read of master_password_file: a passphrase
// is a line, and a path pointing at something huge (or endless) must
// not be read into memory.
const MaxFileBytes = 64 << 10

// ErrMissing means neither option yields a password; callers wrap it
// with what needs it and how to set it.
var ErrMissing = errors.New("no master password")

// Resolve expands placeholders in value and file and returns the
// password: the file's content without trailing newlines when file is
// set (it takes precedence), else value. Errors name the option, never
// the password: not even a part of it, which a placeholder error would
// quote ({...} in a literal password reads as a placeholder).
func Resolve(repl *caddy.Replacer, value, file string) ([]byte, error) {
	path, err := repl.ReplaceOrErr(file, false, true)
	if err != nil {
		return nil, errors.New("master_password_file holds an unknown {placeholder}")
	}
	if path == "" {
		v, err := repl.ReplaceOrErr(value, false, true)
		if err != nil {
			return nil, errors.New("master_password holds an unknown {placeholder}: to keep braces in a passphrase, pass it as {env.NAME} or in master_password_file")
		}
		if v == "" {
			return nil, ErrMissing
		}
		pw := []byte(v)
		if len(bytes.TrimSpace(pw)) == 0 {
			clear(pw)
			return nil, errors.New("master_password is only whitespace: use a long passphrase")
		}
		return pw, nil
	}
	pw, err := readFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading master_password_file %s: %v", path, err)
	}
	if len(bytes.TrimSpace(pw)) > 0 {
		return pw, nil
	}
	empty := len(pw) == 0
	clear(pw)
	// The file takes precedence: a value set as well is not used, and
	// saying "no password is set" would send the user the wrong way.
	what := "is empty"
	if !empty {
		what = "holds only whitespace"
	}
	msg := fmt.Sprintf("master_password_file %s %s", path, what)
	if v, err := repl.ReplaceOrErr(value, false, true); err == nil && v != "" {
		msg += "; master_password is set too, but the file takes precedence: put the passphrase in the file, or leave master_password_file unset to use master_password"
	}
	return nil, errors.New(msg)
}

// readFile reads at most MaxFileBytes of path, without trailing line
// breaks.
func readFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, unwrapPath(err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxFileBytes+1))
	if err != nil {
		clear(data)
		return nil, unwrapPath(err)
	}
	if len(data) > MaxFileBytes {
		clear(data)
		return nil, fmt.Errorf("larger than %d bytes: is it the right file?", MaxFileBytes)
	}
	return bytes.TrimRight(data, "\r\n"), nil
}

// unwrapPath drops the operation and path of an *os.PathError, which
// the caller names.
func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
