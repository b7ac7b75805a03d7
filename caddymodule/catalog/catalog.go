// Package catalog keeps the services the operator defined: the compiled
// table the proxy reads, swapped atomically, and the file it is
// persisted to. A change is saved before it takes effect.
package catalog

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"sync"
	"sync/atomic"

	"github.com/agentvault/caddy-agent-vault/caddymodule/services"
	"github.com/agentvault/caddy-agent-vault/internal/atomicfile"
)

// Catalog is the persisted set of services. It is safe for concurrent
// use.
type Catalog struct {
	path  string
	mu    sync.Mutex // serialises writes and their file
	table atomic.Pointer[services.Table]
}

// Open loads the services saved at path (services hold no secrets); a
// missing file is an empty catalog.
func Open(path string) (*Catalog, error) {
	var svcs []services.Service
	data, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("reading services: %v", err)
	default:
		if err := json.Unmarshal(data, &svcs); err != nil {
			return nil, fmt.Errorf("reading %s: %v", path, err)
		}
	}
	t, err := services.NewTable(svcs)
	if err != nil {
		return nil, fmt.Errorf("%s: %v", path, err)
	}
	c := &Catalog{path: path}
	c.table.Store(t)
	return c, nil
}

// Services returns the current table.
func (c *Catalog) Services() *services.Table { return c.table.Load() }

// Put creates or replaces a service. An error matching ErrNotDurable
// means the change is in effect.
func (c *Catalog) Put(svc services.Service) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var next []services.Service
	for _, s := range c.table.Load().Services() {
		if s.Name != svc.Name {
			next = append(next, s)
		}
	}
	return c.commit(append(next, svc))
}

// Delete removes a service; it reports whether it existed. An error
// matching ErrNotDurable means the change is in effect.
func (c *Catalog) Delete(name string) (bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var next []services.Service
	found := false
	for _, s := range c.table.Load().Services() {
		if s.Name == name {
			found = true
			continue
		}
		next = append(next, s)
	}
	if !found {
		return false, nil
	}
	return true, c.commit(next)
}

func (c *Catalog) commit(svcs []services.Service) error {
	sort.Slice(svcs, func(i, j int) bool { return svcs[i].Name < svcs[j].Name })
	t, err := services.NewTable(svcs)
	if err != nil {
		return err
	}
	if svcs == nil {
		svcs = []services.Service{}
	}
	data, err := json.MarshalIndent(svcs, "", "  ")
	if err != nil {
		return err
	}
	err = atomicfile.Write(c.path, append(data, '\n'), 0o600)
	if err != nil && !errors.Is(err, ErrNotDurable) {
		return fmt.Errorf("saving services: %v", err)
	}
	c.table.Store(t)
	return err // nil, or in effect but perhaps not durable
}

// ErrNotDurable is returned by a change that is in effect and saved,
// but whose file may not survive a crash (syncing the directory failed).
var ErrNotDurable = atomicfile.ErrNotDurable
