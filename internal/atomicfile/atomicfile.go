// Package atomicfile replaces files so that a crash leaves either the
// old or the new content, never a torn file.
package atomicfile

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
)

// ErrNotDurable means the new file is in place (so the change is in
// effect) but syncing the directory failed, so the rename might be lost
// if the machine crashes.
var ErrNotDurable = errors.New("the change is saved but may not survive a crash (syncing the directory failed)")

// Write writes data to a temporary file with mode perm next to path,
// syncs it, renames it over path and syncs the directory, so the rename
// itself survives a crash. A failed directory sync is reported wrapped
// in ErrNotDurable, after the file is in place.
func Write(path string, data []byte, perm os.FileMode) (err error) {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*.tmp") // mode 0600 until Chmod
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = tmp.Close()
			_ = os.Remove(tmp.Name())
		}
	}()
	if err = tmp.Chmod(perm); err != nil {
		return err
	}
	if _, err = tmp.Write(data); err != nil {
		return err
	}
	if err = tmp.Sync(); err != nil {
		return err
	}
	if err = tmp.Close(); err != nil {
		return err
	}
	if err = os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("%w: %w", ErrNotDurable, err)
	}
	return nil
}

// syncDir flushes a directory's entries to disk. Windows cannot sync a
// directory handle (and does not need to for a rename to be durable
// enough), so it is skipped there.
func syncDir(dir string) error {
	if runtime.GOOS == "windows" {
		return nil
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
