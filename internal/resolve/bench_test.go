package resolve_test

import (
	"net"
	"testing"
	"time"

	"github.com/sendgate/sendgate/internal/resolve"
)

// BenchmarkResolveTable measures a table domain: a map lookup and a counter.
func BenchmarkResolveTable(b *testing.B) {
	r := newResolver(b, nil, resolve.Options{})
	ctx := b.Context()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if res := r.Resolve(ctx, "qq.com"); res.Via != resolve.ViaTable {
				b.Fatal(res)
			}
		}
	})
}

// BenchmarkResolveCached measures a domain answered from the cache: a read
// lock, a map lookup, a clock reading and a counter.
func BenchmarkResolveCached(b *testing.B) {
	f := newFake(map[string]fakeAnswer{"corp.test": {mx: []*net.MX{mx(1, "aspmx.l.google.com.")}, ttl: time.Hour}})
	r := newResolver(b, f, resolve.Options{})
	ctx := b.Context()
	r.Resolve(ctx, "corp.test")
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if res := r.Resolve(ctx, "corp.test"); res.Via != resolve.ViaMX {
				b.Fatal(res)
			}
		}
	})
}
