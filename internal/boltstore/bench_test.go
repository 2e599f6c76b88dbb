package boltstore

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/sendgate/sendgate/limiter"
	"github.com/sendgate/sendgate/limiter/memstore"
)

// benchKeys is the key set of the admission benchmarks.
func benchKeys(n int) []limiter.Key {
	keys := make([]limiter.Key, n)
	for i := range keys {
		keys[i] = limiter.Key{IP: fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255), Provider: "qq"}
	}
	return keys
}

// benchPolicy has three tiers too large to ever defer.
func benchPolicy(b *testing.B) *limiter.Policy {
	pol := &limiter.Policy{Default: &limiter.Provider{
		Name:    "default",
		Limits:  limiter.Limits{limiter.Minute: 1 << 40, limiter.Hour: 1 << 40, limiter.Day: 1 << 40},
		Machine: limiter.DefaultMachine(),
	}}
	if err := pol.Validate(); err != nil {
		b.Fatal(err)
	}
	return pol
}

// benchAdmit runs parallel ALLOWs over 10,000 keys, the clock advancing
// one microsecond per call.
func benchAdmit(b *testing.B, s limiter.Store, pol *limiter.Policy) {
	keys := benchKeys(10000)
	p := pol.Default
	ctx := context.Background()
	var seq atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := int(seq.Add(7919))
		for pb.Next() {
			i++
			now := t0.Add(time.Duration(i) * time.Microsecond)
			if d, _ := s.Admit(ctx, keys[i%len(keys)], p, 1, false, now); d.Verdict != limiter.Allow {
				b.Fatal("deferred")
			}
		}
	})
}

func BenchmarkAdmitMemory(b *testing.B) {
	pol := benchPolicy(b)
	s := memstore.New(memstore.Options{Policy: pol.For})
	defer s.Close()
	benchAdmit(b, s, pol)
}

// BenchmarkAdmitEmbedded is BenchmarkAdmitMemory with the file behind it,
// flushing every second as in production.
func BenchmarkAdmitEmbedded(b *testing.B) {
	pol := benchPolicy(b)
	s, err := Open(filepath.Join(b.TempDir(), FileName), Options{Policy: pol.For})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	benchAdmit(b, s, pol)
}

// BenchmarkReportTransition measures an Update that transitions (an
// operator hold), so each waits for its commit and fsync: one caller at a
// time, and many at once, which share commits.
func BenchmarkReportTransition(b *testing.B) {
	for _, par := range []bool{false, true} {
		name := "serial"
		if par {
			name = "parallel"
		}
		b.Run(name, func(b *testing.B) {
			pol := benchPolicy(b)
			s, err := Open(filepath.Join(b.TempDir(), FileName), Options{Policy: pol.For})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			keys := benchKeys(1000)
			p := pol.Default
			ctx := context.Background()
			var seq atomic.Int64
			hold := func(i int) {
				now := t0.Add(time.Duration(i) * time.Millisecond)
				rec, _ := s.Update(ctx, keys[i%len(keys)], func(rec *limiter.Record) limiter.Change {
					return limiter.Hold(rec, p, time.Time{}, "bench", "bench", now)
				})
				if rec.Rep.State != limiter.Held {
					b.Fatal("not held")
				}
			}
			b.ResetTimer()
			if !par {
				for i := 0; i < b.N; i++ {
					hold(i)
				}
			} else {
				b.SetParallelism(32)
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						hold(int(seq.Add(1)))
					}
				})
			}
			b.StopTimer()
			if s.WriteErrors() != 0 {
				b.Fatal(s.Healthy())
			}
		})
	}
}

// BenchmarkOpen1M writes a file of 1,000,000 keys (nine in ten with
// consumption on three tiers, one in ten blocked with a strike and a
// history entry) and measures Open, which loads them all, and reports
// the bytes on disk per key. Run it alone: go test -run '^$' -bench
// Open1M -benchtime 1x.
func BenchmarkOpen1M(b *testing.B) {
	const n = 1000000
	path := filepath.Join(b.TempDir(), FileName)
	pol := benchPolicy(b)
	s, err := Open(path, Options{Policy: pol.For})
	if err != nil {
		b.Fatal(err)
	}
	s.Close()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		b.Fatal(err)
	}
	keys := benchKeys(n)
	// In key order, as bbolt fills pages best (and fastest) that way.
	slices.SortFunc(keys, func(a, b limiter.Key) int { return strings.Compare(a.String(), b.String()) })
	var val []byte
	for lo := 0; lo < n; lo += 100000 {
		err := db.Update(func(tx *bolt.Tx) error {
			bk := tx.Bucket(recordsBucket)
			for i := lo; i < lo+100000; i++ {
				rec := benchRecord(pol.Default, i)
				val = encode(val[:0], &rec)
				if err := bk.Put(appendKey(nil, keys[i]), append([]byte(nil), val...)); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	db.Close()
	st, err := os.Stat(path)
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		s, err := Open(path, Options{Policy: pol.For, SweepInterval: -1, Logger: slog.New(slog.NewTextHandler(os.Stderr, nil))})
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if s.Len() != n {
			b.Fatalf("loaded %d keys", s.Len())
		}
		s.Close()
		b.StartTimer()
	}
	b.ReportMetric(float64(st.Size())/n, "bytes/key")
	b.ReportMetric(float64(n), "keys")
}

// benchRecord is the record of the i-th key of BenchmarkOpen1M.
func benchRecord(p *limiter.Provider, i int) limiter.Record {
	var rec limiter.Record
	now := t0.Add(time.Duration(i) * time.Millisecond)
	limiter.Admit(&rec, p, uint32(1+i%20), false, now)
	if i%10 == 0 {
		limiter.Apply(&rec, p, limiter.Report{Class: limiter.IPBlocked, Rule: "qq-550", Reply: "550 Mail rejected: IP listed"}, now)
	}
	return rec
}
