package state

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func TestSQLiteFileIsPrivate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data dir?#x")
	path := filepath.Join(dir, "state.db")
	db := open(t, Config{Backend: BackendSQLite, DSN: path})
	must(t, db.PutService(ctx, "s", []byte(`{}`)))
	if st, err := os.Stat(dir); err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("dir: %v %v", st.Mode(), err)
	}
	for _, f := range []string{path, path + "-wal", path + "-shm"} {
		if st, err := os.Stat(f); err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v %v", f, st.Mode(), err)
		}
	}
	// The path with '?' and '#' was not read as URI parameters.
	entries, _ := os.ReadDir(dir)
	if len(entries) != 3 {
		t.Fatalf("files in %s: %v", dir, entries)
	}
	for pragma, want := range map[string]string{"journal_mode": "wal", "foreign_keys": "1", "busy_timeout": "10000", "synchronous": "2"} {
		var got string
		if err := db.queryRow(ctx, "PRAGMA "+pragma).Scan(&got); err != nil || strings.ToLower(got) != want {
			t.Errorf("PRAGMA %s = %q %v, want %q", pragma, got, err, want)
		}
	}
}

// TestSQLiteLooseExistingFileIsTightened: a database file and its WAL
// files left readable by others (an older build, a copy, a hand-made
// file) are made 0600 when opened, not kept as they were.
func TestSQLiteLooseExistingFileIsTightened(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	db := open(t, Config{Backend: BackendSQLite, DSN: path})
	must(t, db.PutService(ctx, "s", []byte(`{}`)))
	must(t, db.Close())
	// Closing the last connection checkpoints and deletes the WAL
	// files; loose leftovers of a crashed process are made by hand.
	for _, f := range []string{path, path + "-wal", path + "-shm"} {
		if _, err := os.Stat(f); err != nil {
			must(t, os.WriteFile(f, nil, 0o644))
		}
		must(t, os.Chmod(f, 0o644))
	}
	db = open(t, Config{Backend: BackendSQLite, DSN: path})
	must(t, db.PutService(ctx, "t", []byte(`{}`)))
	for _, f := range []string{path, path + "-wal", path + "-shm"} {
		if st, err := os.Stat(f); err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v %v, want 0600", filepath.Base(f), st.Mode(), err)
		}
	}
}

func TestSQLiteTwoHandlesOnOneFile(t *testing.T) {
	// Two DBs on one file (a second process, or an old and a new app
	// instance during a config reload): busy_timeout and immediate
	// transactions keep their writes from failing with SQLITE_BUSY.
	path := filepath.Join(t.TempDir(), "state.db")
	a := open(t, Config{Backend: BackendSQLite, DSN: path})
	b := open(t, Config{Backend: BackendSQLite, DSN: path})
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for i, db := range []*DB{a, b, a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 20 {
				errs <- db.PutService(context.Background(), fmt.Sprintf("s%d-%d", i, j), []byte(`{}`))
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if list, _ := b.ListServices(ctx); len(list) != 80 {
		t.Fatalf("%d services", len(list))
	}
}

func TestSQLiteHealthy(t *testing.T) {
	db, err := Open(context.Background(), Config{Backend: BackendSQLite, DSN: filepath.Join(t.TempDir(), "s.db")})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Healthy(); err != nil {
		t.Fatal(err)
	}
	must(t, db.Close())
	must(t, db.Close())
	if err := db.Healthy(); err == nil || !strings.HasPrefix(err.Error(), "state sqlite: ") {
		t.Fatalf("Healthy after Close: %v", err)
	}
	if err := db.PutService(ctx, "s", nil); err == nil || !strings.HasPrefix(err.Error(), "state sqlite: put service s: ") {
		t.Fatalf("write after Close: %v", err)
	}
}

func TestSQLiteUnopenable(t *testing.T) {
	// A path under a regular file cannot be created.
	file := filepath.Join(t.TempDir(), "file")
	must(t, os.WriteFile(file, nil, 0o600))
	_, err := Open(context.Background(), Config{Backend: BackendSQLite, DSN: filepath.Join(file, "state.db")})
	if err == nil || !strings.HasPrefix(err.Error(), "state sqlite: open: ") {
		t.Fatalf("Open = %v", err)
	}
}

// TestSQLiteOpensRaceOnFreshFiles opens many handles on brand-new
// files at the same moment, round after round: converting a new file
// to WAL mode fails with SQLITE_BUSY at once (no busy_timeout) for
// every handle but the first, which Open must ride out.
func TestSQLiteOpensRaceOnFreshFiles(t *testing.T) {
	dir := t.TempDir()
	for round := range 20 {
		path := filepath.Join(dir, fmt.Sprint(round, ".db"))
		const n = 8
		start := make(chan struct{})
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				<-start
				db, err := Open(context.Background(), Config{Backend: BackendSQLite, DSN: path})
				if err == nil {
					err = db.Close()
				}
				errs[i] = err
			})
		}
		close(start)
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("round %d, Open %d: %v", round, i, err)
			}
		}
	}
}
