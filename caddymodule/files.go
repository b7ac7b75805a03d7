package caddymodule

import (
	"fmt"
	"net/url"
	"os"
	"path/filepath"
)

// writeFileAtomic replaces path with data so that a crash leaves either
// the old or the new content, never a torn file.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // no-op after a successful rename
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// validateProxyURL checks the URL handed to agents: plain http to a
// host and port, nothing else (the agent speaks CONNECT to it).
func validateProxyURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "http" || u.Host == "" || u.Port() == "" || u.User != nil || (u.Path != "" && u.Path != "/") {
		return fmt.Errorf("proxy_url %q: want http://host:port", s)
	}
	return nil
}
