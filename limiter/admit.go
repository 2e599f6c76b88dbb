package limiter

import (
	"fmt"
	"math"
	"time"
)

// eps absorbs floating-point error in token levels, so that waiting exactly
// the retry_after a deferral named is always enough.
const eps = 1e-9

// minDay is shorter than any calendar day, daylight saving included.
const minDay = 20 * time.Hour

// holdRecheck is the retry_after of a hold without an end.
const holdRecheck = 5 * time.Minute

// CountError reports a count that no wait would ever let through: it is
// larger than a tier's configured capacity.
type CountError struct {
	Count uint32
	Tier  Tier
	Limit uint64
}

func (e *CountError) Error() string {
	return fmt.Sprintf("count %d exceeds the %s tier's capacity of %d", e.Count, e.Tier, e.Limit)
}

// CheckCount returns a *CountError when count (0 means 1) is larger than a
// configured tier limit of p.
func (p *Provider) CheckCount(count uint32) error {
	if count == 0 {
		count = 1
	}
	for t, l := range p.Limits {
		if l > 0 && uint64(count) > l {
			return &CountError{Count: count, Tier: Tier(t), Limit: l}
		}
	}
	return nil
}

// Admit decides whether count messages (0 means 1) may be sent for the key
// whose record is rec at now, and on ALLOW, unless dryRun, takes count from
// every tier. It is the whole admission step; a store calls it under the
// key's lock. It allocates nothing.
func Admit(rec *Record, p *Provider, count uint32, dryRun bool, now time.Time) (d Decision) {
	if count == 0 {
		count = 1
	}
	st := derive(rec, p, now)
	d.State, d.Factor = st.state, st.factor
	n := now.UnixNano()
	short := false
	// Each tier is read once into its gauge; the arithmetic below works on
	// the gauges, and the tiers' status is filled in once at the end.
	var gauges [NumTiers]tierGauge
	for t := Tier(0); t < NumTiers; t++ {
		limit := p.Limits[t]
		if limit == 0 {
			continue
		}
		eff, ceil := effectiveLimit(&rec.Rep, p, t, st.factor, now)
		gauges[t] = gauge(&rec.Use.Buckets[t], p, t, eff, n)
		if w := gauges[t].wait(count); w > 0 {
			short = true
			if w > d.RetryAfter {
				d.RetryAfter, d.Limiting = w, t
			}
		}
		d.Tiers.List[d.Tiers.N] = TierStatus{Tier: t, Limit: eff, Configured: limit, Ceiling: ceil, Window: tierWindows[t], Calendar: gauges[t].calendar}
		d.Tiers.N++
	}
	defer d.Tiers.fill(&gauges) // d is the named result: every return sees this

	switch st.state {
	case Blocked:
		d.Verdict, d.Reason, d.Until = Defer, ReasonBlocked, st.until
		d.RetryAfter = positive(st.until.Sub(now))
		return d
	case Held:
		d.Verdict, d.Reason, d.Until = Defer, ReasonHeld, st.until
		if st.until.IsZero() {
			d.RetryAfter = holdRecheck
		} else {
			d.RetryAfter = positive(st.until.Sub(now))
		}
		return d
	case Probing:
		slot := rec.Use.ProbeNext
		if slot.Before(st.since) {
			slot = st.since
		}
		if now.Before(slot) {
			d.Verdict, d.Reason, d.Until = Defer, ReasonProbing, slot
			d.RetryAfter = positive(slot.Sub(now))
			return d
		}
		d.Probe = true
	}
	if short {
		d.Verdict, d.Reason, d.Probe = Defer, ReasonRateLimited, false
		return d
	}
	d.RetryAfter = 0
	d.Verdict = Allow
	if dryRun {
		return d
	}
	for i := 0; i < d.Tiers.N; i++ {
		t := d.Tiers.List[i].Tier
		gauges[t].take(&rec.Use.Buckets[t], count)
		rec.Use.Sent[t].add(n, int64(tierWindows[t]), float64(count))
	}
	if d.Probe {
		rec.Use.ProbeNext = now.Add(probeInterval(&rec.Rep, &p.Machine))
	}
	return d
}

// fill sets each tier's Remaining and RetryAfter from its gauge.
func (ts *Tiers) fill(gauges *[NumTiers]tierGauge) {
	for i := 0; i < ts.N; i++ {
		s := &ts.List[i]
		g := &gauges[s.Tier]
		s.Remaining = g.remaining()
		s.RetryAfter = g.wait(1)
	}
}

// Refund gives count messages (0 means 1) back to every tier of rec, never
// above capacity, and frees the probe slot when the key is probing: the
// attempt was not made.
func Refund(rec *Record, p *Provider, count uint32, now time.Time) {
	if count == 0 {
		count = 1
	}
	st := derive(rec, p, now)
	n := now.UnixNano()
	for t := Tier(0); t < NumTiers; t++ {
		if p.Limits[t] == 0 {
			continue
		}
		// Give back at the configured limit's interval, the shortest a take
		// can have cost: the factor or a ceiling may have changed since the
		// take, and a refund must never return more than was taken.
		g := gauge(&rec.Use.Buckets[t], p, t, p.Limits[t], n)
		g.give(&rec.Use.Buckets[t], count)
		rec.Use.Sent[t].sub(n, int64(tierWindows[t]), float64(count))
	}
	if st.state == Probing && rec.Use.ProbeNext.After(now) {
		rec.Use.ProbeNext = now
	}
}

// tierGauge is one bucket read at an instant: the arithmetic of a tier in
// one place. Every value is an integer, in nanoseconds or messages.
type tierGauge struct {
	now      int64
	limit    uint64 // effective capacity, >= 1
	calendar bool
	// rolling tier
	burst    int64 // messages at once, 1..limit
	interval int64 // emission interval: ceil(window / (limit - burst + 1))
	debt     int64 // max(TAT, now) - now: time until full
	// calendar day tier
	day  int64 // start of the current day
	used uint64
	loc  *time.Location
}

func gauge(b *Bucket, p *Provider, t Tier, limit uint64, n int64) tierGauge {
	g := tierGauge{now: n, limit: limit}
	if t == Day && p.CalendarDay {
		g.calendar, g.loc = true, p.location()
		if b.TAT != 0 && n >= b.TAT && n-b.TAT < int64(minDay) {
			// Touched earlier today: no time zone arithmetic on the hot path.
			g.day, g.used = b.TAT, b.Used
			return g
		}
		g.day = dayStart(n, g.loc)
		if b.TAT >= g.day {
			// The same day (or a clock that went back into an earlier day
			// keeps the later day's count: nothing is minted).
			g.used = b.Used
		}
		return g
	}
	w := int64(tierWindows[t])
	g.burst = int64(p.Machine.Burst)
	paced := int64(limit) // a plain token bucket: refill limit per window
	if g.burst <= 0 || g.burst > int64(limit) {
		g.burst = int64(limit)
	} else {
		// Windowed: burst at once, the rest paced, limit per any window.
		paced = int64(limit) - g.burst + 1
	}
	g.interval = (w + paced - 1) / paced
	if b.TAT > n {
		g.debt = b.TAT - n
	}
	return g
}

// capacity is the debt a full burst leaves.
func (g *tierGauge) capacity() int64 { return g.burst * g.interval }

// remaining returns the whole messages available now.
func (g *tierGauge) remaining() uint64 {
	if g.calendar {
		if g.used >= g.limit {
			return 0
		}
		return g.limit - g.used
	}
	r := (g.capacity() - g.debt) / g.interval
	if r < 0 {
		return 0
	}
	return uint64(r)
}

// wait returns how long until count messages are available; 0 when they
// are now.
func (g *tierGauge) wait(count uint32) time.Duration {
	if g.calendar {
		if g.used+uint64(count) <= g.limit {
			return 0
		}
		return time.Duration(nextDayStart(g.now, g.loc) - g.now)
	}
	// A check of more messages than the burst (but no more than the limit)
	// passes once the tier is full.
	c := g.capacity()
	if int64(count) > g.burst && uint64(count) <= g.limit {
		c = int64(count) * g.interval
	}
	over := g.debt + int64(count)*g.interval - c
	if over <= 0 {
		return 0
	}
	return time.Duration(over)
}

// take consumes count messages from b, which must hold them, and keeps g
// in step with b.
func (g *tierGauge) take(b *Bucket, count uint32) {
	if g.calendar {
		g.used += uint64(count)
		b.TAT, b.Used = max(b.TAT, g.day), g.used
		return
	}
	g.debt += int64(count) * g.interval
	b.TAT = g.now + g.debt
}

// give returns count messages to b, never above capacity.
func (g *tierGauge) give(b *Bucket, count uint32) {
	if g.calendar {
		if g.used > uint64(count) {
			b.Used = g.used - uint64(count)
		} else {
			b.Used = 0
		}
		return
	}
	if d := g.debt - int64(count)*g.interval; d > 0 {
		b.TAT = g.now + d
	} else {
		b.TAT = 0
	}
}

// effectiveLimit returns the limit of tier t after the learned ceiling and
// the rate factor (at least 1), and the ceiling itself (0 when none).
func effectiveLimit(rep *Reputation, p *Provider, t Tier, factor float64, now time.Time) (eff, ceiling uint64) {
	limit := p.Limits[t]
	c := limit
	if ceiling = ceilingAt(rep, p, t, now); ceiling > 0 && ceiling < c {
		c = ceiling
	}
	eff = uint64(float64(c)*factor + eps)
	if eff < 1 {
		eff = 1
	}
	if eff > c {
		eff = c
	}
	return eff, ceiling
}

// ceilingAt returns tier t's learned ceiling at now, risen by
// CeilingRiseStep of itself per clean CeilingRiseInterval; 0 when there is
// none or it has risen back to the configured limit.
func ceilingAt(rep *Reputation, p *Provider, t Tier, now time.Time) uint64 {
	c := rep.Ceilings[t]
	if c == 0 {
		return 0
	}
	limit := p.Limits[t]
	steps := intervals(rep.CeilingAt, now, p.Machine.CeilingRiseInterval)
	v := float64(c) + float64(steps)*p.Machine.CeilingRiseStep*float64(c)
	if v >= float64(limit) {
		return 0
	}
	return uint64(v)
}

func positive(d time.Duration) time.Duration {
	if d < time.Millisecond {
		return time.Millisecond
	}
	return d
}

// dayStart returns the Unix nanoseconds of the midnight, in loc, that begins
// the day containing n.
func dayStart(n int64, loc *time.Location) int64 {
	tm := time.Unix(0, n).In(loc)
	y, m, d := tm.Date()
	return time.Date(y, m, d, 0, 0, 0, 0, loc).UnixNano()
}

// nextDayStart returns the Unix nanoseconds of the next midnight in loc.
func nextDayStart(n int64, loc *time.Location) int64 {
	tm := time.Unix(0, n).In(loc)
	y, m, d := tm.Date()
	return time.Date(y, m, d+1, 0, 0, 0, 0, loc).UnixNano()
}

// intervals returns how many whole intervals d fit between from and now; 0
// when now is not after from (a clock that went backwards).
func intervals(from, now time.Time, d time.Duration) int64 {
	if d <= 0 || !now.After(from) {
		return 0
	}
	return int64(now.Sub(from) / d)
}

// add counts v messages sent at n in a window of length win.
func (w *Window) add(n, win int64, v float64) {
	w.roll(n, win)
	w.Cur += v
}

// sub takes back v messages counted at n.
func (w *Window) sub(n, win int64, v float64) {
	w.roll(n, win)
	w.Cur = math.Max(0, w.Cur-v)
}

func (w *Window) roll(n, win int64) {
	if n >= w.Start && n-w.Start < win {
		return // the current window: no division on the hot path
	}
	start := n - n%win
	switch {
	case start == w.Start:
	case start == w.Start+win:
		w.Prev, w.Cur, w.Start = w.Cur, 0, start
	case start > w.Start:
		w.Prev, w.Cur, w.Start = 0, 0, start
	}
	// A clock that went backwards keeps counting in the current window.
}

// Rate estimates the messages sent in the last window of length win before
// n: the current window's count plus the part of the previous window that
// the sliding window still covers.
func (w Window) Rate(n, win int64) float64 {
	start := n - n%win
	frac := float64(n-start) / float64(win)
	switch {
	case start == w.Start:
		return w.Cur + w.Prev*(1-frac)
	case start == w.Start+win:
		return w.Cur * (1 - frac)
	case start < w.Start:
		return w.Cur + w.Prev
	}
	return 0
}
