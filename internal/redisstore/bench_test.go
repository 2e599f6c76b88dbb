package redisstore

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sendgate/sendgate/limiter"
	"github.com/sendgate/sendgate/limiter/memstore"
)

// benchKeys spreads the benchmarks over keys as a fleet would.
const benchKeys = 1024

func benchSetup() (*limiter.Provider, []limiter.Key) {
	p := &limiter.Provider{Name: "bench", Limits: limiter.Limits{limiter.Second: 1 << 40, limiter.Minute: 1 << 40, limiter.Hour: 1 << 40},
		Machine: limiter.DefaultMachine()}
	keys := make([]limiter.Key, benchKeys)
	for i := range keys {
		keys[i] = limiter.Key{IP: fmt.Sprintf("198.51.%d.%d", i/256, i%256), Provider: "bench"}
	}
	return p, keys
}

// TestAdmitIsOneRoundTrip: a CanSend costs exactly one round trip.
func TestAdmitIsOneRoundTrip(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, addrs []string) {
		s := open(t, addrs, Options{})
		rt := countRoundTrips(s)
		p, keys := benchSetup()
		for i := 0; i < 100; i++ {
			if _, err := s.Admit(context.Background(), keys[i], p, 1, false, time.Now()); err != nil {
				t.Fatal(err)
			}
		}
		if n := rt.n.Load(); n != 100 {
			t.Errorf("%d round trips for 100 admissions", n)
		}
	})
}

func benchStore(b *testing.B, s limiter.Store, rt *roundTrips) {
	p, keys := benchSetup()
	var next atomic.Int64
	b.SetParallelism(16) // many calls in flight, as a busy replica has
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := int(next.Add(1) * 7919)
		for pb.Next() {
			i++
			d, err := s.Admit(context.Background(), keys[i%benchKeys], p, 1, false, time.Now())
			if err != nil || d.Verdict != limiter.Allow {
				b.Errorf("%+v, %v", d, err)
				return
			}
		}
	})
	if rt != nil {
		b.ReportMetric(float64(rt.n.Load())/float64(b.N), "roundtrips/op")
	}
}

// BenchmarkAdmitRedis is CanSend's store step through one replica on the
// standalone Redis: the script, the arguments and decoding the reply.
func BenchmarkAdmitRedis(b *testing.B) {
	s := open(b, []string{needStandalone(b)}, Options{})
	benchStore(b, s, countRoundTrips(s))
}

// BenchmarkAdmitRedisCluster is the same on the three-node Cluster.
func BenchmarkAdmitRedisCluster(b *testing.B) {
	s := open(b, needCluster(b), Options{})
	benchStore(b, s, countRoundTrips(s))
}

// BenchmarkAdmitMemory is the same step on the memory store, for the ratio.
func BenchmarkAdmitMemory(b *testing.B) {
	s := memstore.New(memstore.Options{SweepInterval: -1})
	defer s.Close()
	benchStore(b, s, nil)
}

// BenchmarkRawEvalsha is the ceiling: the same script by EVALSHA in a tight
// loop, arguments built once, the reply not decoded.
func BenchmarkRawEvalsha(b *testing.B) {
	s := open(b, []string{needStandalone(b)}, Options{})
	p, keys := benchSetup()
	args := s.scriptArgs(p, 'a', 1, false, time.Now())
	hks := make([][]string, len(keys))
	for i, k := range keys {
		hks[i] = []string{hashKey(s.prefix, k)}
	}
	hash := s.admit.Hash()
	var next atomic.Int64
	b.SetParallelism(16) // many calls in flight, as a busy replica has
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := int(next.Add(1) * 7919)
		for pb.Next() {
			i++
			if err := s.client.EvalSha(context.Background(), hash, hks[i%benchKeys], args...).Err(); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
