// Package storetest is the conformance suite of [limiter.Store]: every store
// (memory, embedded, Redis) runs [Run] unchanged and must pass it.
//
// The suite speaks to a store only through the Store interface, at fixed
// instants passed as now, so it is deterministic. A store with its own
// clock (Redis) must let its test inject one that follows the now of each
// call. Subtests run in parallel; each opens its own store and uses its own
// keys (the provider name is derived from the subtest's name), so stores that
// share one backend between the stores they open pass as well.
package storetest

import (
	"fmt"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/sendgate/sendgate/limiter"
)

// Run runs the conformance suite against the stores open returns. open must
// return a new, usable store each time it is called; Run closes every store
// it opened when the subtest that opened it ends.
func Run(t *testing.T, open func(t *testing.T) limiter.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s limiter.Store)
	}{
		{"AllowTakesFromEveryTier", testAllowTakesFromEveryTier},
		{"AllOrNothing", testAllOrNothing},
		{"ExactRetryAfter", testExactRetryAfter},
		{"DryRunTakesNothing", testDryRunTakesNothing},
		{"RefundNeverAboveCapacity", testRefundNeverAboveCapacity},
		{"ClockBackwardsMintsNothing", testClockBackwardsMintsNothing},
		{"CalendarDayResetsAtMidnight", testCalendarDayResetsAtMidnight},
		{"UpdateTransitionedPersistsRep", testUpdateTransitionedPersistsRep},
		{"UpdateClearedForgetsUse", testUpdateClearedForgetsUse},
		{"UpdateUnchangedWritesNothing", testUpdateUnchangedWritesNothing},
		{"ConcurrentAdmitNeverOverAdmits", testConcurrentAdmit},
		{"ConcurrentUpdatesLoseNothing", testConcurrentUpdates},
		{"ListPagination", testListPagination},
		{"GetUnknownKey", testGetUnknownKey},
		{"GetReturnsCopies", testGetReturnsCopies},
		{"BlockedDefersThenProbes", testBlockedDefersThenProbes},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := open(t)
			t.Cleanup(func() {
				if err := s.Close(); err != nil {
					t.Errorf("close: %v", err)
				}
			})
			tc.fn(t, s)
		})
	}
}

// base is the suite's fixed instant: 08:00 UTC, 16:00 in Beijing.
func base() time.Time { return time.Date(2026, 11, 27, 8, 0, 0, 0, time.UTC) }

// providerName is a provider name of the test's own, so that its keys are
// its own even in a backend shared with other tests.
func providerName(t *testing.T) string { return "storetest/" + t.Name() }

// provider returns a valid provider of the test's own with the given
// limits and the default state machine.
func provider(t *testing.T, limits limiter.Limits) *limiter.Provider {
	t.Helper()
	p := &limiter.Provider{Name: providerName(t), Limits: limits, Machine: limiter.DefaultMachine()}
	if err := p.Validate(); err != nil {
		t.Fatalf("test provider: %v", err)
	}
	return p
}

// op is what a step does.
type op uint8

const (
	admit  op = iota // Admit, taking on ALLOW
	dry              // Admit as a dry run
	refund           // Refund
)

func (o op) String() string {
	switch o {
	case admit:
		return "admit"
	case dry:
		return "dry-run"
	case refund:
		return "refund"
	}
	return fmt.Sprintf("op(%d)", uint8(o))
}

// step is one call on a key and what it must answer.
type step struct {
	at      time.Duration // after base()
	op      op
	count   uint32
	verdict limiter.Verdict // admit and dry only
	reason  limiter.Reason
	// retry is the exact retry_after of a DEFER; zero accepts any positive
	// one. An ALLOW must always have none.
	retry time.Duration
	// limiting is the name of the tier that must limit a RATE_LIMITED
	// DEFER; "" does not check.
	limiting string
	// remain is every applicable tier's Remaining after the step, in tier
	// order; nil does not check.
	remain []uint64
}

// runSteps runs steps in order on key and checks each answer.
func runSteps(t *testing.T, s limiter.Store, key limiter.Key, p *limiter.Provider, steps []step) {
	t.Helper()
	t0 := base()
	for i, st := range steps {
		now := t0.Add(st.at)
		where := fmt.Sprintf("step %d (%v count %d at t0+%v)", i, st.op, st.count, st.at)
		if st.op == refund {
			if err := s.Refund(t.Context(), key, p, st.count, now); err != nil {
				t.Fatalf("%s: %v", where, err)
			}
			continue
		}
		d, err := s.Admit(t.Context(), key, p, st.count, st.op == dry, now)
		if err != nil {
			t.Fatalf("%s: %v", where, err)
		}
		checkDecision(t, where, d, st)
	}
}

func checkDecision(t *testing.T, where string, d limiter.Decision, st step) {
	t.Helper()
	if d.Verdict != st.verdict || d.Reason != st.reason {
		t.Fatalf("%s: got %v %q, want %v %q", where, d.Verdict, d.Reason, st.verdict, st.reason)
	}
	switch {
	case d.Verdict == limiter.Allow && d.RetryAfter != 0:
		t.Fatalf("%s: ALLOW with retry_after %v", where, d.RetryAfter)
	case d.Verdict == limiter.Defer && d.RetryAfter <= 0:
		t.Fatalf("%s: DEFER with retry_after %v", where, d.RetryAfter)
	case st.retry != 0 && d.RetryAfter != st.retry:
		t.Fatalf("%s: retry_after %v (%d ns), want %v", where, d.RetryAfter, int64(d.RetryAfter), st.retry)
	}
	if st.limiting != "" && d.Limiting.String() != st.limiting {
		t.Fatalf("%s: limited by the %v tier, want %s", where, d.Limiting, st.limiting)
	}
	if st.remain != nil {
		if got := remaining(d); !slices.Equal(got, st.remain) {
			t.Fatalf("%s: remaining %v, want %v", where, got, st.remain)
		}
	}
}

func remaining(d limiter.Decision) []uint64 {
	var r []uint64
	for _, ts := range d.Tiers.Slice() {
		r = append(r, ts.Remaining)
	}
	return r
}

func testAllowTakesFromEveryTier(t *testing.T, s limiter.Store) {
	p := provider(t, limiter.Limits{limiter.Second: 5, limiter.Minute: 20, limiter.Hour: 100, limiter.Day: 1000})
	key := limiter.Key{IP: "192.0.2.1", Provider: p.Name}
	runSteps(t, s, key, p, []step{
		{op: admit, count: 3, verdict: limiter.Allow, remain: []uint64{2, 17, 97, 997}},
		{op: admit, count: 2, verdict: limiter.Allow, remain: []uint64{0, 15, 95, 995}},
		{op: admit, count: 1, verdict: limiter.Defer, reason: limiter.ReasonRateLimited, retry: 200 * time.Millisecond, limiting: "second", remain: []uint64{0, 15, 95, 995}},
		{at: time.Second, op: admit, count: 5, verdict: limiter.Allow, remain: []uint64{0, 10, 90, 990}},
	})
	d, err := s.Admit(t.Context(), key, p, 1, true, base().Add(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	for i, ts := range d.Tiers.Slice() {
		if ts.Tier != limiter.Tier(i) || ts.Limit != p.Limits[i] || ts.Configured != p.Limits[i] {
			t.Errorf("tier %d: %v limit %d configured %d, want %v with limit %d", i, ts.Tier, ts.Limit, ts.Configured, limiter.Tier(i), p.Limits[i])
		}
	}
}

func testAllOrNothing(t *testing.T, s limiter.Store) {
	// Emission intervals: second 100ms, minute 5s, hour 36s.
	p := provider(t, limiter.Limits{limiter.Second: 10, limiter.Minute: 12, limiter.Hour: 100})
	key := limiter.Key{IP: "192.0.2.2", Provider: p.Name}
	runSteps(t, s, key, p, []step{
		{op: admit, count: 10, verdict: limiter.Allow, remain: []uint64{0, 2, 90}},
		// A second later the second tier is full, the minute tier holds
		// 2.2: three are refused, and nothing is taken from any tier.
		{at: time.Second, op: admit, count: 3, verdict: limiter.Defer, reason: limiter.ReasonRateLimited, retry: 4 * time.Second, limiting: "minute", remain: []uint64{10, 2, 90}},
		{at: time.Second, op: admit, count: 3, verdict: limiter.Defer, reason: limiter.ReasonRateLimited, retry: 4 * time.Second, limiting: "minute", remain: []uint64{10, 2, 90}},
		{at: time.Second, op: admit, count: 2, verdict: limiter.Allow, remain: []uint64{8, 0, 88}},
		// The second tier short alone takes nothing from the others either.
		{at: time.Second, op: admit, count: 9, verdict: limiter.Defer, reason: limiter.ReasonRateLimited, limiting: "minute", remain: []uint64{8, 0, 88}},
		{at: 6 * time.Second, op: admit, count: 1, verdict: limiter.Allow, remain: []uint64{9, 0, 87}},
	})
	p2 := provider(t, limiter.Limits{limiter.Second: 2, limiter.Hour: 100})
	key2 := limiter.Key{IP: "192.0.2.3", Provider: p2.Name + "/2"}
	runSteps(t, s, key2, p2, []step{
		{op: admit, count: 2, verdict: limiter.Allow, remain: []uint64{0, 98}},
		{op: admit, count: 1, verdict: limiter.Defer, reason: limiter.ReasonRateLimited, retry: 500 * time.Millisecond, limiting: "second", remain: []uint64{0, 98}},
		{op: admit, count: 1, verdict: limiter.Defer, reason: limiter.ReasonRateLimited, retry: 500 * time.Millisecond, limiting: "second", remain: []uint64{0, 98}},
		{at: time.Second, op: admit, count: 2, verdict: limiter.Allow, remain: []uint64{0, 96}},
	})
}

func testExactRetryAfter(t *testing.T, s limiter.Store) {
	tests := []struct {
		name   string
		limits limiter.Limits
		fill   uint32        // taken at t0
		at     time.Duration // when the request comes
		count  uint32
		// want is the exact retry_after; zero for limits whose window does
		// not divide evenly, where it must lie within count nanoseconds
		// above the real-valued wait, real.
		want time.Duration
		real float64 // nanoseconds
	}{
		{name: "minute3", limits: limiter.Limits{limiter.Minute: 3}, fill: 3, count: 1, want: 20 * time.Second},
		{name: "second1000", limits: limiter.Limits{limiter.Second: 1000}, fill: 1000, count: 1, want: time.Millisecond},
		{name: "partial", limits: limiter.Limits{limiter.Minute: 3}, fill: 2, at: 5 * time.Second, count: 2, want: 15 * time.Second},
		{name: "two-tiers", limits: limiter.Limits{limiter.Second: 10, limiter.Minute: 12}, fill: 10, at: time.Second, count: 3, want: 4 * time.Second},
		{name: "minute7", limits: limiter.Limits{limiter.Minute: 7}, fill: 7, count: 1, real: 60e9 / 7.0},
		{name: "minute7x2", limits: limiter.Limits{limiter.Minute: 7}, fill: 7, count: 2, real: 2 * 60e9 / 7.0},
		{name: "hour7x2", limits: limiter.Limits{limiter.Hour: 7}, fill: 7, count: 2, real: 2 * 3600e9 / 7.0},
		{name: "day-rolling", limits: limiter.Limits{limiter.Day: 1000}, fill: 1000, count: 1, want: 86400 * time.Millisecond},
		{name: "day-rolling-later", limits: limiter.Limits{limiter.Hour: 1000, limiter.Day: 1000}, fill: 1000, at: time.Hour, count: 42, want: 28800 * time.Millisecond},
	}
	t0 := base()
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := provider(t, tc.limits)
			key := limiter.Key{IP: fmt.Sprintf("192.0.2.%d", 100+i), Provider: p.Name}
			d, err := s.Admit(t.Context(), key, p, tc.fill, false, t0)
			if err != nil || d.Verdict != limiter.Allow {
				t.Fatalf("filling: %v %v", d.Verdict, err)
			}
			now := t0.Add(tc.at)
			d, err = s.Admit(t.Context(), key, p, tc.count, false, now)
			if err != nil || d.Verdict != limiter.Defer || d.Reason != limiter.ReasonRateLimited {
				t.Fatalf("got %v %q %v, want a RATE_LIMITED DEFER", d.Verdict, d.Reason, err)
			}
			ra := d.RetryAfter
			switch {
			case tc.want != 0 && ra != tc.want:
				t.Errorf("retry_after %v (%d ns), want %v", ra, int64(ra), tc.want)
			case tc.want == 0 && (float64(ra) < tc.real || float64(ra) > tc.real+float64(tc.count)):
				t.Errorf("retry_after %d ns, want within %d ns above %.1f ns", int64(ra), tc.count, tc.real)
			}
			// One nanosecond early is still too early; exactly retry_after
			// later the same request is allowed.
			d, err = s.Admit(t.Context(), key, p, tc.count, false, now.Add(ra-1))
			if err != nil || d.Verdict != limiter.Defer {
				t.Errorf("retry_after %v minus 1ns later: got %v %v, want DEFER", ra, d.Verdict, err)
			}
			d, err = s.Admit(t.Context(), key, p, tc.count, false, now.Add(ra))
			if err != nil || d.Verdict != limiter.Allow {
				t.Errorf("retry_after %v later: got %v %q (retry_after %v) %v, want ALLOW", ra, d.Verdict, d.Reason, d.RetryAfter, err)
			}
		})
	}
}

func testDryRunTakesNothing(t *testing.T, s limiter.Store) {
	p := provider(t, limiter.Limits{limiter.Second: 5}) // 200ms per message
	key := limiter.Key{IP: "192.0.2.4", Provider: p.Name}
	runSteps(t, s, key, p, []step{
		{op: dry, count: 2, verdict: limiter.Allow, remain: []uint64{5}},
		{op: dry, count: 5, verdict: limiter.Allow, remain: []uint64{5}},
		{op: dry, count: 2, verdict: limiter.Allow, remain: []uint64{5}},
		{op: admit, count: 5, verdict: limiter.Allow, remain: []uint64{0}},
		{op: dry, count: 1, verdict: limiter.Defer, reason: limiter.ReasonRateLimited, retry: 200 * time.Millisecond, remain: []uint64{0}},
		{at: 200 * time.Millisecond, op: dry, count: 1, verdict: limiter.Allow, remain: []uint64{1}},
		{at: 200 * time.Millisecond, op: dry, count: 1, verdict: limiter.Allow, remain: []uint64{1}},
		{at: 200 * time.Millisecond, op: admit, count: 1, verdict: limiter.Allow, remain: []uint64{0}},
		{at: 200 * time.Millisecond, op: dry, count: 1, verdict: limiter.Defer, reason: limiter.ReasonRateLimited, retry: 200 * time.Millisecond},
	})
	// A dry run of a key the store has never seen stores nothing.
	fresh := limiter.Key{IP: "192.0.2.5", Provider: p.Name}
	if d, err := s.Admit(t.Context(), fresh, p, 3, true, base()); err != nil || d.Verdict != limiter.Allow {
		t.Fatalf("dry run of a new key: %v %v", d.Verdict, err)
	}
	if _, ok, err := s.Get(t.Context(), fresh); err != nil || ok {
		t.Fatalf("after a dry run of a new key: Get ok=%v err=%v, want nothing stored", ok, err)
	}
}

func testRefundNeverAboveCapacity(t *testing.T, s limiter.Store) {
	p := provider(t, limiter.Limits{limiter.Second: 10, limiter.Minute: 20})
	key := limiter.Key{IP: "192.0.2.6", Provider: p.Name}
	runSteps(t, s, key, p, []step{
		{op: admit, count: 8, verdict: limiter.Allow, remain: []uint64{2, 12}},
		{op: refund, count: 5},
		{op: dry, count: 1, verdict: limiter.Allow, remain: []uint64{7, 17}},
		{op: refund, count: 100},
		{op: dry, count: 1, verdict: limiter.Allow, remain: []uint64{10, 20}},
		{op: admit, count: 10, verdict: limiter.Allow, remain: []uint64{0, 10}},
		{op: admit, count: 1, verdict: limiter.Defer, reason: limiter.ReasonRateLimited, retry: 100 * time.Millisecond, limiting: "second"},
		{op: refund, count: 0}, // 0 means 1
		{op: dry, count: 1, verdict: limiter.Allow, remain: []uint64{1, 11}},
	})
	// A refund for a key the store does not know changes nothing.
	fresh := limiter.Key{IP: "192.0.2.7", Provider: p.Name}
	runSteps(t, s, fresh, p, []step{
		{op: refund, count: 3},
		{op: admit, count: 10, verdict: limiter.Allow, remain: []uint64{0, 10}},
		{op: admit, count: 1, verdict: limiter.Defer, reason: limiter.ReasonRateLimited, retry: 100 * time.Millisecond},
	})
}

func testClockBackwardsMintsNothing(t *testing.T, s limiter.Store) {
	p := provider(t, limiter.Limits{limiter.Second: 10}) // 100ms per message
	emptied := limiter.Key{IP: "192.0.2.8", Provider: p.Name}
	runSteps(t, s, emptied, p, []step{
		{at: 10 * time.Second, op: admit, count: 10, verdict: limiter.Allow, remain: []uint64{0}},
		{at: 0, op: admit, count: 1, verdict: limiter.Defer, reason: limiter.ReasonRateLimited, remain: []uint64{0}},
		{at: 5 * time.Second, op: admit, count: 1, verdict: limiter.Defer, reason: limiter.ReasonRateLimited, remain: []uint64{0}},
		{at: 10 * time.Second, op: admit, count: 1, verdict: limiter.Defer, reason: limiter.ReasonRateLimited, retry: 100 * time.Millisecond},
		{at: 10*time.Second + 100*time.Millisecond, op: admit, count: 1, verdict: limiter.Allow, remain: []uint64{0}},
	})
	// Whatever a store answers at an earlier instant (a GCRA store sees the
	// bucket as emptier there), coming back must not count as having waited
	// from there: in all, no more than the capacity is given out.
	halved := limiter.Key{IP: "192.0.2.9", Provider: p.Name}
	t0 := base()
	runSteps(t, s, halved, p, []step{{at: 10 * time.Second, op: admit, count: 5, verdict: limiter.Allow, remain: []uint64{5}}})
	given := 5
	for _, at := range []time.Duration{0, 5 * time.Second, 10 * time.Second} {
		for range 20 {
			d, err := s.Admit(t.Context(), halved, p, 1, false, t0.Add(at))
			if err != nil {
				t.Fatal(err)
			}
			if d.Verdict != limiter.Allow {
				break
			}
			given++
		}
	}
	if given > 10 {
		t.Fatalf("a clock that went back 10s and returned: %d messages given out of a capacity of 10", given)
	}
	runSteps(t, s, halved, p, []step{
		{at: 10 * time.Second, op: admit, count: 1, verdict: limiter.Defer, reason: limiter.ReasonRateLimited},
		{at: 11 * time.Second, op: admit, count: 10, verdict: limiter.Allow, remain: []uint64{0}},
	})
	// A refund at an earlier instant gives back no more than was taken.
	refunded := limiter.Key{IP: "192.0.2.10", Provider: p.Name}
	runSteps(t, s, refunded, p, []step{
		{at: 10 * time.Second, op: admit, count: 10, verdict: limiter.Allow, remain: []uint64{0}},
		{at: 0, op: refund, count: 2},
		{at: 10 * time.Second, op: dry, count: 1, verdict: limiter.Allow, remain: []uint64{2}},
		{at: 10 * time.Second, op: admit, count: 3, verdict: limiter.Defer, reason: limiter.ReasonRateLimited, retry: 100 * time.Millisecond},
	})
}

func testCalendarDayResetsAtMidnight(t *testing.T, s limiter.Store) {
	loc, err := time.LoadLocation("Asia/Shanghai")
	if err != nil {
		loc = time.FixedZone("CST", 8*60*60) // the same offsets, without tzdata
	}
	p := provider(t, limiter.Limits{limiter.Hour: 1000, limiter.Day: 5})
	p.CalendarDay, p.Location = true, loc
	key := limiter.Key{IP: "192.0.2.11", Provider: p.Name}
	// t0 is 16:00 in Beijing; the day ends at 16:00:00 UTC, t0+8h.
	runSteps(t, s, key, p, []step{
		{op: admit, count: 5, verdict: limiter.Allow, remain: []uint64{995, 0}},
		{at: time.Hour, op: admit, count: 1, verdict: limiter.Defer, reason: limiter.ReasonRateLimited, retry: 7 * time.Hour, limiting: "day", remain: []uint64{1000, 0}},
		{at: 8*time.Hour - time.Second, op: admit, count: 1, verdict: limiter.Defer, reason: limiter.ReasonRateLimited, retry: time.Second, limiting: "day"},
		{at: 8*time.Hour - 1, op: dry, count: 1, verdict: limiter.Defer, reason: limiter.ReasonRateLimited, retry: 1, limiting: "day"},
		{at: 8 * time.Hour, op: admit, count: 1, verdict: limiter.Allow, remain: []uint64{999, 4}},
		{at: 8 * time.Hour, op: admit, count: 4, verdict: limiter.Allow, remain: []uint64{995, 0}},
		{at: 8 * time.Hour, op: admit, count: 1, verdict: limiter.Defer, reason: limiter.ReasonRateLimited, retry: 24 * time.Hour, limiting: "day"},
	})
	d, err := s.Admit(t.Context(), key, p, 1, true, base().Add(8*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if day := d.Tiers.List[1]; day.Tier != limiter.Day || !day.Calendar {
		t.Errorf("day tier status %+v, want a calendar day tier", day)
	}
}

// held returns an Update function that puts a key on hold at at, as an
// operator would, recording it in the history.
func held(at time.Time, reason string) func(rec *limiter.Record) limiter.Change {
	return func(rec *limiter.Record) limiter.Change {
		tr := limiter.Transition{At: at, From: limiter.Healthy, To: limiter.Held, Reason: reason, Actor: "storetest"}
		rec.Rep.State, rec.Rep.Since, rec.Rep.Until, rec.Rep.Reason = limiter.Held, at, at.Add(time.Hour), reason
		rec.Rep.History = append([]limiter.Transition{tr}, rec.Rep.History...)
		rec.Rep.Counts[limiter.Delivered] += 2
		return limiter.Transitioned
	}
}

func testUpdateTransitionedPersistsRep(t *testing.T, s limiter.Store) {
	ctx, t0 := t.Context(), base()
	p := provider(t, limiter.Limits{limiter.Second: 5})
	key := limiter.Key{IP: "192.0.2.12", Provider: p.Name}
	runSteps(t, s, key, p, []step{{op: admit, count: 3, verdict: limiter.Allow, remain: []uint64{2}}})
	before, ok, err := s.Get(ctx, key)
	if err != nil || !ok {
		t.Fatalf("get after an ALLOW: ok=%v err=%v", ok, err)
	}

	got, err := s.Update(ctx, key, held(t0, "storetest hold"))
	if err != nil {
		t.Fatal(err)
	}
	want := limiter.Reputation{
		State: limiter.Held, Since: t0, Until: t0.Add(time.Hour), Reason: "storetest hold",
		History: []limiter.Transition{{At: t0, From: limiter.Healthy, To: limiter.Held, Reason: "storetest hold", Actor: "storetest"}},
		Version: 1,
	}
	want.Counts[limiter.Delivered] = 2
	if !equalRep(got.Rep, want) {
		t.Fatalf("Update returned Rep\n%+v\nwant\n%+v", got.Rep, want)
	}
	after, ok, err := s.Get(ctx, key)
	if err != nil || !ok {
		t.Fatalf("get after Update: ok=%v err=%v", ok, err)
	}
	if !equalRep(after.Rep, want) {
		t.Fatalf("Get returned Rep\n%+v\nwant\n%+v", after.Rep, want)
	}
	if !equalUse(after.Use, before.Use) {
		t.Fatalf("Update changed Use:\n%+v\nwas\n%+v", after.Use, before.Use)
	}
	// Admit sees the state Update wrote.
	runSteps(t, s, key, p, []step{{at: time.Second, op: admit, count: 1, verdict: limiter.Defer, reason: limiter.ReasonHeld, retry: time.Hour - time.Second}})

	// Touched persists too, one version later.
	got, err = s.Update(ctx, key, func(rec *limiter.Record) limiter.Change {
		rec.Rep.Counts[limiter.Delivered]++
		return limiter.Touched
	})
	if err != nil {
		t.Fatal(err)
	}
	want.Counts[limiter.Delivered], want.Version = 3, 2
	if after, _, err = s.Get(ctx, key); err != nil || !equalRep(got.Rep, want) || !equalRep(after.Rep, want) {
		t.Fatalf("after a Touched update: returned\n%+v\nstored\n%+v (%v)\nwant\n%+v", got.Rep, after.Rep, err, want)
	}
}

func testUpdateClearedForgetsUse(t *testing.T, s limiter.Store) {
	ctx, t0 := t.Context(), base()
	p := provider(t, limiter.Limits{limiter.Second: 5, limiter.Day: 100})
	key := limiter.Key{IP: "192.0.2.13", Provider: p.Name}
	runSteps(t, s, key, p, []step{
		{op: admit, count: 5, verdict: limiter.Allow, remain: []uint64{0, 95}},
		{op: admit, count: 1, verdict: limiter.Defer, reason: limiter.ReasonRateLimited},
	})
	if _, err := s.Update(ctx, key, func(rec *limiter.Record) limiter.Change {
		rec.Rep.State, rec.Rep.Since, rec.Rep.Until = limiter.Blocked, t0, t0.Add(time.Hour)
		rec.Rep.Strikes, rec.Rep.StrikeAt = 2, t0
		rec.Rep.Ceilings[limiter.Day] = 50
		return limiter.Transitioned
	}); err != nil {
		t.Fatal(err)
	}
	got, err := s.Update(ctx, key, func(rec *limiter.Record) limiter.Change {
		return limiter.Reset(rec, p, "storetest reset", "storetest", t0)
	})
	if err != nil {
		t.Fatal(err)
	}
	stored, ok, err := s.Get(ctx, key)
	if err != nil || !ok {
		t.Fatalf("get after a reset: ok=%v err=%v", ok, err)
	}
	for name, rec := range map[string]limiter.Record{"returned": got, "stored": stored} {
		rep := rec.Rep
		if rep.Version != 2 || rep.State != limiter.Healthy || rep.Strikes != 0 || rep.Ceilings != (limiter.Limits{}) || len(rep.History) != 1 {
			t.Errorf("%s Rep after a reset: %+v, want version 2, HEALTHY, no strikes or ceilings, one transition", name, rep)
		}
		if !equalUse(rec.Use, limiter.Usage{}) {
			t.Errorf("%s Use after a reset: %+v, want zero", name, rec.Use)
		}
	}
	runSteps(t, s, key, p, []step{{op: admit, count: 5, verdict: limiter.Allow, remain: []uint64{0, 95}}})
}

func testUpdateUnchangedWritesNothing(t *testing.T, s limiter.Store) {
	ctx, t0 := t.Context(), base()
	p := provider(t, limiter.Limits{limiter.Second: 5})
	unchanged := func(rec *limiter.Record) limiter.Change {
		rec.Rep.Reason = "not written"
		rec.Rep.Counts[limiter.Transient]++
		return limiter.Unchanged
	}

	fresh := limiter.Key{IP: "192.0.2.14", Provider: p.Name}
	got, err := s.Update(ctx, fresh, unchanged)
	if err != nil {
		t.Fatal(err)
	}
	if got.Rep.Version != 0 || got.Rep.Reason != "" {
		t.Errorf("Unchanged update of a new key returned %+v, want a zero record", got.Rep)
	}
	if _, ok, err := s.Get(ctx, fresh); err != nil || ok {
		t.Errorf("after an Unchanged update of a new key: Get ok=%v err=%v, want nothing stored", ok, err)
	}

	key := limiter.Key{IP: "192.0.2.15", Provider: p.Name}
	first, err := s.Update(ctx, key, held(t0, "first"))
	if err != nil {
		t.Fatal(err)
	}
	got, err = s.Update(ctx, key, unchanged)
	if err != nil {
		t.Fatal(err)
	}
	stored, _, err := s.Get(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	for name, rec := range map[string]limiter.Record{"returned": got, "stored": stored} {
		if !equalRep(rec.Rep, first.Rep) || rec.Rep.Version != 1 {
			t.Errorf("%s Rep after an Unchanged update:\n%+v\nwant\n%+v", name, rec.Rep, first.Rep)
		}
	}
}

func testConcurrentAdmit(t *testing.T, s limiter.Store) {
	const goroutines, attempts, capacity = 64, 4, 50
	p := provider(t, limiter.Limits{limiter.Hour: capacity})
	key := limiter.Key{IP: "192.0.2.16", Provider: p.Name}
	now := base()
	var (
		mu     sync.Mutex
		allows int
		errs   []error
		wg     sync.WaitGroup
	)
	for range goroutines {
		wg.Go(func() {
			n := 0
			for range attempts {
				d, err := s.Admit(t.Context(), key, p, 1, false, now)
				switch {
				case err != nil:
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				case d.Verdict == limiter.Allow:
					n++
				case d.Verdict != limiter.Defer || d.Reason != limiter.ReasonRateLimited || d.RetryAfter <= 0:
					mu.Lock()
					errs = append(errs, fmt.Errorf("got %v %q retry_after %v", d.Verdict, d.Reason, d.RetryAfter))
					mu.Unlock()
				}
			}
			mu.Lock()
			allows += n
			mu.Unlock()
		})
	}
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("%d failed calls, first: %v", len(errs), errs[0])
	}
	if allows != capacity {
		t.Fatalf("%d concurrent attempts on one key: %d ALLOWs, want exactly %d", goroutines*attempts, allows, capacity)
	}
	runSteps(t, s, key, p, []step{{op: dry, count: 1, verdict: limiter.Defer, reason: limiter.ReasonRateLimited, remain: []uint64{0}}})
}

func testConcurrentUpdates(t *testing.T, s limiter.Store) {
	const goroutines, updates = 64, 8
	key := limiter.Key{IP: "192.0.2.17", Provider: providerName(t)}
	var wg sync.WaitGroup
	errs := make(chan error, goroutines*updates)
	for range goroutines {
		wg.Go(func() {
			for range updates {
				_, err := s.Update(t.Context(), key, func(rec *limiter.Record) limiter.Change {
					rec.Rep.Counts[limiter.Delivered]++
					return limiter.Touched
				})
				if err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("update: %v", err)
	}
	rec, ok, err := s.Get(t.Context(), key)
	if err != nil || !ok {
		t.Fatalf("get: ok=%v err=%v", ok, err)
	}
	const n = goroutines * updates
	if rec.Rep.Version != n || rec.Rep.Counts[limiter.Delivered] != n {
		t.Fatalf("after %d concurrent updates: version %d, counter %d, want both %d", n, rec.Rep.Version, rec.Rep.Counts[limiter.Delivered], n)
	}
}

func testListPagination(t *testing.T, s limiter.Store) {
	ctx, t0 := t.Context(), base()
	pa := provider(t, limiter.Limits{limiter.Minute: 100})
	pb := *pa
	pb.Name = pa.Name + "/b"
	// IPs that are prefixes of one another, and IPv6 ones.
	var ips []string
	for i := range 24 {
		ips = append(ips, fmt.Sprintf("198.51.100.%d", i+1))
	}
	ips = append(ips, "2001:db8::1", "2001:db8::10", "2001:db8::1:0")
	want := map[limiter.Key]bool{} // key -> held
	for i, ip := range ips {
		ka := limiter.Key{IP: ip, Provider: pa.Name}
		if d, err := s.Admit(ctx, ka, pa, 1, false, t0); err != nil || d.Verdict != limiter.Allow {
			t.Fatalf("admit %v: %v %v", ka, d.Verdict, err)
		}
		want[ka] = false
		if i%3 == 0 {
			kb := limiter.Key{IP: ip, Provider: pb.Name}
			if _, err := s.Update(ctx, kb, held(t0, "listed")); err != nil {
				t.Fatalf("update %v: %v", kb, err)
			}
			want[kb] = true
		}
	}
	ours := func(k limiter.Key) bool { return k.Provider == pa.Name || k.Provider == pb.Name }

	// list pages through every key with the given page size and keep, and
	// returns how often each of our keys came back.
	list := func(limit int, keep func(limiter.Key, *limiter.Record) bool) map[limiter.Key]int {
		t.Helper()
		seen := map[limiter.Key]int{}
		cursor := ""
		for page := 0; ; page++ {
			if page > 1000 {
				t.Fatalf("page size %d: no end after %d pages", limit, page)
			}
			entries, next, err := s.List(ctx, cursor, limit, keep)
			if err != nil {
				t.Fatalf("list page %d (cursor %q): %v", page, cursor, err)
			}
			if len(entries) > limit {
				t.Fatalf("page size %d: page %d has %d entries", limit, page, len(entries))
			}
			for _, e := range entries {
				if keep != nil && !keep(e.Key, &e.Record) {
					t.Fatalf("page size %d: listed %v, which keep refuses", limit, e.Key)
				}
				if !ours(e.Key) {
					continue
				}
				seen[e.Key]++
				if h, ok := want[e.Key]; ok && h != (e.Record.Rep.State == limiter.Held) {
					t.Fatalf("listed %v with state %v", e.Key, e.Record.Rep.State)
				}
			}
			if next == "" {
				return seen
			}
			cursor = next
		}
	}
	check := func(name string, seen map[limiter.Key]int, wantKey func(limiter.Key) bool) {
		t.Helper()
		for k, n := range seen {
			if _, known := want[k]; !known || !wantKey(k) {
				t.Errorf("%s: listed %v, which it should not", name, k)
			} else if n != 1 {
				t.Errorf("%s: listed %v %d times", name, k, n)
			}
		}
		for k := range want {
			if wantKey(k) && seen[k] == 0 {
				t.Errorf("%s: %v missing", name, k)
			}
		}
	}
	oursKeep := func(k limiter.Key, _ *limiter.Record) bool { return ours(k) }
	heldKeep := func(k limiter.Key, rec *limiter.Record) bool { return ours(k) && rec.Rep.State == limiter.Held }
	all := func(limiter.Key) bool { return true }
	onlyHeld := func(k limiter.Key) bool { return want[k] }
	for _, limit := range []int{1, 2, 4, 7, 1000} {
		check(fmt.Sprintf("ours, page size %d", limit), list(limit, oursKeep), all)
		check(fmt.Sprintf("held, page size %d", limit), list(limit, heldKeep), onlyHeld)
	}
	check("no keep, page size 5", list(5, nil), all)
}

func testGetUnknownKey(t *testing.T, s limiter.Store) {
	rec, ok, err := s.Get(t.Context(), limiter.Key{IP: "192.0.2.18", Provider: providerName(t)})
	if err != nil || ok {
		t.Fatalf("Get of an unknown key: ok=%v err=%v, want ok=false and no error", ok, err)
	}
	if rec.Rep.Version != 0 || rec.Rep.State != limiter.StateUnspecified || len(rec.Rep.History) > 0 {
		t.Fatalf("Get of an unknown key returned %+v, want a zero record", rec)
	}
}

func testGetReturnsCopies(t *testing.T, s limiter.Store) {
	ctx, t0 := t.Context(), base()
	p := provider(t, limiter.Limits{limiter.Second: 5})
	key := limiter.Key{IP: "192.0.2.19", Provider: p.Name}
	runSteps(t, s, key, p, []step{{op: admit, count: 2, verdict: limiter.Allow}})
	updated, err := s.Update(ctx, key, func(rec *limiter.Record) limiter.Change {
		held(t0, "first")(rec)
		held(t0.Add(time.Minute), "second")(rec)
		rec.Rep.Triggers = append(rec.Rep.Triggers, limiter.TriggerCount{Rule: "storetest/rule", Start: t0, Hits: 1, Attempts: 2})
		return limiter.Transitioned
	})
	if err != nil {
		t.Fatal(err)
	}
	first, _, err := s.Get(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	snapshot := deepCopy(first)
	entries, _, err := s.List(ctx, "", 1000, func(k limiter.Key, _ *limiter.Record) bool { return k == key })
	if err != nil || len(entries) != 1 {
		t.Fatalf("list: %d entries, %v", len(entries), err)
	}
	for _, rec := range []*limiter.Record{&first, &updated, &entries[0].Record} {
		rec.Rep.History[0].Reason = "mutated"
		rec.Rep.History[1].To = limiter.Blocked
		rec.Rep.Triggers[0].Hits = 99
		rec.Rep.State = limiter.Blocked
		rec.Rep.Counts[limiter.Delivered] = 1000
		rec.Use.Buckets[limiter.Second].TAT = 1
		rec.Use.ProbeNext = t0
	}
	again, _, err := s.Get(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	if !equalRep(again.Rep, snapshot.Rep) || !equalUse(again.Use, snapshot.Use) {
		t.Fatalf("mutating returned records changed the store:\n%+v\nwant\n%+v", again, snapshot)
	}
}

func testBlockedDefersThenProbes(t *testing.T, s limiter.Store) {
	ctx, t0 := t.Context(), base()
	p := provider(t, limiter.Limits{limiter.Minute: 10, limiter.Hour: 100})
	p.Machine.Cooldowns = []limiter.Cooldown{{Duration: 10 * time.Minute}, {Duration: 2 * time.Hour}}
	cooldown, probe := p.Machine.Cooldowns[0].Duration, p.Machine.ProbeInterval
	key := limiter.Key{IP: "192.0.2.20", Provider: p.Name}
	// Sending at the minute tier's limit, so that the block is a rate block
	// with the first cooldown, not a reputation block.
	runSteps(t, s, key, p, []step{{op: admit, count: 10, verdict: limiter.Allow}})

	t1 := t0.Add(30 * time.Second)
	var out limiter.Outcome
	rec, err := s.Update(ctx, key, func(rec *limiter.Record) limiter.Change {
		var c limiter.Change
		out, c = limiter.Apply(rec, p, limiter.Report{
			Class: limiter.IPBlocked, Rule: "storetest/blocked", Reply: "550 Ip frequency limited",
			AttemptedAt: t0.Add(29 * time.Second),
		}, t1)
		return c
	})
	if err != nil {
		t.Fatal(err)
	}
	until := t1.Add(cooldown)
	if out.State != limiter.Blocked || !out.Changed || !out.Until.Equal(until) {
		t.Fatalf("IP_BLOCKED report: outcome %+v, want BLOCKED until %v", out, until)
	}
	stored, _, err := s.Get(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	for name, r := range map[string]limiter.Record{"returned": rec, "stored": stored} {
		if r.Rep.State != limiter.Blocked || !r.Rep.Until.Equal(until) || r.Rep.Strikes != 1 || r.Rep.Remediation || r.Rep.Version != 1 {
			t.Fatalf("%s Rep after the block: %+v, want BLOCKED until %v, one strike, version 1", name, r.Rep, until)
		}
	}

	at := t1.Sub(t0)
	runSteps(t, s, key, p, []step{
		{at: at, op: admit, count: 1, verdict: limiter.Defer, reason: limiter.ReasonBlocked, retry: cooldown},
		{at: at + cooldown/2, op: dry, count: 1, verdict: limiter.Defer, reason: limiter.ReasonBlocked, retry: cooldown / 2},
		{at: at + cooldown - 1, op: admit, count: 1, verdict: limiter.Defer, reason: limiter.ReasonBlocked},
	})
	d, err := s.Admit(ctx, key, p, 1, false, until)
	if err != nil || d.Verdict != limiter.Allow || !d.Probe || d.State != limiter.Probing {
		t.Fatalf("at the end of the cooldown: %v probe=%v state %v (%v), want a probe ALLOW while PROBING", d.Verdict, d.Probe, d.State, err)
	}
	d, err = s.Admit(ctx, key, p, 1, false, until)
	if err != nil || d.Verdict != limiter.Defer || d.Reason != limiter.ReasonProbing || d.RetryAfter <= 0 || d.RetryAfter > probe {
		t.Fatalf("a second probe at once: %v %q retry_after %v (%v), want a PROBING DEFER within %v", d.Verdict, d.Reason, d.RetryAfter, err, probe)
	}
	d, err = s.Admit(ctx, key, p, 1, false, until.Add(d.RetryAfter))
	if err != nil || d.Verdict != limiter.Allow || !d.Probe {
		t.Fatalf("at the next probe slot: %v probe=%v (%v), want a probe ALLOW", d.Verdict, d.Probe, err)
	}
}

// equalRep compares two reputations as a store may round-trip them: times
// by instant, empty and nil slices alike.
func equalRep(a, b limiter.Reputation) bool {
	return reflect.DeepEqual(normRep(a), normRep(b))
}

// equalUse compares two usages, times by instant.
func equalUse(a, b limiter.Usage) bool {
	return a.Buckets == b.Buckets && a.Sent == b.Sent && a.ProbeNext.Equal(b.ProbeNext)
}

func normTime(t time.Time) time.Time {
	if t.IsZero() {
		return time.Time{}
	}
	return t.Round(0).UTC()
}

func normRep(r limiter.Reputation) limiter.Reputation {
	r = deepCopy(limiter.Record{Rep: r}).Rep
	for _, t := range []*time.Time{&r.Since, &r.Until, &r.StrikeAt, &r.FactorAt, &r.DecreasedAt, &r.CeilingAt} {
		*t = normTime(*t)
	}
	for i := range r.History {
		r.History[i].At = normTime(r.History[i].At)
	}
	for i := range r.Triggers {
		r.Triggers[i].Start = normTime(r.Triggers[i].Start)
	}
	if len(r.History) == 0 {
		r.History = nil
	}
	if len(r.Triggers) == 0 {
		r.Triggers = nil
	}
	return r
}

// deepCopy returns a copy of r that shares no memory with it.
func deepCopy(r limiter.Record) limiter.Record {
	r.Rep.History = slices.Clone(r.Rep.History)
	r.Rep.Triggers = slices.Clone(r.Rep.Triggers)
	return r
}
