package redisstore

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sendgate/sendgate/limiter"
)

// replicas opens n stores on the same servers and prefix, as n sendgate
// replicas would.
func replicas(t *testing.T, addrs []string, n int, opts Options) []*Store {
	t.Helper()
	opts.Prefix = testPrefix()
	out := make([]*Store, n)
	for i := range out {
		out[i] = open(t, addrs, opts)
	}
	return out
}

func eachBackend(t *testing.T, fn func(t *testing.T, addrs []string)) {
	t.Run("standalone", func(t *testing.T) {
		t.Parallel()
		fn(t, []string{needStandalone(t)})
	})
	t.Run("cluster", func(t *testing.T) {
		t.Parallel()
		fn(t, needCluster(t))
	})
}

// TestSixtyFourCallersThreeReplicas hammers one key from 64 callers spread
// over three replicas: the ALLOWs equal the limit exactly, on the server's
// clock (an hour tier refills one token per 7.2s, longer than the test) and
// on a fixed caller clock (a minute tier).
func TestSixtyFourCallersThreeReplicas(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, addrs []string) {
		for _, tc := range []struct {
			name   string
			caller bool
			limits limiter.Limits
			want   int64
		}{
			{"server clock", false, limiter.Limits{limiter.Hour: 500}, 500},
			{"caller clock", true, limiter.Limits{limiter.Minute: 100, limiter.Hour: 1000}, 100},
		} {
			t.Run(tc.name, func(t *testing.T) {
				rs := replicas(t, addrs, 3, Options{UseCallerClock: tc.caller})
				p := &limiter.Provider{Name: "hammer", Limits: tc.limits, Machine: limiter.DefaultMachine()}
				key := limiter.Key{IP: "192.0.2.1", Provider: "hammer"}
				now := time.Now()
				var allowed, deferred atomic.Int64
				var wg sync.WaitGroup
				errs := make(chan error, 64)
				for c := 0; c < 64; c++ {
					wg.Add(1)
					go func(s *Store) {
						defer wg.Done()
						for i := 0; i < 20; i++ {
							d, err := s.Admit(context.Background(), key, p, 1, false, now)
							if err != nil {
								errs <- err
								return
							}
							if d.Verdict == limiter.Allow {
								allowed.Add(1)
							} else {
								deferred.Add(1)
							}
						}
					}(rs[c%3])
				}
				wg.Wait()
				close(errs)
				for err := range errs {
					t.Fatal(err)
				}
				if got := allowed.Load(); got != tc.want {
					t.Fatalf("%d ALLOWs (and %d DEFERs), want exactly %d", got, deferred.Load(), tc.want)
				}
			})
		}
	})
}

// TestConcurrentReportsLoseNothing applies 64 reports at once through three
// replicas: every count is kept and the key moves to THROTTLED once.
func TestConcurrentReportsLoseNothing(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, addrs []string) {
		rs := replicas(t, addrs, 3, Options{})
		p := &limiter.Provider{Name: "reports", Limits: limiter.Limits{limiter.Minute: 10}, Machine: limiter.DefaultMachine()}
		key := limiter.Key{IP: "192.0.2.2", Provider: "reports"}
		now := time.Date(2026, 11, 27, 8, 0, 0, 0, time.UTC)
		var wg sync.WaitGroup
		var changed atomic.Int64
		for c := 0; c < 64; c++ {
			wg.Add(1)
			go func(s *Store) {
				defer wg.Done()
				var out limiter.Outcome
				_, err := s.Update(context.Background(), key, func(rec *limiter.Record) limiter.Change {
					var ch limiter.Change
					out, ch = limiter.Apply(rec, p, limiter.Report{Class: limiter.RateLimited, Rule: "r"}, now)
					return ch
				})
				if err != nil {
					t.Error(err)
				}
				if out.Changed {
					changed.Add(1)
				}
			}(rs[c%3])
		}
		wg.Wait()
		rec, _, err := rs[0].Get(context.Background(), key)
		if err != nil {
			t.Fatal(err)
		}
		if got := rec.Rep.Counts[limiter.RateLimited]; got != 64 {
			t.Errorf("RATE_LIMITED count %d, want 64", got)
		}
		if rec.Rep.State != limiter.Throttled || len(rec.Rep.History) != 1 || changed.Load() != 1 {
			t.Errorf("state %v, %d transitions in history, %d reported changes; want THROTTLED, 1, 1", rec.Rep.State, len(rec.Rep.History), changed.Load())
		}
		if rec.Rep.Version != 64 {
			t.Errorf("version %d, want 64", rec.Rep.Version)
		}
	})
}

// TestBlockSeenByOtherReplicas: replica A holds a key; B defers it (and
// then from its cache, without a round trip); A releases; B allows soon
// after, told by the invalidation message.
func TestBlockSeenByOtherReplicas(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, addrs []string) {
		rs := replicas(t, addrs, 2, Options{})
		a, b := rs[0], rs[1]
		rt := countRoundTrips(b)
		ctx := context.Background()
		p := &limiter.Provider{Name: "held", Limits: limiter.Limits{limiter.Minute: 1000}, Machine: limiter.DefaultMachine()}
		key := limiter.Key{IP: "192.0.2.3", Provider: "held"}
		if d, err := b.Admit(ctx, key, p, 1, false, time.Now()); err != nil || d.Verdict != limiter.Allow {
			t.Fatalf("before the hold: %+v, %v", d, err)
		}
		if _, err := a.Update(ctx, key, func(rec *limiter.Record) limiter.Change {
			return limiter.Hold(rec, p, time.Time{}, "incident", "alice", time.Now())
		}); err != nil {
			t.Fatal(err)
		}
		d, err := b.Admit(ctx, key, p, 1, false, time.Now())
		if err != nil || d.Verdict != limiter.Defer || d.Reason != limiter.ReasonHeld {
			t.Fatalf("B after A's hold: %+v, %v; want DEFER HELD", d, err)
		}
		before := rt.n.Load()
		for i := 0; i < 10; i++ {
			if d, _ := b.Admit(ctx, key, p, 1, false, time.Now()); d.Reason != limiter.ReasonHeld {
				t.Fatalf("cached: %+v", d)
			}
		}
		if n := rt.n.Load() - before; n != 0 {
			t.Errorf("a cached block cost %d round trips", n)
		}
		if _, err := a.Update(ctx, key, func(rec *limiter.Record) limiter.Change {
			return limiter.Release(rec, p, "fixed", "alice", time.Now())
		}); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		for {
			d, err := b.Admit(ctx, key, p, 1, false, time.Now())
			if err == nil && d.Verdict == limiter.Allow {
				t.Logf("B allowed %v after A's release", time.Since(start))
				break
			}
			if time.Since(start) > time.Second {
				t.Fatalf("B still defers 1s after A's release: %+v, %v", d, err)
			}
			time.Sleep(time.Millisecond)
		}
	})
}

// TestAdmitBatch pipelines checks of many keys: one round trip per shard.
func TestAdmitBatch(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, addrs []string) {
		s := open(t, addrs, Options{UseCallerClock: true})
		rt := countRoundTrips(s)
		p := &limiter.Provider{Name: "batch", Limits: limiter.Limits{limiter.Minute: 2}, Machine: limiter.DefaultMachine()}
		now := time.Date(2026, 11, 27, 8, 0, 0, 0, time.UTC)
		var items []AdmitItem
		for i := 0; i < 50; i++ {
			k := limiter.Key{IP: fmt.Sprintf("192.0.2.%d", i%25), Provider: "batch"}
			items = append(items, AdmitItem{Key: k, Provider: p, Count: 1, Now: now})
		}
		items = append(items, AdmitItem{Key: items[0].Key, Provider: p, Count: 1, Now: now}) // a third for key 0
		ds, err := s.AdmitBatch(context.Background(), items)
		if err != nil {
			t.Fatal(err)
		}
		for i, d := range ds {
			want := limiter.Allow
			if i == 50 {
				want = limiter.Defer
			}
			if d.Verdict != want {
				t.Errorf("item %d: %v, want %v", i, d.Verdict, want)
			}
		}
		shards := int64(1)
		if s.Cluster() {
			shards = 3
		}
		if n := rt.n.Load(); n > shards {
			t.Errorf("%d round trips for a batch of %d, want at most %d", n, len(items), shards)
		}
	})
}

// TestRedisKilledMidRun: with Redis gone or frozen, calls fail within their
// deadline with ErrUnavailable; when it returns on the same port, calls
// succeed again without a restart of the store.
func TestRedisKilledMidRun(t *testing.T) {
	t.Parallel()
	srv, err := startRedis("")
	if err != nil {
		missing(t, fmt.Sprintf("cannot start redis-server: %v", err))
	}
	t.Cleanup(func() { srv.stop() })
	s := open(t, []string{srv.addr}, Options{Timeout: 200 * time.Millisecond})
	p := &limiter.Provider{Name: "fault", Limits: limiter.Limits{limiter.Minute: 1000}, Machine: limiter.DefaultMachine()}
	key := limiter.Key{IP: "192.0.2.4", Provider: "fault"}
	admit := func() (time.Duration, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err := s.Admit(ctx, key, p, 1, false, time.Now())
		return time.Since(start), err
	}
	if _, err := admit(); err != nil {
		t.Fatal(err)
	}

	// Frozen (SIGSTOP): the call times out.
	srv.cmd.Process.Signal(sigStop)
	took, err := admit()
	srv.cmd.Process.Signal(sigCont)
	if !errors.Is(err, limiter.ErrUnavailable) || took > time.Second {
		t.Fatalf("frozen Redis: %v after %v, want ErrUnavailable within the deadline", err, took)
	}
	if err := s.Ping(context.Background()); err != nil {
		t.Fatalf("ping after thaw: %v", err)
	}

	// Killed: the calls fail fast.
	srv.stop()
	for i := 0; i < 3; i++ {
		took, err := admit()
		if !errors.Is(err, limiter.ErrUnavailable) || took > time.Second {
			t.Fatalf("killed Redis: %v after %v, want ErrUnavailable within the deadline", err, took)
		}
	}
	if err := s.Ping(context.Background()); !errors.Is(err, limiter.ErrUnavailable) {
		t.Fatalf("ping of a killed Redis: %v", err)
	}

	// Back on the same port (empty: no persistence in this test, so the
	// script cache is empty too).
	srv2, err := startRedis(srv.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv2.stop() })
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err := admit()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no recovery 5s after Redis returned: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// And a batch finds the script again after the restart's NOSCRIPT.
	if _, err := s.AdmitBatch(context.Background(), []AdmitItem{{Key: key, Provider: p, Now: time.Now()}}); err != nil {
		t.Fatalf("batch after restart: %v", err)
	}
}
