package memstore

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/sendgate/sendgate/limiter"
	"github.com/sendgate/sendgate/limiter/storetest"
)

var t0 = time.Date(2026, 11, 27, 8, 0, 0, 0, time.UTC)

func TestConformance(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T) limiter.Store {
		return New(Options{SweepInterval: -1})
	})
}

// TestConformanceWithHooks runs the suite with every hook on and a sweeper
// scanning every millisecond (under a policy that knows no provider, so it
// evicts nothing), which must change nothing the suite can see.
func TestConformanceWithHooks(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T) limiter.Store {
		var versions atomic.Uint64
		s := New(Options{
			SweepInterval: time.Millisecond,
			Policy:        func(string) *limiter.Provider { return nil },
			TrackDirty:    true,
			OnChange: func(_ limiter.Key, rec *limiter.Record, _ limiter.Change) {
				versions.Add(rec.Rep.Version)
			},
		})
		t.Cleanup(func() { s.DrainDirty(func(limiter.Key, *limiter.Record) {}) })
		return s
	})
}

func provider(limits limiter.Limits) *limiter.Provider {
	return &limiter.Provider{Name: "test", Limits: limits, Machine: limiter.DefaultMachine()}
}

func mustAdmit(t *testing.T, s *Store, key limiter.Key, p *limiter.Provider, count uint32, now time.Time) {
	t.Helper()
	if d, err := s.Admit(context.Background(), key, p, count, false, now); err != nil || d.Verdict != limiter.Allow {
		t.Fatalf("admit %v count %d: %v %q %v", key, count, d.Verdict, d.Reason, err)
	}
}

func mustUpdate(t *testing.T, s *Store, key limiter.Key, fn func(*limiter.Record) limiter.Change) limiter.Record {
	t.Helper()
	rec, err := s.Update(context.Background(), key, fn)
	if err != nil {
		t.Fatalf("update %v: %v", key, err)
	}
	return rec
}

func TestSweep(t *testing.T) {
	t.Parallel()
	p := provider(limiter.Limits{limiter.Second: 10, limiter.Minute: 100}) // 100ms, 600ms per message
	sweepAt := t0.Add(time.Hour)
	tests := []struct {
		name    string
		setup   func(t *testing.T, s *Store, k limiter.Key)
		evicted bool
	}{
		{"used long ago", func(t *testing.T, s *Store, k limiter.Key) { mustAdmit(t, s, k, p, 10, t0) }, true},
		{"counted only", func(t *testing.T, s *Store, k limiter.Key) {
			mustUpdate(t, s, k, func(r *limiter.Record) limiter.Change { r.Rep.Counts[limiter.Delivered]++; return limiter.Touched })
		}, true},
		{"released long ago", func(t *testing.T, s *Store, k limiter.Key) {
			mustUpdate(t, s, k, func(r *limiter.Record) limiter.Change {
				return limiter.Release(r, p, "", "ops", sweepAt.Add(-25*time.Hour))
			})
		}, true},
		{"released an hour ago", func(t *testing.T, s *Store, k limiter.Key) {
			mustUpdate(t, s, k, func(r *limiter.Record) limiter.Change { return limiter.Release(r, p, "", "ops", t0) })
		}, false},
		{"partly used", func(t *testing.T, s *Store, k limiter.Key) {
			mustAdmit(t, s, k, p, 5, sweepAt.Add(-100*time.Millisecond))
		}, false},
		{"one message just now", func(t *testing.T, s *Store, k limiter.Key) { mustAdmit(t, s, k, p, 1, sweepAt.Add(-time.Millisecond)) }, false},
		{"strikes", func(t *testing.T, s *Store, k limiter.Key) {
			mustUpdate(t, s, k, func(r *limiter.Record) limiter.Change { r.Rep.Strikes, r.Rep.StrikeAt = 1, t0; return limiter.Touched })
		}, false},
		{"held", func(t *testing.T, s *Store, k limiter.Key) {
			mustUpdate(t, s, k, func(r *limiter.Record) limiter.Change { return limiter.Hold(r, p, time.Time{}, "", "ops", t0) })
		}, false},
		{"learned ceiling", func(t *testing.T, s *Store, k limiter.Key) {
			mustUpdate(t, s, k, func(r *limiter.Record) limiter.Change {
				r.Rep.Ceilings[limiter.Minute], r.Rep.CeilingAt = 50, t0
				return limiter.Touched
			})
		}, false},
		{"throttled", func(t *testing.T, s *Store, k limiter.Key) {
			mustUpdate(t, s, k, func(r *limiter.Record) limiter.Change {
				r.Rep.State, r.Rep.Since, r.Rep.Factor, r.Rep.FactorAt = limiter.Throttled, t0, 0.5, sweepAt.Add(-time.Minute)
				return limiter.Transitioned
			})
		}, false},
		{"blocked long ago, so probing", func(t *testing.T, s *Store, k limiter.Key) {
			mustUpdate(t, s, k, func(r *limiter.Record) limiter.Change {
				_, c := limiter.Apply(r, p, limiter.Report{Class: limiter.IPBlocked}, t0)
				return c
			})
		}, false},
		{"unknown provider", func(t *testing.T, s *Store, k limiter.Key) {
			mustAdmit(t, s, limiter.Key{IP: k.IP, Provider: "unknown"}, p, 1, t0)
		}, false},
	}
	s := New(Options{SweepInterval: -1, Policy: func(name string) *limiter.Provider {
		if name == "unknown" {
			return nil
		}
		return p
	}})
	defer s.Close()
	keys := make([]limiter.Key, len(tests))
	for i, tc := range tests {
		keys[i] = limiter.Key{IP: fmt.Sprintf("192.0.2.%d", i+1), Provider: "test"}
		tc.setup(t, s, keys[i])
	}
	if s.Len() != len(tests) {
		t.Fatalf("Len %d, want %d", s.Len(), len(tests))
	}
	wantEvicted := 0
	for _, tc := range tests {
		if tc.evicted {
			wantEvicted++
		}
	}
	if n := s.Sweep(sweepAt); n != wantEvicted {
		t.Errorf("Sweep evicted %d, want %d", n, wantEvicted)
	}
	for i, tc := range tests {
		k := keys[i]
		if tc.name == "unknown provider" {
			k.Provider = "unknown"
		}
		_, ok, _ := s.Get(context.Background(), k)
		if ok == tc.evicted {
			t.Errorf("%s: stored=%v after Sweep, want evicted=%v", tc.name, ok, tc.evicted)
		}
	}
	if got, want := s.Len(), len(tests)-wantEvicted; got != want {
		t.Errorf("Len after Sweep %d, want %d", got, want)
	}
	if n := s.Sweep(sweepAt); n != 0 {
		t.Errorf("second Sweep evicted %d, want 0", n)
	}
	// An evicted key starts afresh.
	mustAdmit(t, s, keys[0], p, 10, sweepAt)

	s.SetPolicy(nil)
	if n := s.Sweep(sweepAt.Add(24 * time.Hour)); n != 0 {
		t.Errorf("Sweep without a policy evicted %d", n)
	}
	s.SetPolicy(func(string) *limiter.Provider { return p })
	if n := s.Sweep(sweepAt.Add(48 * time.Hour)); n == 0 {
		t.Errorf("Sweep two days later evicted nothing")
	}
}

func TestSweeper(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		p := provider(limiter.Limits{limiter.Minute: 2})
		s := New(Options{Policy: func(string) *limiter.Provider { return p }})
		defer s.Close()
		k := limiter.Key{IP: "192.0.2.1", Provider: "test"}
		mustAdmit(t, s, k, p, 2, time.Now()) // full again a minute later
		time.Sleep(DefaultSweepInterval - time.Nanosecond)
		synctest.Wait()
		if s.Len() != 1 {
			t.Fatalf("before the first sweep: Len %d, want 1", s.Len())
		}
		time.Sleep(time.Nanosecond) // the sweep at one minute: full now
		synctest.Wait()
		if s.Len() != 0 {
			t.Fatalf("after the first sweep: Len %d, want 0", s.Len())
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	})
}

func TestDirty(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	p := provider(limiter.Limits{limiter.Second: 2})
	k1 := limiter.Key{IP: "192.0.2.1", Provider: "test"}
	k2 := limiter.Key{IP: "192.0.2.2", Provider: "test"}
	k3 := limiter.Key{IP: "192.0.2.3", Provider: "test"}
	s := New(Options{SweepInterval: -1, TrackDirty: true, Policy: func(string) *limiter.Provider { return p }})
	defer s.Close()

	drain := func() map[limiter.Key]bool { // key -> still stored
		got := map[limiter.Key]bool{}
		s.DrainDirty(func(k limiter.Key, rec *limiter.Record) {
			if _, dup := got[k]; dup {
				t.Errorf("DrainDirty visited %v twice", k)
			}
			got[k] = rec != nil
		})
		return got
	}
	steps := []struct {
		name string
		do   func()
		want map[limiter.Key]bool
	}{
		{"nothing yet", func() {}, map[limiter.Key]bool{}},
		{"allows", func() {
			mustAdmit(t, s, k1, p, 1, t0)
			mustAdmit(t, s, k1, p, 1, t0)
			mustAdmit(t, s, k2, p, 1, t0)
			s.Admit(ctx, k3, p, 1, true, t0) // a dry run stores nothing
		}, map[limiter.Key]bool{k1: true, k2: true}},
		{"drained", func() {}, map[limiter.Key]bool{}},
		{"dry runs and deferrals", func() {
			s.Admit(ctx, k1, p, 1, true, t0)
			if d, _ := s.Admit(ctx, k1, p, 1, false, t0); d.Verdict != limiter.Defer {
				t.Fatalf("third message in a second: %v", d.Verdict)
			}
		}, map[limiter.Key]bool{}},
		{"refund", func() { s.Refund(ctx, k2, p, 1, t0) }, map[limiter.Key]bool{k2: true}},
		{"refund of an unknown key", func() { s.Refund(ctx, k3, p, 1, t0) }, map[limiter.Key]bool{}},
		{"touched and transitioned keep Use", func() {
			mustUpdate(t, s, k1, func(r *limiter.Record) limiter.Change { r.Rep.Counts[1]++; return limiter.Touched })
			mustUpdate(t, s, k2, func(r *limiter.Record) limiter.Change { return limiter.Hold(r, p, time.Time{}, "", "ops", t0) })
		}, map[limiter.Key]bool{}},
		{"cleared", func() {
			mustUpdate(t, s, k2, func(r *limiter.Record) limiter.Change { return limiter.Reset(r, p, "", "ops", t0) })
		}, map[limiter.Key]bool{k2: true}},
		{"evicted", func() {
			// k2's reset is a transition: its story is kept for a strike
			// decay period before the key counts as idle.
			if n := s.Sweep(t0.Add(25 * time.Hour)); n != 2 {
				t.Fatalf("Sweep evicted %d, want 2", n)
			}
		}, map[limiter.Key]bool{k1: false, k2: false}},
		{"evicted and back", func() {
			mustAdmit(t, s, k1, p, 1, t0.Add(25*time.Hour))
			s.Sweep(t0.Add(26 * time.Hour))
			mustAdmit(t, s, k1, p, 1, t0.Add(26*time.Hour))
		}, map[limiter.Key]bool{k1: true}},
	}
	for _, st := range steps {
		st.do()
		if got := drain(); !mapsEqual(got, st.want) {
			t.Fatalf("%s: dirty %v, want %v", st.name, got, st.want)
		}
	}

	off := New(Options{SweepInterval: -1})
	mustAdmit(t, off, k1, p, 1, t0)
	off.DrainDirty(func(k limiter.Key, _ *limiter.Record) { t.Errorf("DrainDirty without TrackDirty visited %v", k) })
}

func mapsEqual(a, b map[limiter.Key]bool) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func TestOnChange(t *testing.T) {
	t.Parallel()
	p := provider(limiter.Limits{limiter.Second: 2})
	type call struct {
		key     limiter.Key
		c       limiter.Change
		version uint64
		state   limiter.State
		useZero bool
	}
	var calls []call
	s := New(Options{SweepInterval: -1, OnChange: func(k limiter.Key, rec *limiter.Record, c limiter.Change) {
		calls = append(calls, call{k, c, rec.Rep.Version, rec.Rep.State, rec.Use == limiter.Usage{}})
	}})
	defer s.Close()
	k := limiter.Key{IP: "192.0.2.1", Provider: "test"}
	mustAdmit(t, s, k, p, 1, t0)
	mustUpdate(t, s, k, func(r *limiter.Record) limiter.Change { return limiter.Unchanged })
	mustUpdate(t, s, k, func(r *limiter.Record) limiter.Change { r.Rep.Counts[1]++; return limiter.Touched })
	mustUpdate(t, s, k, func(r *limiter.Record) limiter.Change { return limiter.Hold(r, p, time.Time{}, "", "ops", t0) })
	mustUpdate(t, s, k, func(r *limiter.Record) limiter.Change { return limiter.Reset(r, p, "", "ops", t0) })
	want := []call{
		{k, limiter.Touched, 1, limiter.StateUnspecified, false},
		{k, limiter.Transitioned, 2, limiter.Held, false},
		{k, limiter.Cleared, 3, limiter.Healthy, true},
	}
	if !slices.Equal(calls, want) {
		t.Fatalf("OnChange calls\n%+v\nwant\n%+v", calls, want)
	}
	if _, err := s.Update(context.Background(), k, func(*limiter.Record) limiter.Change { return 42 }); err == nil {
		t.Fatal("Update with an unknown Change succeeded")
	}
}

// TestListOrder checks what the suite leaves to each store: the memory
// store lists in the byte order of "ip|provider" and its cursor is the last
// key's string.
func TestListOrder(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := New(Options{SweepInterval: -1})
	defer s.Close()
	p := provider(limiter.Limits{limiter.Minute: 10})
	ips := []string{"10.0.0.1", "10.0.0.10", "10.0.0.100", "10.0.0.2", "2001:db8::1", "2001:db8::1:0", "2001:db8::a", "1.2.3.4"}
	provs := []string{"google", "tencent", "g", "tencent-x"}
	var want []string
	for _, ip := range ips {
		for _, pr := range provs {
			k := limiter.Key{IP: ip, Provider: pr}
			mustAdmit(t, s, k, p, 1, t0)
			want = append(want, k.String())
		}
	}
	slices.Sort(want)
	for _, limit := range []int{1, 3, 5, 0} {
		var got []string
		cursor := ""
		for {
			entries, next, err := s.List(ctx, cursor, limit, nil)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range entries {
				got = append(got, e.Key.String())
			}
			if next != "" && next != got[len(got)-1] {
				t.Fatalf("page size %d: next %q, want the last key %q", limit, next, got[len(got)-1])
			}
			if next == "" {
				break
			}
			cursor = next
		}
		if !slices.Equal(got, want) {
			t.Fatalf("page size %d: listed\n%q\nwant\n%q", limit, got, want)
		}
	}
	// A cursor need not be a stored key.
	entries, _, err := s.List(ctx, "10.0.0.2", 1, nil)
	if err != nil || len(entries) != 1 || entries[0].Key.String() != "10.0.0.2|g" {
		t.Fatalf("list after %q: %+v %v", "10.0.0.2", entries, err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, _, err := s.List(cctx, "", 1, nil); err == nil {
		t.Fatal("List with a cancelled context succeeded")
	}
}

func TestCompareKeys(t *testing.T) {
	t.Parallel()
	parts := []string{"", "1", "10", "1|", "|", "a", "a|b", "10.0.0.1", "10.0.0.1|x", "z", "~"}
	for _, a1 := range parts {
		for _, a2 := range parts {
			a := limiter.Key{IP: a1, Provider: a2}
			for _, b1 := range parts {
				for _, b2 := range parts {
					b := limiter.Key{IP: b1, Provider: b2}
					if got, want := compareKeys(a, b), strings.Compare(a.String(), b.String()); got != want {
						t.Fatalf("compareKeys(%q, %q) = %d, want %d", a, b, got, want)
					}
					if got, want := compareKey(a, b.String()), strings.Compare(a.String(), b.String()); got != want {
						t.Fatalf("compareKey(%q, %q) = %d, want %d", a, b.String(), got, want)
					}
				}
			}
			for _, s := range parts {
				if got, want := compareKey(a, s), strings.Compare(a.String(), s); got != want {
					t.Fatalf("compareKey(%q, %q) = %d, want %d", a, s, got, want)
				}
			}
		}
	}
}

func TestPutRange(t *testing.T) {
	t.Parallel()
	s := New(Options{SweepInterval: -1, TrackDirty: true})
	defer s.Close()
	want := map[limiter.Key]limiter.Record{}
	for i := range 100 {
		k := limiter.Key{IP: fmt.Sprintf("192.0.2.%d", i), Provider: "test"}
		var rec limiter.Record
		rec.Rep.State, rec.Rep.Version = limiter.Held, uint64(i)
		rec.Rep.History = []limiter.Transition{{At: t0, To: limiter.Held}}
		rec.Use.Buckets[limiter.Minute].TAT = int64(i)
		s.Put(k, rec)
		want[k] = rec
	}
	rec := want[limiter.Key{IP: "192.0.2.7", Provider: "test"}]
	rec.Rep.History[0].Reason = "changed after Put"
	got := map[limiter.Key]limiter.Record{}
	s.Range(func(k limiter.Key, rec *limiter.Record) bool {
		got[k] = *rec
		return true
	})
	if len(got) != len(want) {
		t.Fatalf("Range visited %d keys, want %d", len(got), len(want))
	}
	for k, w := range want {
		g := got[k]
		if g.Rep.Version != w.Rep.Version || g.Use != w.Use || len(g.Rep.History) != 1 || g.Rep.History[0].Reason != "" {
			t.Fatalf("%v: got %+v, want %+v (unchanged by the caller's later writes)", k, g, w)
		}
	}
	n := 0
	s.Range(func(limiter.Key, *limiter.Record) bool { n++; return n < 10 })
	if n != 10 {
		t.Fatalf("Range went on after false: %d calls", n)
	}
	s.DrainDirty(func(k limiter.Key, _ *limiter.Record) { t.Errorf("Put marked %v dirty", k) })
}

func TestAdmitAllocs(t *testing.T) {
	p := benchProvider()
	s := New(Options{SweepInterval: -1, TrackDirty: true, Policy: func(string) *limiter.Provider { return p }})
	defer s.Close()
	k := limiter.Key{IP: "203.0.113.7", Provider: "tencent"}
	ctx := context.Background()
	now := t0
	mustAdmit(t, s, k, p, 1, now)
	allocs := testing.AllocsPerRun(1000, func() {
		now = now.Add(time.Millisecond)
		if d, _ := s.Admit(ctx, k, p, 1, false, now); d.Verdict != limiter.Allow {
			t.Fatalf("DEFER in the allocation test")
		}
		s.Admit(ctx, k, p, 1, true, now)
		s.Refund(ctx, k, p, 1, now)
		s.Admit(ctx, k, p, 1, false, now)
	})
	if allocs != 0 {
		t.Fatalf("Admit and Refund of an existing key: %v allocations, want 0", allocs)
	}
}

// benchProvider has all four tiers, each with an emission interval of 1ms,
// and a calendar day in Beijing, like Tencent's.
func benchProvider() *limiter.Provider {
	loc, err := time.LoadLocation("Asia/Shanghai")
	if err != nil {
		loc = time.FixedZone("CST", 8*60*60)
	}
	return &limiter.Provider{
		Name:        "tencent",
		Limits:      limiter.Limits{limiter.Second: 1000, limiter.Minute: 60_000, limiter.Hour: 3_600_000, limiter.Day: 86_400_000},
		CalendarDay: true,
		Location:    loc,
		Machine:     limiter.DefaultMachine(),
	}
}

// BenchmarkAdmit measures the hot path on keys that exist. Run it with
// -cpu 1,2 -benchmem: "existing" is one key, the clock advancing by one
// emission interval per call, so every call is an ALLOW that takes from all
// four tiers; "parallel" spreads goroutines over many keys and shards;
// "core-only" is limiter.Admit on a record without the store.
func BenchmarkAdmit(b *testing.B) {
	p := benchProvider()
	ctx := context.Background()
	b.Run("core-only", func(b *testing.B) { // the arithmetic alone, for comparison
		var rec limiter.Record
		b.ReportAllocs()
		now := t0
		for b.Loop() {
			now = now.Add(time.Millisecond)
			if d := limiter.Admit(&rec, p, 1, false, now); d.Verdict != limiter.Allow {
				b.Fatal("DEFER")
			}
		}
	})
	b.Run("existing", func(b *testing.B) {
		s := New(Options{SweepInterval: -1})
		defer s.Close()
		k := limiter.Key{IP: "203.0.113.7", Provider: "tencent"}
		s.Admit(ctx, k, p, 1, false, t0)
		b.ReportAllocs()
		now := t0
		for b.Loop() {
			now = now.Add(time.Millisecond)
			if d, _ := s.Admit(ctx, k, p, 1, false, now); d.Verdict != limiter.Allow {
				b.Fatal("DEFER")
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		s := New(Options{SweepInterval: -1})
		defer s.Close()
		const n = 4096
		keys := make([]limiter.Key, n)
		for i := range keys {
			keys[i] = limiter.Key{IP: fmt.Sprintf("203.0.%d.%d", i/256, i%256), Provider: "tencent"}
			s.Admit(ctx, keys[i], p, 1, false, t0)
		}
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			i := rand.IntN(n)
			now := t0
			for pb.Next() {
				now = now.Add(time.Millisecond)
				s.Admit(ctx, keys[i%n], p, 1, false, now)
				i++
			}
		})
	})
}
