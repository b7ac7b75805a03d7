package hashicorp

import (
	"context"
	"fmt"
	"testing"

	"github.com/agentvault/caddy-agent-vault/storebackends/hashicorp/vaulttest"
)

// BenchmarkFetch1000RealVault measures one full read of 1 000 KV v2
// secrets from a real Vault dev server on loopback: the fetch part of a
// sync (the engine's part is BenchmarkSync1000 in syncengine).
func BenchmarkFetch1000RealVault(b *testing.B) {
	v := vaulttest.Start(b)
	for i := 0; i < 1000; i++ {
		v.PutKV2(b, "secret", fmt.Sprintf("bench/s%04d", i), map[string]any{fmt.Sprintf("TOKEN_%04d", i): fmt.Sprintf("value-%d", i)})
	}
	f, err := New(Config{Address: v.Addr, AuthMethod: AuthToken, Token: v.RootToken, Mount: "secret", Path: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	ctx := context.Background()
	if err := f.CheckLogin(ctx); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		batch, err := f.Fetch(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if len(batch.Items) != 1000 {
			b.Fatalf("%d items, %d problems", len(batch.Items), len(batch.Problems))
		}
	}
}
