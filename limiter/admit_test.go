package limiter

import (
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 27, 8, 0, 0, 0, time.UTC)

func testProvider(limits Limits) *Provider {
	return &Provider{Name: "test", Limits: limits, Machine: DefaultMachine()}
}

func TestAdmitSteps(t *testing.T) {
	t.Parallel()
	p := testProvider(Limits{Minute: 3, Hour: 5})
	type step struct {
		at      time.Duration // after t0
		count   uint32
		dry     bool
		verdict Verdict
		reason  Reason
		retry   time.Duration // exact, when non-zero
		remain  [2]uint64     // minute, hour after the step
	}
	steps := []step{
		{at: 0, count: 1, verdict: Allow, remain: [2]uint64{2, 4}},
		{at: 0, count: 2, dry: true, verdict: Allow, remain: [2]uint64{2, 4}},
		{at: 0, count: 2, verdict: Allow, remain: [2]uint64{0, 2}},
		// minute empty: one token back after 20s
		{at: 0, count: 1, verdict: Defer, reason: ReasonRateLimited, retry: 20 * time.Second, remain: [2]uint64{0, 2}},
		{at: 20*time.Second - 1, count: 1, verdict: Defer, reason: ReasonRateLimited, retry: 1},
		{at: 20 * time.Second, count: 1, verdict: Allow, remain: [2]uint64{0, 1}},
		{at: time.Minute, count: 1, verdict: Allow, remain: [2]uint64{1, 0}},
		// hour now limits: all or nothing, and the minute tier keeps what it had
		{at: 2 * time.Minute, count: 1, verdict: Defer, reason: ReasonRateLimited},
	}
	var rec Record
	for i, s := range steps {
		d := Admit(&rec, p, s.count, s.dry, t0.Add(s.at))
		if d.Verdict != s.verdict || d.Reason != s.reason {
			t.Fatalf("step %d: got %v/%v, want %v/%v", i, d.Verdict, d.Reason, s.verdict, s.reason)
		}
		if s.retry != 0 && d.RetryAfter != s.retry {
			t.Fatalf("step %d: retry_after %v, want %v", i, d.RetryAfter, s.retry)
		}
		if d.Verdict == Defer && d.RetryAfter <= 0 {
			t.Fatalf("step %d: DEFER without retry_after", i)
		}
		if s.remain != [2]uint64{} || i == 0 {
			got := [2]uint64{d.Tiers.List[0].Remaining, d.Tiers.List[1].Remaining}
			if got != s.remain {
				t.Fatalf("step %d: remaining %v, want %v", i, got, s.remain)
			}
		}
	}
	if d := Admit(&rec, p, 1, true, t0.Add(2*time.Minute)); d.Tiers.List[0].Remaining != 3 {
		t.Fatalf("the hour tier's deferral took from the minute tier: %d left", d.Tiers.List[0].Remaining)
	}
}

func TestAdmitClockBackwardsMintsNothing(t *testing.T) {
	t.Parallel()
	p := testProvider(Limits{Minute: 2})
	var rec Record
	for i := 0; i < 2; i++ {
		if d := Admit(&rec, p, 1, false, t0); d.Verdict != Allow {
			t.Fatalf("take %d deferred", i)
		}
	}
	// The clock jumps an hour back, then returns to t0: nothing refilled.
	if d := Admit(&rec, p, 1, false, t0.Add(-time.Hour)); d.Verdict != Defer {
		t.Fatal("allowed after the clock went backwards")
	}
	if d := Admit(&rec, p, 1, false, t0); d.Verdict != Defer {
		t.Fatal("the backwards jump minted tokens")
	}
	if d := Admit(&rec, p, 1, false, t0.Add(30*time.Second)); d.Verdict != Allow {
		t.Fatal("refill after the jump is broken")
	}
}

func TestCalendarDay(t *testing.T) {
	t.Parallel()
	sh, err := time.LoadLocation("Asia/Shanghai")
	if err != nil {
		t.Skip("no time zone data:", err) // the config package embeds tzdata; the core does not
	}
	p := &Provider{Name: "tencent", Limits: Limits{Day: 2}, CalendarDay: true, Location: sh, Machine: DefaultMachine()}
	// Beijing midnight is 16:00 UTC.
	before := time.Date(2026, 11, 27, 15, 59, 59, 0, time.UTC)
	var rec Record
	Admit(&rec, p, 2, false, before.Add(-time.Hour))
	d := Admit(&rec, p, 1, false, before)
	if d.Verdict != Defer || d.RetryAfter != time.Second {
		t.Fatalf("before midnight: %v retry %v, want DEFER 1s", d.Verdict, d.RetryAfter)
	}
	if d := Admit(&rec, p, 2, false, before.Add(time.Second)); d.Verdict != Allow {
		t.Fatalf("after Beijing midnight: %v", d.Verdict)
	}
}

func TestRefundNeverAboveCapacity(t *testing.T) {
	t.Parallel()
	p := testProvider(Limits{Minute: 3})
	var rec Record
	Admit(&rec, p, 2, false, t0)
	Refund(&rec, p, 5, t0)
	if d := Admit(&rec, p, 3, true, t0); d.Verdict != Allow || d.Tiers.List[0].Remaining != 3 {
		t.Fatalf("after refund: %v remaining %d", d.Verdict, d.Tiers.List[0].Remaining)
	}
	if d := Admit(&rec, p, 4, true, t0); d.Verdict != Defer {
		t.Fatal("refund minted above capacity")
	}
}

func TestCheckCount(t *testing.T) {
	t.Parallel()
	p := testProvider(Limits{Minute: 30, Hour: 600})
	if err := p.CheckCount(30); err != nil {
		t.Fatal(err)
	}
	err := p.CheckCount(31)
	if err == nil || err.Error() != "count 31 exceeds the minute tier's capacity of 30" {
		t.Fatalf("got %v", err)
	}
}

func TestWindowRate(t *testing.T) {
	t.Parallel()
	win := int64(time.Minute)
	var w Window
	n := t0.UnixNano()
	w.add(n, win, 10)
	w.add(n+int64(30*time.Second), win, 10)
	if r := w.Rate(n+int64(30*time.Second), win); r != 20 {
		t.Fatalf("rate in window %v", r)
	}
	// Half way through the next window, half of the previous one counts.
	if r := w.Rate(n+int64(90*time.Second), win); r != 10 {
		t.Fatalf("sliding rate %v, want 10", r)
	}
	if r := w.Rate(n+int64(3*time.Minute), win); r != 0 {
		t.Fatalf("old rate %v", r)
	}
}

func BenchmarkAdmitCore(b *testing.B) {
	p := testProvider(Limits{Second: 1e6, Minute: 1e8, Hour: 1e9, Day: 1e10})
	var rec Record
	now := t0
	b.ReportAllocs()
	for b.Loop() {
		now = now.Add(time.Microsecond)
		Admit(&rec, p, 1, false, now)
	}
}

func TestBurstPacing(t *testing.T) {
	t.Parallel()
	p := testProvider(Limits{Minute: 3})
	p.Machine.Burst = 1
	var rec Record
	if d := Admit(&rec, p, 1, false, t0); d.Verdict != Allow {
		t.Fatal("first message deferred")
	}
	// One message every 20s: never more than 3 in any minute, fixed or sliding.
	d := Admit(&rec, p, 1, false, t0)
	if d.Verdict != Defer || d.RetryAfter != 20*time.Second {
		t.Fatalf("second message at once: %v %v, want DEFER 20s", d.Verdict, d.RetryAfter)
	}
	if d := Admit(&rec, p, 1, false, t0.Add(20*time.Second)); d.Verdict != Allow {
		t.Fatal("paced message deferred")
	}
	// Two messages at once are more than the burst: they pass when the tier is full.
	if d := Admit(&rec, p, 2, false, t0.Add(21*time.Second)); d.Verdict != Defer {
		t.Fatal("a count above the burst passed before the tier was full")
	}
	if d := Admit(&rec, p, 2, false, t0.Add(40*time.Second)); d.Verdict != Allow {
		t.Fatalf("a count above the burst deferred on a full tier: %v", d.RetryAfter)
	}
	p.Machine.Burst = -1
	if err := p.Machine.Validate(); err == nil {
		t.Fatal("negative burst accepted")
	}
}
