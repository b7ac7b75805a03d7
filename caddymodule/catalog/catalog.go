// Package catalog keeps the services the operator defined: the compiled
// table the proxy reads, swapped atomically, and the store it is
// persisted to (the app's state database, shared by every broker). A
// change is saved before it takes effect, and a change another broker
// saved takes effect here on Reload.
package catalog

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/agentvault/caddy-agent-vault/caddymodule/services"
)

// Record is one stored service: its name and its services.Service JSON.
type Record struct {
	Name      string
	Doc       []byte
	UpdatedAt time.Time
}

// Store is where the catalog persists its services. The app implements
// it over the state database; the catalog never sees SQL.
type Store interface {
	// ListServices returns every stored service.
	ListServices(ctx context.Context) ([]Record, error)
	// PutService creates or replaces a service.
	PutService(ctx context.Context, name string, doc []byte) error
	// DeleteService removes a service; it reports whether it existed.
	DeleteService(ctx context.Context, name string) (bool, error)
}

// Catalog is the persisted set of services. It is safe for concurrent
// use.
type Catalog struct {
	store Store
	mu    sync.Mutex // serialises writes and reloads with their store I/O
	table atomic.Pointer[services.Table]
}

// Open loads the services kept in store (services hold no secrets). A
// stored service that does not validate fails Open: a broker must not
// start with part of its services silently missing.
func Open(ctx context.Context, store Store) (*Catalog, error) {
	if store == nil {
		return nil, errors.New("catalog: no store")
	}
	c := &Catalog{store: store}
	t, err := c.load(ctx)
	if err != nil {
		return nil, err
	}
	c.table.Store(t)
	return c, nil
}

// Reload rebuilds the table from the store (the change feed calls it
// when another broker, or this one, changed a service). On any error
// the table is left unchanged.
func (c *Catalog) Reload(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	t, err := c.load(ctx)
	if err != nil {
		return err
	}
	c.table.Store(t)
	return nil
}

// load reads and compiles every stored service.
func (c *Catalog) load(ctx context.Context) (*services.Table, error) {
	recs, err := c.store.ListServices(ctx)
	if err != nil {
		return nil, fmt.Errorf("reading services: %w", err)
	}
	svcs := make([]services.Service, 0, len(recs))
	for _, r := range recs {
		var svc services.Service
		if err := decodeStrict(r.Doc, &svc); err != nil {
			return nil, fmt.Errorf("stored service %q: %v", r.Name, err)
		}
		if svc.Name != r.Name {
			return nil, fmt.Errorf("stored service %q names itself %q", r.Name, svc.Name)
		}
		svcs = append(svcs, svc)
	}
	sort.Slice(svcs, func(i, j int) bool { return svcs[i].Name < svcs[j].Name })
	t, err := services.NewTable(svcs)
	if err != nil {
		return nil, fmt.Errorf("stored services: %v", err)
	}
	return t, nil
}

// Services returns the current table.
func (c *Catalog) Services() *services.Table { return c.table.Load() }

// Put creates or replaces a service. The new table is compiled first
// (an invalid service changes nothing), then saved, then swapped in: if
// the store fails, the table is unchanged and the store's error is
// returned (wrapped).
func (c *Catalog) Put(ctx context.Context, svc services.Service) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var next []services.Service
	for _, s := range c.table.Load().Services() {
		if s.Name != svc.Name {
			next = append(next, s)
		}
	}
	t, err := compile(append(next, svc))
	if err != nil {
		return err
	}
	doc, err := json.Marshal(svc)
	if err != nil {
		return err
	}
	if err := c.store.PutService(ctx, svc.Name, doc); err != nil {
		return fmt.Errorf("saving service %q: %w", svc.Name, err)
	}
	c.table.Store(t)
	return nil
}

// Delete removes a service; it reports whether it existed. If the
// store fails, the table is unchanged.
func (c *Catalog) Delete(ctx context.Context, name string) (bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var next []services.Service
	for _, s := range c.table.Load().Services() {
		if s.Name != name {
			next = append(next, s)
		}
	}
	t, err := compile(next)
	if err != nil {
		return false, err
	}
	found, err := c.store.DeleteService(ctx, name)
	if err != nil {
		return false, fmt.Errorf("deleting service %q: %w", name, err)
	}
	// Even when this broker's table had it and the store did not
	// (another broker deleted it first), it is gone now.
	c.table.Store(t)
	return found, nil
}

// compile sorts svcs and builds their table.
func compile(svcs []services.Service) (*services.Table, error) {
	sort.Slice(svcs, func(i, j int) bool { return svcs[i].Name < svcs[j].Name })
	return services.NewTable(svcs)
}

// ReadFile reads the services.json of an earlier release (a JSON array
// of services), for the import on first start. Every service must
// validate, as that release required.
func ReadFile(path string) ([]services.Service, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var svcs []services.Service
	if err := json.Unmarshal(data, &svcs); err != nil {
		return nil, fmt.Errorf("reading %s: %v", path, err)
	}
	if _, err := services.NewTable(svcs); err != nil {
		return nil, fmt.Errorf("%s: %v", path, err)
	}
	return svcs, nil
}

// decodeStrict decodes one JSON document, refusing unknown fields and
// trailing data: a document this code does not understand is refused.
func decodeStrict(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("unexpected data after the JSON document")
	}
	return nil
}
