package cli

import (
	"bytes"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"unicode/utf8"
)

// maxSecretBytes caps a secret read from stdin. The server takes request
// bodies up to 1 MiB, and JSON may escape a byte into six.
const maxSecretBytes = 128 << 10

// readSecret returns a secret (a credential value, a password): from a
// no-echo prompt when stdin is a terminal, asked twice when confirm is
// set; else all of stdin, without one trailing line break (so that
// `echo "$V" |` and `printf %s "$V" |` store the same value). what names
// the secret in prompts and errors. The caller clears the result.
func (r *runner) readSecret(what string, confirm bool) ([]byte, error) {
	if t := r.env.Terminal; t != nil {
		v, err := t.ReadSecret(fmt.Sprintf("%s: ", what))
		if err != nil {
			return nil, fmt.Errorf("reading %s: %v", what, err)
		}
		if len(v) == 0 {
			return nil, usagef("no %s given", what)
		}
		if confirm {
			again, err := t.ReadSecret(fmt.Sprintf("%s again: ", what))
			if err != nil {
				clear(v)
				return nil, fmt.Errorf("reading %s: %v", what, err)
			}
			same := subtle.ConstantTimeCompare(v, again) == 1
			clear(again)
			if !same {
				clear(v)
				return nil, usagef("the two entries of %s differ", what)
			}
		}
		return v, checkSecret(what, v)
	}
	data, err := io.ReadAll(io.LimitReader(r.env.Stdin, maxSecretBytes+1))
	if err != nil {
		clear(data)
		return nil, fmt.Errorf("reading %s from stdin: %v", what, err)
	}
	if len(data) > maxSecretBytes {
		clear(data)
		return nil, usagef("%s on stdin is longer than %d bytes", what, maxSecretBytes)
	}
	v := trimLineBreak(data)
	if len(v) == 0 {
		clear(data)
		return nil, usagef("no %s on stdin: pipe it in (printf %%s \"$VALUE\" | %s ...) or run in a terminal to be asked for it", what, progName)
	}
	return v, checkSecret(what, v)
}

// trimLineBreak drops one trailing "\n" or "\r\n".
func trimLineBreak(b []byte) []byte {
	if bytes.HasSuffix(b, []byte("\r\n")) {
		return b[:len(b)-2]
	}
	return bytes.TrimSuffix(b, []byte("\n"))
}

// checkSecret refuses what JSON could not carry unchanged: a secret
// that is not UTF-8 would reach the server altered.
func checkSecret(what string, v []byte) error {
	if !utf8.Valid(v) {
		clear(v)
		return usageError{errors.New(what + " is not valid UTF-8 text; the management API takes text values")}
	}
	return nil
}
