package launcher

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

func TestCAFilePID(t *testing.T) {
	self := os.Getpid()
	f, err := os.CreateTemp(t.TempDir(), caFilePattern("bundle"))
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if pid, ok := caFilePID(filepath.Base(f.Name())); !ok || pid != self {
		t.Errorf("caFilePID(%q) = %d, %v, want our pid %d", filepath.Base(f.Name()), pid, ok, self)
	}
	for name, want := range map[string]int{
		"agent-vault-ca-42-bundle-123.pem": 42,
		"agent-vault-ca-7-node-0.pem":      7,
		"agent-vault-ca-9-wgetrc-1.wgetrc": 9,
	} {
		if pid, ok := caFilePID(name); !ok || pid != want {
			t.Errorf("caFilePID(%q) = %d, %v, want %d", name, pid, ok, want)
		}
	}
	for _, name := range []string{
		"agent-vault-ca-bundle-123.pem", // the format without a pid
		"agent-vault-ca-123.pem",
		"agent-vault-ca-0-node-1.pem", // 0 and -1 name process groups
		"agent-vault-ca--1-node-1.pem",
		"agent-vault-ca-99999999999-node-1.pem",
		"agent-vault-ca-42-other-1.pem",
		"agent-vault-ca-42-wgetrc-1.pem", // a kind with another suffix
		"agent-vault-ca-42-node-1.wgetrc",
		"agent-vault-ca-42-node-1.pem.bak",
		"agent-vault-ca-42-node-x.pem",
		"agent-vault-ca-42-node-.pem",
		"agent-vault-ca-+42-node-1.pem",
		fmt.Sprintf("other-%d-node-1.pem", self),
	} {
		if pid, ok := caFilePID(name); ok {
			t.Errorf("caFilePID(%q) = %d, want no match", name, pid)
		}
	}
}
