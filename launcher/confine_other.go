//go:build !linux

package launcher

import (
	"errors"
	"os"
	"os/exec"
)

// confineStage is never started off Linux.
type confineStage struct{ cmd *exec.Cmd }

// startConfineStage refuses --confine off Linux; best-effort runs the
// command unconfined, and says so.
func startConfineStage(cfg *Config) (*confineStage, error) {
	if cfg.Confine == ConfineStrict {
		return nil, errors.New("--confine needs Linux (user namespaces and Landlock); use --confine=best-effort to run unconfined")
	}
	return nil, nil
}

func (st *confineStage) launch(confinePlan, string) (*os.Process, []string, error) {
	return nil, nil, errors.New("--confine needs Linux")
}
func (st *confineStage) plan(*Config, string, []string, int) (confinePlan, error) {
	return confinePlan{}, errors.New("--confine needs Linux")
}
func (st *confineStage) report(*Config, []string) {}
func (st *confineStage) stop()                    {}
func (st *confineStage) abort()                   {}
