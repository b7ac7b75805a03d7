package builtin

import (
	"bytes"
	"context"
	"errors"
	"maps"
	"slices"
	"sync"

	"github.com/agentvault/caddy-agent-vault/storebackends"
)

// memRecords is an in-memory storebackends.Records with the database's
// rules: first header wins, versions must grow by one, import only
// into an empty store. Tests reach into it to tamper or fail.
type memRecords struct {
	mu      sync.Mutex
	header  []byte
	recs    map[string]storebackends.Record
	failErr error // every call fails with it when set
	// conflicts makes that many Puts fail with ErrConflict first.
	conflicts int
	// beforeCreate, when set, runs at the start of CreateHeader (to
	// line two Opens up).
	beforeCreate func()
	puts         int
}

func newMemRecords() *memRecords {
	return &memRecords{recs: map[string]storebackends.Record{}}
}

func (m *memRecords) Header(context.Context) ([]byte, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.failErr != nil {
		return nil, false, m.failErr
	}
	return bytes.Clone(m.header), m.header != nil, nil
}

func (m *memRecords) CreateHeader(_ context.Context, doc []byte) ([]byte, error) {
	if m.beforeCreate != nil {
		m.beforeCreate()
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.failErr != nil {
		return nil, m.failErr
	}
	if m.header == nil {
		m.header = bytes.Clone(doc)
	}
	return bytes.Clone(m.header), nil
}

func (m *memRecords) List(context.Context) ([]storebackends.Record, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.failErr != nil {
		return nil, m.failErr
	}
	var out []storebackends.Record
	for _, name := range slices.Sorted(maps.Keys(m.recs)) {
		out = append(out, cloneRecord(m.recs[name]))
	}
	return out, nil
}

func (m *memRecords) Put(_ context.Context, r storebackends.Record) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.failErr != nil {
		return m.failErr
	}
	if m.conflicts > 0 {
		m.conflicts--
		return storebackends.ErrConflict
	}
	want := uint64(1)
	if old, ok := m.recs[r.Name]; ok {
		want = old.Version + 1
	}
	if r.Version != want {
		return storebackends.ErrConflict
	}
	m.recs[r.Name] = cloneRecord(r)
	m.puts++
	return nil
}

func (m *memRecords) Delete(_ context.Context, name string) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.failErr != nil {
		return false, m.failErr
	}
	_, ok := m.recs[name]
	delete(m.recs, name)
	return ok, nil
}

func (m *memRecords) Import(_ context.Context, header []byte, recs []storebackends.Record) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.failErr != nil {
		return m.failErr
	}
	if m.header != nil || len(m.recs) > 0 {
		return errors.New("the store is not empty")
	}
	m.header = bytes.Clone(header)
	for _, r := range recs {
		m.recs[r.Name] = cloneRecord(r)
	}
	return nil
}

// edit changes a stored record in place, as someone with write access
// to the database could.
func (m *memRecords) edit(name string, f func(*storebackends.Record)) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r := cloneRecord(m.recs[name])
	f(&r)
	delete(m.recs, name)
	m.recs[r.Name] = r
}

func cloneRecord(r storebackends.Record) storebackends.Record {
	r.Nonce, r.Ciphertext = bytes.Clone(r.Nonce), bytes.Clone(r.Ciphertext)
	return r
}

var _ storebackends.RecordsImporter = (*memRecords)(nil)
