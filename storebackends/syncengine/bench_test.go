package syncengine_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/agentvault/caddy-agent-vault/storebackends"
	"github.com/agentvault/caddy-agent-vault/storebackends/syncengine"
)

// alternatingFetcher returns its batches in turn.
type alternatingFetcher struct {
	batches []storebackends.Batch
	n       int
}

func (f *alternatingFetcher) Fetch(context.Context) (storebackends.Batch, error) {
	b := f.batches[f.n%len(f.batches)]
	f.n++
	return b, nil
}

// batch1000 returns 1000 credentials of realistic size without backend
// versions, so every value is hashed when it changes.
func batch1000(tag string) storebackends.Batch {
	items := make([]storebackends.Item, 1000)
	for i := range items {
		name := fmt.Sprintf("CREDENTIAL_%04d", i)
		items[i] = storebackends.Item{
			Name:   name,
			Value:  fmt.Sprintf("%s-token-%04d-%040d", tag, i, i),
			Source: "secret/agents/app#" + name,
		}
	}
	return storebackends.Batch{Items: items}
}

// BenchmarkSync1000 measures one SyncNow of a 1000-credential store,
// fetch excluded (the fake returns a prepared batch).
func BenchmarkSync1000(b *testing.B) {
	for _, c := range []struct {
		name    string
		batches []storebackends.Batch
	}{
		{"unchanged", []storebackends.Batch{batch1000("a")}},
		{"all_changed", []storebackends.Batch{batch1000("a"), batch1000("b")}},
	} {
		b.Run(c.name, func(b *testing.B) {
			e, err := syncengine.New(syncengine.Options{Store: "bench", Fetcher: &alternatingFetcher{batches: c.batches}})
			if err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			if err := e.SyncNow(ctx); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if err := e.SyncNow(ctx); err != nil {
					b.Fatal(err)
				}
			}
			if h := e.Health(time.Now()); h.Credentials != 1000 {
				b.Fatalf("%d credentials", h.Credentials)
			}
		})
	}
}
