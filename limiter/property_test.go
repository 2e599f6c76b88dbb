package limiter

import (
	"testing"
	"time"

	"pgregory.net/rapid"
)

// TestInvariants drives one key with random sequences of checks, reports
// and operator actions at random, increasing instants, and asserts what must
// always hold. (Clocks that jump backwards are covered by their own test.)
func TestInvariants(t *testing.T) {
	t.Parallel()
	rapid.Check(t, func(rt *rapid.T) {
		p := testProvider(Limits{
			Second: rapid.Uint64Range(0, 5).Draw(rt, "second"),
			Minute: rapid.Uint64Range(1, 40).Draw(rt, "minute"),
			Hour:   rapid.Uint64Range(0, 300).Draw(rt, "hour"),
		})
		p.Machine.RemediationShare = rapid.SampledFrom([]float64{0, 0.05}).Draw(rt, "remediation")
		p.Machine.Burst = rapid.IntRange(0, 3).Draw(rt, "burst")
		maxCount := 3
		if p.Machine.Burst > 0 {
			maxCount = p.Machine.Burst
		}
		var rec Record
		now := t0
		type take struct {
			at time.Time
			n  uint64
		}
		var allowed []take
		steps := rapid.IntRange(1, 150).Draw(rt, "steps")
		for i := 0; i < steps; i++ {
			step := rapid.SampledFrom([]time.Duration{0, time.Millisecond, time.Second, 7 * time.Second, time.Minute, 11 * time.Minute, time.Hour}).Draw(rt, "dt")
			now = now.Add(step)
			switch rapid.IntRange(0, 9).Draw(rt, "op") {
			case 0, 1, 2, 3, 4:
				count := uint32(rapid.IntRange(1, maxCount).Draw(rt, "count"))
				before := derive(&rec, p, now).state
				d := Admit(&rec, p, count, false, now)
				if d.Verdict == Defer && d.RetryAfter <= 0 {
					rt.Fatalf("DEFER without retry_after: %+v", d)
				}
				if d.Verdict == Allow && (before == Blocked || before == Held) {
					rt.Fatalf("ALLOW while %v", before)
				}
				if d.Verdict == Allow {
					allowed = append(allowed, take{now, uint64(count)})
				}
				if d.Factor < p.Machine.FactorFloor-eps || d.Factor > 1+eps {
					rt.Fatalf("factor %v out of [floor, 1]", d.Factor)
				}
			case 5, 6, 7:
				class := rapid.SampledFrom([]Class{Delivered, RateLimited, IPBlocked, ConnectionLimited, RecipientFailed, Transient}).Draw(rt, "class")
				stale := rapid.Bool().Draw(rt, "stale")
				r := Report{Class: class}
				if stale && !rec.Rep.Since.IsZero() {
					r.AttemptedAt = rec.Rep.Since.Add(-time.Nanosecond)
				}
				// What the key would look like after time alone.
				c := rec
				c.Rep.History = append([]Transition(nil), rec.Rep.History...)
				materialize(&c, p, now, nil)
				beforeState, beforeStrikes, beforeFactor := c.Rep.State, c.Rep.Strikes, derive(&c, p, now).factor
				afterDayEnd := probingSinceMidnight(&c.Rep, p)
				out, _ := Apply(&rec, p, r, now)
				if out.Stale && (out.Changed || rec.Rep.Strikes != beforeStrikes || rec.Rep.State != beforeState || derive(&rec, p, now).factor < beforeFactor-eps) {
					rt.Fatalf("a stale %v report escalated: %v -> %v, strikes %d -> %d", class, beforeState, rec.Rep.State, beforeStrikes, rec.Rep.Strikes)
				}
				// The ladder (rate blocks; a reputation block always takes the
				// longest rung) never shrinks as strikes grow: at the same
				// instant, one strike less never waits longer.
				if out.Changed && out.Transition.To == Blocked && !rec.Rep.Remediation && rec.Rep.Strikes > 1 {
					// A probe refused at the midnight a day-end cooldown ended
					// waits the rungs' least durations: compare like with like.
					lower := cooldownEnd(&p.Machine, rec.Rep.Strikes-1, p.location(), now, !afterDayEnd)
					if out.Until.Before(lower) {
						rt.Fatalf("cooldown until %v at %d strikes is shorter than %v at %d", out.Until, rec.Rep.Strikes, lower, rec.Rep.Strikes-1)
					}
				}
				if !out.Until.IsZero() && out.State == Blocked && out.Until.Before(now) {
					rt.Fatalf("blocked until the past: %v", out.Until)
				}
			case 8:
				// Refund only what was taken, as an honest mailer does.
				if len(allowed) > 0 && allowed[len(allowed)-1].n > 0 {
					Refund(&rec, p, 1, now)
					allowed[len(allowed)-1].n--
				}
			case 9:
				switch rapid.IntRange(0, 2).Draw(rt, "admin") {
				case 0:
					Hold(&rec, p, now.Add(time.Hour), "", "op", now)
				case 1:
					Release(&rec, p, "", "op", now)
				case 2:
					Reset(&rec, p, "", "op", now)
					rec.Use = Usage{}
					allowed = nil
				}
			}
		}
		// No tier ever admitted more than its capacity plus its refill: over
		// any span [a, b] of ALLOWs, at most limit + span/interval messages.
		for t := Tier(0); t < NumTiers; t++ {
			limit := p.Limits[t]
			if limit == 0 {
				continue
			}
			interval := (int64(tierWindows[t]) + int64(limit) - 1) / int64(limit)
			if b := uint64(p.Machine.Burst); b > 0 && b <= limit {
				// Windowed pacing: no window of the tier's length holds
				// more than its limit.
				w := tierWindows[t]
				for i := range allowed {
					var sum uint64
					for _, x := range allowed[i:] {
						if x.at.Sub(allowed[i].at) < w {
							sum += x.n
						}
					}
					if sum > limit {
						rt.Fatalf("%s tier with burst %d admitted %d within one window from %v, limit %d", Tier(t), b, sum, allowed[i].at, limit)
					}
				}
				continue
			}
			for i := range allowed {
				var sum uint64
				for _, b := range allowed[i:] {
					sum += b.n
					bound := limit + uint64(int64(b.at.Sub(allowed[i].at))/interval)
					if sum > bound {
						rt.Fatalf("%s tier admitted %d between %v and %v, bound %d", Tier(t), sum, allowed[i].at, b.at, bound)
					}
				}
			}
		}
	})
}
