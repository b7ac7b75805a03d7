package cli

import (
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"golang.org/x/term"
)

// OSEnv is the environment of the running process: its variables and
// standard streams, and stdin's terminal when it is one.
func OSEnv() Env {
	env := Env{Getenv: os.Getenv, Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr}
	if fd := int(os.Stdin.Fd()); term.IsTerminal(fd) {
		env.Terminal = ttyTerminal{fd: fd, prompt: os.Stderr}
	}
	return env
}

// ttyTerminal prompts on stderr (stdout may be a file or a pipe) and
// reads from the terminal with echo off.
type ttyTerminal struct {
	fd     int
	prompt io.Writer
}

// ReadSecret reads one line without echo. An interrupt while it waits
// restores the terminal first: otherwise the shell would be left
// without echo.
func (t ttyTerminal) ReadSecret(prompt string) ([]byte, error) {
	state, err := term.GetState(t.fd)
	if err != nil {
		return nil, err
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	done := make(chan struct{})
	defer func() {
		signal.Stop(sig)
		close(done)
	}()
	go func() {
		select {
		case <-sig:
			_ = term.Restore(t.fd, state)
			fmt.Fprintln(t.prompt)
			os.Exit(130)
		case <-done:
		}
	}()
	fmt.Fprint(t.prompt, prompt)
	v, err := term.ReadPassword(t.fd)
	fmt.Fprintln(t.prompt)
	return v, err
}
