//go:build !linux

package state

import (
	"testing"
	"time"
)

// cpuMeter measures nothing off Linux.
type cpuMeter struct{}

func newCPUMeter(*testing.B, *DB) *cpuMeter   { return &cpuMeter{} }
func (*cpuMeter) start()                      {}
func (*cpuMeter) used() (time.Duration, bool) { return 0, false }
