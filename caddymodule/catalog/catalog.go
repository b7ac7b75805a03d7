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
//
// No lock is held across the store's I/O: a write waiting on the
// database (a row lock held by another broker) must not hold up a
// Reload, which the change feed runs. Only swapping the table is
// serialised; each swap recomputes from the table current then.
type Catalog struct {
	store Store
	mu    sync.Mutex // guards swapping table and gen, never held during I/O
	// gen counts the local writes swapped in, so a Reload can tell that
	// one landed while it was reading.
	gen   uint64
	table atomic.Pointer[services.Table]
}

// reloadTries bounds how often Reload reads again because a local write
// landed during its read; past it, the read is taken as it is (the
// write's own change notification reloads once more).
const reloadTries = 3

// SkippedError names the stored services a load left out because they
// do not decode or validate: they are not served (fail closed), while
// the others are. Open and Reload return it together with a table that
// was swapped in.
type SkippedError struct {
	Names []string
	Errs  []error
}

func (e *SkippedError) Error() string {
	return fmt.Sprintf("%d stored service(s) not served: %v", len(e.Names), errors.Join(e.Errs...))
}

// Open loads the services kept in store (services hold no secrets). It
// fails when the store cannot be read. A stored service that does not
// decode or validate is left out, not served, and reported in a
// *SkippedError returned together with the usable Catalog: one bad row
// (say, from a newer broker) must neither stop the start nor freeze the
// table.
func Open(ctx context.Context, store Store) (*Catalog, error) {
	if store == nil {
		return nil, errors.New("catalog: no store")
	}
	c := &Catalog{store: store}
	t, skipped, err := c.load(ctx)
	if err != nil {
		return nil, err
	}
	c.table.Store(t)
	if skipped != nil {
		return c, skipped
	}
	return c, nil
}

// Reload rebuilds the table from the store (the change feed calls it
// when another broker, or this one, changed a service). If the store
// cannot be read the table is left unchanged; services that do not
// decode are left out and reported in a *SkippedError, the table
// being swapped in all the same.
//
// A local Put or Delete that lands during the read may or may not be in
// it, so the read is then done again: storing it could take back, for a
// moment, a change this broker just acknowledged.
func (c *Catalog) Reload(ctx context.Context) error {
	for try := 1; ; try++ {
		c.mu.Lock()
		gen := c.gen
		c.mu.Unlock()
		t, skipped, err := c.load(ctx)
		if err != nil {
			return err
		}
		c.mu.Lock()
		if c.gen == gen || try == reloadTries {
			c.table.Store(t)
			c.mu.Unlock()
			if skipped != nil {
				return skipped
			}
			return nil
		}
		c.mu.Unlock()
	}
}

// load reads and compiles every stored service, leaving out (and
// reporting in skipped) those that do not decode or validate.
func (c *Catalog) load(ctx context.Context) (t *services.Table, skipped *SkippedError, err error) {
	recs, err := c.store.ListServices(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("reading services: %w", err)
	}
	svcs := make([]services.Service, 0, len(recs))
	seen := make(map[string]bool, len(recs))
	for _, r := range recs {
		svc, err := decodeStored(r)
		if err == nil && seen[svc.Name] {
			err = errors.New("stored twice")
		}
		if err != nil {
			// The error names the row, never quotes its document.
			if skipped == nil {
				skipped = new(SkippedError)
			}
			skipped.Names = append(skipped.Names, r.Name)
			skipped.Errs = append(skipped.Errs, fmt.Errorf("stored service %q: %v", r.Name, err))
			continue
		}
		seen[svc.Name] = true
		svcs = append(svcs, svc)
	}
	sort.Slice(svcs, func(i, j int) bool { return svcs[i].Name < svcs[j].Name })
	if t, err = services.NewTable(svcs); err != nil {
		return nil, nil, fmt.Errorf("stored services: %v", err)
	}
	return t, skipped, nil
}

// decodeStored decodes and validates one stored service. Unknown
// fields are ignored: during a rolling upgrade a newer broker may store
// a field this one does not know, and refusing the row would take the
// service away from every older broker (the API, which writes, stays
// strict).
func decodeStored(r Record) (services.Service, error) {
	var svc services.Service
	if err := decodeJSON(r.Doc, &svc, false); err != nil {
		return svc, err
	}
	if svc.Name != r.Name {
		return svc, fmt.Errorf("names itself %q", svc.Name)
	}
	if _, err := services.NewTable([]services.Service{svc}); err != nil {
		return svc, err
	}
	return svc, nil
}

// Services returns the current table.
func (c *Catalog) Services() *services.Table { return c.table.Load() }

// Put creates or replaces a service. The new table is compiled first
// (an invalid service changes nothing), then saved, then swapped in: if
// the store fails, the table is unchanged and the store's error is
// returned (wrapped).
//
// The table swapped in is built from the table current at that moment
// (not the one Put started from), so concurrent writes and reloads do
// not undo one another.
func (c *Catalog) Put(ctx context.Context, svc services.Service) error {
	if _, err := c.with(svc.Name, &svc); err != nil {
		return err
	}
	doc, err := json.Marshal(svc)
	if err != nil {
		return err
	}
	if err := c.store.PutService(ctx, svc.Name, doc); err != nil {
		return fmt.Errorf("saving service %q: %w", svc.Name, err)
	}
	return c.swap(svc.Name, &svc)
}

// with builds the table current now with the service named name
// replaced by svc (removed when svc is nil).
func (c *Catalog) with(name string, svc *services.Service) (*services.Table, error) {
	var next []services.Service
	for _, s := range c.table.Load().Services() {
		if s.Name != name {
			next = append(next, s)
		}
	}
	if svc != nil {
		next = append(next, *svc)
	}
	return compile(next)
}

// swap applies a saved write to the table current now.
func (c *Catalog) swap(name string, svc *services.Service) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	t, err := c.with(name, svc)
	if err != nil {
		// Cannot happen: svc compiled alone before it was saved, and
		// the others compiled before. The feed's reload reads it back.
		return fmt.Errorf("service %q saved, but not applied here: %v", name, err)
	}
	c.gen++
	c.table.Store(t)
	return nil
}

// Delete removes a service; it reports whether it existed. If the
// store fails, the table is unchanged.
func (c *Catalog) Delete(ctx context.Context, name string) (bool, error) {
	found, err := c.store.DeleteService(ctx, name)
	if err != nil {
		return false, fmt.Errorf("deleting service %q: %w", name, err)
	}
	// Even when this broker's table had it and the store did not
	// (another broker deleted it first), it is gone now.
	return found, c.swap(name, nil)
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

// decodeJSON decodes one JSON document, refusing trailing data and, if
// strict, unknown fields.
func decodeJSON(data []byte, v any, strict bool) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	if strict {
		dec.DisallowUnknownFields()
	}
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("unexpected data after the JSON document")
	}
	return nil
}
