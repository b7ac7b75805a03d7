package apiclient

// Where av-launch and the CLI take their API token from: one rule for
// both, so that the same command line and environment send the same
// token whichever tool reads them.

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"strings"
)

// TokenEnv names the variable that holds an API token.
const TokenEnv = "AGENT_VAULT_TOKEN"

// MaxTokenFileBytes caps a token file: a token is one short line.
const MaxTokenFileBytes = 64 << 10

// TokenSpec says where a command may take its API token from. The
// order is explicit before ambient: the file flag, then $AGENT_VAULT_TOKEN,
// then the data dir's token file, and that last one only for a
// management API on loopback (a default file must not travel to
// whatever address the environment names).
type TokenSpec struct {
	// Flag names the file flag in messages ("--token-file").
	Flag string
	// File is the flag's value; FileGiven says whether the flag was on
	// the command line at all. Given but empty (an unset variable) is
	// an error, never "use the default".
	File      string
	FileGiven bool
	// Env is $AGENT_VAULT_TOKEN's value (surrounding space ignored;
	// blank counts as unset).
	Env string
	// DefaultFile is the data dir's token file (admin.token for the
	// CLI, agent.token for av-launch); "" if there is no data dir.
	DefaultFile string
	// DefaultHint, added when DefaultFile does not exist, says how to
	// get one.
	DefaultHint string
	// Addr is the management API the token is for.
	Addr *url.URL
}

// Token is a resolved API token.
type Token struct {
	// Value is the token, trimmed.
	Value string
	// Source says where it came from, for messages ("--token-file F",
	// "AGENT_VAULT_TOKEN", or the default file's path).
	Source string
	// Warnings are for stderr: both the flag and the variable set, a
	// token file others may read.
	Warnings []string
}

// ResolveToken finds the token spec describes (see TokenSpec for the
// order). Its errors say where it looked and what to do; none holds a
// token or a file's content.
func ResolveToken(spec TokenSpec) (Token, error) {
	env := strings.TrimSpace(spec.Env)
	if spec.FileGiven {
		if spec.File == "" {
			return Token{}, fmt.Errorf("%s is empty (an unset variable?): name the token file, or leave %s out", spec.Flag, spec.Flag)
		}
		tok, err := tokenFromFile(spec.File)
		if err != nil {
			return Token{}, err
		}
		tok.Source = spec.Flag + " " + spec.File
		if env != "" {
			tok.Warnings = append(tok.Warnings, fmt.Sprintf("both %s and %s are set: using %s", spec.Flag, TokenEnv, spec.Flag))
		}
		return tok, nil
	}
	if env != "" {
		return Token{Value: env, Source: TokenEnv}, nil
	}
	if spec.Addr != nil && !IsLoopback(spec.Addr) {
		return Token{}, fmt.Errorf("no token: the management API %s is not on loopback, so the data dir's token file is not sent there by default: set %s or pass %s", shownAddr(spec.Addr), TokenEnv, spec.Flag)
	}
	if spec.DefaultFile == "" {
		return Token{}, fmt.Errorf("no token: set %s or pass %s (there is no home directory to find the data dir in)", TokenEnv, spec.Flag)
	}
	tok, err := tokenFromFile(spec.DefaultFile)
	if errors.Is(err, fs.ErrNotExist) {
		msg := fmt.Sprintf("no token: %s is unset and %s does not exist", TokenEnv, spec.DefaultFile)
		if spec.DefaultHint != "" {
			msg += ": " + spec.DefaultHint
		}
		return Token{}, errors.New(msg)
	}
	if err != nil {
		return Token{}, fmt.Errorf("no token: %s is unset and %w", TokenEnv, err)
	}
	tok.Source = spec.DefaultFile
	return tok, nil
}

// tokenFromFile reads one token from path.
func tokenFromFile(path string) (Token, error) {
	data, warnings, err := ReadSecretFile(path, MaxTokenFileBytes)
	if err != nil {
		return Token{}, &fileError{path: path, err: err}
	}
	value := strings.TrimSpace(string(data))
	clear(data)
	if value == "" {
		return Token{}, fmt.Errorf("the token file %s is empty", path)
	}
	return Token{Value: value, Warnings: warnings}, nil
}

// fileError is a token file that could not be read; it unwraps to the
// cause, so that fs.ErrNotExist shows through.
type fileError struct {
	path string
	err  error
}

func (e *fileError) Error() string {
	return fmt.Sprintf("the token file %s is not readable (%v)", e.path, e.err)
}

func (e *fileError) Unwrap() error { return e.err }

// ReadSecretFile reads a small file that holds a secret (a token, a
// session): at most limit bytes, else an error. Anything but a regular
// file is refused before it is opened (a FIFO would hang the read), the
// file is opened without blocking and checked again once open (it must
// be the file that was looked at). The warnings say, as ssh does, when
// others may read the file or it belongs to someone else; they are for
// stderr and never stop the read. Errors name no path (the caller does)
// and never hold the content.
func ReadSecretFile(path string, limit int64) (data []byte, warnings []string, err error) {
	before, err := os.Stat(path)
	if err != nil {
		return nil, nil, unwrapPath(err)
	}
	if !before.Mode().IsRegular() {
		return nil, nil, errors.New("not a regular file")
	}
	f, err := openNonBlocking(path)
	if err != nil {
		return nil, nil, unwrapPath(err)
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return nil, nil, unwrapPath(err)
	}
	if !info.Mode().IsRegular() || !os.SameFile(before, info) {
		return nil, nil, errors.New("changed while being opened")
	}
	data, err = io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		clear(data)
		return nil, nil, unwrapPath(err)
	}
	if int64(len(data)) > limit {
		clear(data)
		return nil, nil, fmt.Errorf("larger than %d bytes: is it the right file?", limit)
	}
	return data, fileWarnings(path, info), nil
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
