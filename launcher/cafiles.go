package launcher

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// caFilePrefix starts the name of every temp CA file; the launcher's pid
// follows, so that a later launcher can tell whether its creator is gone.
const caFilePrefix = "agent-vault-ca-"

// caFileKinds are the CA files a launch writes.
var caFileKinds = []string{"bundle", "node"}

// caFilePattern is the os.CreateTemp pattern of a CA file of kind:
// agent-vault-ca-<pid>-<kind>-<random>.pem.
func caFilePattern(kind string) string {
	return fmt.Sprintf("%s%d-%s-*.pem", caFilePrefix, os.Getpid(), kind)
}

// caFilePID returns the pid in the name of a CA file written by a
// launcher, and false for any other name. The pid is at least 1 (0 and
// negative numbers name process groups to kill(2)).
func caFilePID(name string) (int, bool) {
	rest, ok := strings.CutPrefix(name, caFilePrefix)
	if !ok {
		return 0, false
	}
	pidText, rest, ok := strings.Cut(rest, "-")
	if !ok || !allDigits(pidText) || len(pidText) > 10 {
		return 0, false
	}
	kind, random, ok := strings.Cut(rest, "-")
	if !ok || (kind != caFileKinds[0] && kind != caFileKinds[1]) {
		return 0, false
	}
	random, ok = strings.CutSuffix(random, ".pem")
	if !ok || !allDigits(random) {
		return 0, false
	}
	pid, err := strconv.ParseInt(pidText, 10, 32)
	if err != nil || pid < 1 {
		return 0, false
	}
	return int(pid), true
}

func allDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
