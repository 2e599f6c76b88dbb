package limiter

import (
	"math"
	"strings"
	"testing"
	"time"
)

// keyStep is one step of a state machine story: a check or a report at an
// offset from t0, and what must hold afterwards.
type keyStep struct {
	at       time.Duration
	check    uint32 // messages to check (0: this step reports)
	class    Class  // report class when check == 0
	attempt  time.Duration
	rule     string
	verdict  Verdict
	reason   Reason
	state    State
	retry    time.Duration // exact retry_after of a DEFER, when non-zero
	strikes  uint32
	factor   float64 // when non-zero
	changed  bool
	stale    bool
	minLimit uint64 // minute tier's effective limit, when non-zero
}

func runSteps(t *testing.T, p *Provider, steps []keyStep) *Record {
	t.Helper()
	var rec Record
	for i, s := range steps {
		now := t0.Add(s.at)
		if s.check > 0 {
			d := Admit(&rec, p, s.check, false, now)
			if d.Verdict != s.verdict || d.Reason != s.reason || d.State != s.state {
				t.Fatalf("step %d (+%v): check got %v/%v/%v, want %v/%v/%v", i, s.at, d.Verdict, d.Reason, d.State, s.verdict, s.reason, s.state)
			}
			if d.Verdict == Defer && d.RetryAfter <= 0 {
				t.Fatalf("step %d: DEFER without retry_after", i)
			}
			if s.retry != 0 && d.RetryAfter != s.retry {
				t.Fatalf("step %d: retry_after %v, want %v", i, d.RetryAfter, s.retry)
			}
			if s.factor != 0 && !near(d.Factor, s.factor) {
				t.Fatalf("step %d: factor %v, want %v", i, d.Factor, s.factor)
			}
			if s.minLimit != 0 && d.Tiers.List[0].Limit != s.minLimit {
				t.Fatalf("step %d: minute limit %d, want %d", i, d.Tiers.List[0].Limit, s.minLimit)
			}
			continue
		}
		r := Report{Class: s.class, Rule: s.rule, Reply: "reply " + s.class.String()}
		if s.attempt != 0 {
			r.AttemptedAt = t0.Add(s.attempt)
		}
		out, _ := Apply(&rec, p, r, now)
		if out.State != s.state || out.Changed != s.changed || out.Stale != s.stale {
			t.Fatalf("step %d (+%v): report %v got state %v changed %v stale %v, want %v %v %v", i, s.at, s.class, out.State, out.Changed, out.Stale, s.state, s.changed, s.stale)
		}
		if st := strikesAt(&rec.Rep, &p.Machine, now); s.strikes != 0 && st != s.strikes {
			t.Fatalf("step %d: strikes %d, want %d", i, st, s.strikes)
		}
		if s.factor != 0 {
			if f := derive(&rec, p, now).factor; !near(f, s.factor) {
				t.Fatalf("step %d: factor %v, want %v", i, f, s.factor)
			}
		}
	}
	return &rec
}

func near(a, b float64) bool { return a-b < 1e-9 && b-a < 1e-9 }

func TestQQStory(t *testing.T) {
	t.Parallel()
	p := testProvider(Limits{Minute: 30, Hour: 600})
	p.Machine.Cooldowns = []Cooldown{{Duration: 10 * time.Minute}, {Duration: 2 * time.Hour}, {DayEnd: true}}
	m := time.Minute
	rec := runSteps(t, p, []keyStep{
		{at: 0, check: 25, verdict: Allow, state: Healthy},
		{at: 0, class: Delivered, state: Healthy, attempt: 0},
		{at: m, class: IPBlocked, rule: "tencent/ip-frequency-limited", state: Blocked, changed: true, strikes: 1},
		// fleet-wide DEFER until the end of the first cooldown
		{at: m, check: 1, verdict: Defer, reason: ReasonBlocked, state: Blocked, retry: 10 * m},
		// a report from a send attempted before the block: one event, not two strikes
		{at: m + time.Second, class: IPBlocked, attempt: 30 * time.Second, state: Blocked, stale: true, strikes: 1},
		// cooldown over: one probe, then the next probe slot
		{at: 11 * m, check: 1, verdict: Allow, state: Probing},
		{at: 11 * m, check: 1, verdict: Defer, reason: ReasonProbing, state: Probing, retry: m},
		{at: 11*m + time.Second, class: Delivered, state: Probing},
		{at: 12 * m, check: 1, verdict: Allow, state: Probing},
		{at: 12*m + time.Second, class: Delivered, state: Probing},
		{at: 13 * m, check: 1, verdict: Allow, state: Probing},
		{at: 13*m + time.Second, class: Delivered, state: Throttled, changed: true, factor: 0.25},
		// ramping: 0.25 now, +0.1 per quiet 10 minutes
		{at: 23*m + time.Second, check: 7, verdict: Allow, state: Throttled, factor: 0.35, minLimit: 7},
		// second block: a longer cooldown
		{at: 30 * m, class: IPBlocked, state: Blocked, changed: true, strikes: 2},
		{at: 30 * m, check: 1, verdict: Defer, reason: ReasonBlocked, state: Blocked, retry: 2 * time.Hour},
	})
	if len(rec.Rep.History) != 4 || rec.Rep.History[0].To != Blocked || rec.Rep.History[0].Reply == "" || rec.Rep.History[2].Actor != ActorTimer || !rec.Rep.History[2].At.Equal(t0.Add(11*m)) {
		t.Fatalf("history %+v", rec.Rep.History)
	}
	// The first block learned a ceiling below the 25/minute that tripped QQ.
	if c := rec.Rep.Ceilings[Minute]; c == 0 || c >= 25 {
		t.Fatalf("minute ceiling %d, want a margin below 25", c)
	}
}

func TestThrottle(t *testing.T) {
	t.Parallel()
	p := testProvider(Limits{Minute: 100})
	m := time.Minute
	runSteps(t, p, []keyStep{
		{at: 0, class: RateLimited, state: Throttled, changed: true, factor: 0.5},
		{at: 0, check: 1, verdict: Allow, state: Throttled, minLimit: 50},
		// a burst from sends already in flight counts once
		{at: 10 * time.Second, class: RateLimited, state: Throttled, factor: 0.5},
		{at: 20 * time.Second, class: RateLimited, state: Throttled, factor: 0.5},
		// after the adjust interval a new report decreases again
		{at: 2 * m, class: RateLimited, state: Throttled, factor: 0.25},
		{at: 3 * m, class: ConnectionLimited, state: Throttled, factor: 0.2},
		{at: 4 * m, class: RateLimited, state: Throttled, factor: 0.1},
		{at: 5 * m, class: RateLimited, state: Throttled, factor: 0.1}, // the floor
		{at: 15 * m, check: 1, verdict: Allow, state: Throttled, factor: 0.2, minLimit: 20},
		// user unknown never slows anything down
		{at: 16 * m, class: RecipientFailed, state: Throttled, factor: 0.2},
		{at: 16 * m, class: ContentRejected, state: Throttled, factor: 0.2},
		{at: 16 * m, class: AuthFailed, state: Throttled, factor: 0.2},
		// climbs back to 1 and HEALTHY after enough quiet intervals
		{at: 5*m + 90*m, check: 1, verdict: Allow, state: Healthy, factor: 1, minLimit: 100},
	})
}

// TestThrottleTeachesACeiling: a RATE_LIMITED report while the key was
// busy is a limit found, like a block: the factor ramps back up to a margin
// below it, not into it again (Gmail's 421 4.7.28). A throttle at low volume
// and a connection limit teach nothing.
func TestThrottleTeachesACeiling(t *testing.T) {
	t.Parallel()
	p := testProvider(Limits{Minute: 100})
	busy := func() *Record {
		var rec Record
		for i := 0; i < 60; i++ {
			Admit(&rec, p, 1, false, t0.Add(time.Duration(i)*time.Second))
		}
		return &rec
	}
	rec := busy()
	at := t0.Add(time.Minute)
	if out, _ := Apply(rec, p, Report{Class: RateLimited, Rule: "google/421-4.7.28"}, at); out.State != Throttled {
		t.Fatalf("state %v, want THROTTLED", out.State)
	}
	want := uint64(math.Floor(60 * p.Machine.CeilingMargin))
	if c := rec.Rep.Ceilings[Minute]; c != want {
		t.Fatalf("minute ceiling %d after a throttle at 60/minute, want %d", c, want)
	}
	// In-flight sends reporting the same throttle within the adjust
	// interval change nothing.
	Apply(rec, p, Report{Class: RateLimited}, at.Add(10*time.Second))
	if c := rec.Rep.Ceilings[Minute]; c != want {
		t.Fatalf("a second report within the adjust interval moved the ceiling to %d", c)
	}
	if d := Admit(rec, p, 1, false, at.Add(20*time.Second)); d.Tiers.List[0].Limit != uint64(float64(want)*p.Machine.DecreaseFactor) {
		t.Fatalf("throttled minute limit %d, want the factor times the ceiling %d", d.Tiers.List[0].Limit, want)
	}
	// Ramped back to HEALTHY: at the ceiling, not at the configured 100.
	if d := Admit(rec, p, 1, false, at.Add(3*time.Hour)); d.State != Healthy || d.Tiers.List[0].Limit != want {
		t.Fatalf("after the ramp: %v, minute limit %d, want HEALTHY at %d", d.State, d.Tiers.List[0].Limit, want)
	}

	var quiet Record
	Admit(&quiet, p, 1, false, t0)
	Apply(&quiet, p, Report{Class: RateLimited}, t0.Add(time.Minute))
	if quiet.Rep.Ceilings != (Limits{}) {
		t.Fatalf("a throttle after one message taught ceilings %v", quiet.Rep.Ceilings)
	}
	conn := busy()
	Apply(conn, p, Report{Class: ConnectionLimited}, t0.Add(time.Minute))
	if conn.Rep.State != Throttled || conn.Rep.Ceilings != (Limits{}) {
		t.Fatalf("connection limit: state %v, ceilings %v; want THROTTLED and none", conn.Rep.State, conn.Rep.Ceilings)
	}
}

func TestStaleReportsNeverEscalate(t *testing.T) {
	t.Parallel()
	p := testProvider(Limits{Minute: 100})
	p.Machine.RemediationShare = 0 // a rate block, whatever the volume
	rec := runSteps(t, p, []keyStep{
		{at: time.Minute, class: IPBlocked, state: Blocked, changed: true, strikes: 1},
		{at: 2 * time.Minute, class: IPBlocked, attempt: 30 * time.Second, state: Blocked, stale: true, strikes: 1},
		{at: 12 * time.Minute, class: IPBlocked, attempt: 50 * time.Second, state: Probing, stale: true, strikes: 1},
		{at: 12 * time.Minute, class: Delivered, attempt: 50 * time.Second, state: Probing, stale: true},
	})
	if rec.Rep.ProbeOK != 0 {
		t.Fatal("a stale delivery counted as a probe")
	}
}

func TestStrikesDecayAndLadderGrows(t *testing.T) {
	t.Parallel()
	p := testProvider(Limits{Minute: 100})
	p.Machine.RemediationShare = 0
	p.Machine.StrikeDecay = 72 * time.Hour
	sh := time.FixedZone("CST", 8*3600)
	p.Location = sh
	var rec Record
	var prev time.Duration
	now := t0
	for i := 1; i <= 4; i++ {
		out, _ := Apply(&rec, p, Report{Class: IPBlocked}, now)
		d := out.Until.Sub(now)
		if i == 4 {
			// The third cooldown was the day-end rung: it ended at a
			// Beijing midnight, and the probe then was refused. The
			// provider's block does not end with its day, so the next
			// cooldown is the rung's least duration (>=4h), not a day.
			if d != 4*time.Hour {
				t.Fatalf("block 4, a probe refused at midnight: cooldown %v, want 4h", d)
			}
			break
		}
		if d < prev {
			t.Fatalf("block %d: cooldown %v shrank from %v", i, d, prev)
		}
		if i == 3 && out.Until.In(sh).Hour() != 0 {
			t.Fatalf("block 3: until %v, want a Beijing midnight", out.Until.In(sh))
		}
		prev = d
		now = out.Until.Add(time.Second)
	}
	// A probe refused again, 4 hours after midnight, waits for the next
	// midnight: the second chance is the only one.
	now = rec.Rep.Until.Add(time.Second)
	out, _ := Apply(&rec, p, Report{Class: IPBlocked}, now)
	if u := out.Until.In(sh); u.Hour() != 0 || out.Until.Sub(now) < 19*time.Hour {
		t.Fatalf("block 5, a probe refused at 04:00: until %v, want the next Beijing midnight", u)
	}
	now = out.Until.Add(time.Second)
	if s := strikesAt(&rec.Rep, &p.Machine, now); s != 5 {
		t.Fatalf("strikes %d", s)
	}
	if s := strikesAt(&rec.Rep, &p.Machine, now.Add(145*time.Hour)); s != 3 {
		t.Fatalf("strikes after two clean decay periods %d, want 3", s)
	}
	// The day-end rung ends at the next Beijing midnight (16:00 UTC), at least 4h away.
	var r2 Record
	at := time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC)
	r2.Rep.Strikes, r2.Rep.StrikeAt = 2, at
	out, _ = Apply(&r2, p, Report{Class: IPBlocked}, at)
	if want := time.Date(2026, 11, 27, 16, 0, 0, 0, time.UTC); !out.Until.Equal(want) {
		t.Fatalf("day-end cooldown until %v, want %v", out.Until, want)
	}
}

func TestRemediation(t *testing.T) {
	t.Parallel()
	p := testProvider(Limits{Minute: 30, Hour: 600, Day: 3000})
	var rec Record
	Admit(&rec, p, 1, false, t0)
	out, _ := Apply(&rec, p, Report{Class: IPBlocked, Rule: "tencent/ip-frequency-limited", Reply: "550 Ip frequency limited"}, t0.Add(time.Minute))
	v := View(Key{IP: "192.0.2.1", Provider: "test"}, &rec, p, t0.Add(time.Minute))
	if !v.Remediation || !strings.Contains(v.Reason, "needs remediation") {
		t.Fatalf("low-volume block not marked for remediation: %+v", v)
	}
	last := p.Machine.Cooldowns[len(p.Machine.Cooldowns)-1]
	if d := out.Until.Sub(t0.Add(time.Minute)); d < last.Duration {
		t.Fatalf("remediation cooldown %v, want the longest rung", d)
	}
	if rec.Rep.Ceilings != (Limits{}) {
		t.Fatalf("a reputation block taught ceilings: %v", rec.Rep.Ceilings)
	}
	// Probes are rare; an operator release clears the mark.
	probeAt := out.Until
	if d := Admit(&rec, p, 1, false, probeAt); d.Verdict != Allow {
		t.Fatal("no probe after the cooldown")
	}
	if d := Admit(&rec, p, 1, false, probeAt.Add(time.Hour)); d.Reason != ReasonProbing || d.RetryAfter != 5*time.Hour {
		t.Fatalf("remediation probe interval: %v %v", d.Reason, d.RetryAfter)
	}
	Release(&rec, p, "whitelisted by QQ", "alice", probeAt.Add(time.Hour))
	if rec.Rep.Remediation || rec.Rep.State != Healthy || rec.Rep.History[0].Actor != "alice" {
		t.Fatalf("release: %+v", rec.Rep)
	}
}

func TestCeilingsRiseAgain(t *testing.T) {
	t.Parallel()
	p := testProvider(Limits{Minute: 100})
	var rec Record
	for i := 0; i < 60; i++ {
		Admit(&rec, p, 1, false, t0.Add(time.Duration(i)*time.Second))
	}
	Apply(&rec, p, Report{Class: IPBlocked}, t0.Add(time.Minute))
	c0 := ceilingAt(&rec.Rep, p, Minute, t0.Add(time.Minute))
	if c0 == 0 || c0 >= 60 {
		t.Fatalf("ceiling %d", c0)
	}
	// 5% of itself per clean day.
	if c, want := ceilingAt(&rec.Rep, p, Minute, t0.Add(25*time.Hour)), uint64(float64(c0)*1.05); c != want {
		t.Fatalf("after a clean day the ceiling is %d, want %d", c, want)
	}
	if c := ceilingAt(&rec.Rep, p, Minute, t0.Add(30*24*time.Hour)); c != 0 {
		t.Fatalf("after a clean month the ceiling is %d, want none", c)
	}
}

func TestHoldReleaseReset(t *testing.T) {
	t.Parallel()
	p := testProvider(Limits{Minute: 10})
	var rec Record
	Admit(&rec, p, 5, false, t0)
	Hold(&rec, p, time.Time{}, "investigating", "bob", t0)
	if d := Admit(&rec, p, 1, false, t0.Add(time.Hour)); d.Reason != ReasonHeld || d.RetryAfter != holdRecheck {
		t.Fatalf("open hold: %v %v", d.Reason, d.RetryAfter)
	}
	Hold(&rec, p, t0.Add(2*time.Hour), "", "bob", t0.Add(time.Hour))
	if d := Admit(&rec, p, 1, false, t0.Add(2*time.Hour)); d.Verdict != Allow || d.State != Healthy {
		t.Fatalf("hold with an end: %v %v", d.Verdict, d.State)
	}
	Apply(&rec, p, Report{Class: IPBlocked}, t0.Add(3*time.Hour))
	if ch := Reset(&rec, p, "new IP owner", "carol", t0.Add(3*time.Hour)); ch != Cleared {
		t.Fatalf("reset change %v", ch)
	}
	if rec.Rep.Strikes != 0 || len(rec.Rep.History) != 1 || rec.Rep.History[0].From != Blocked || rec.Rep.History[0].Reason != "new IP owner" {
		t.Fatalf("after reset %+v", rec.Rep)
	}
}

func TestTriggers(t *testing.T) {
	t.Parallel()
	p := testProvider(Limits{Minute: 100})
	tg := &Trigger{Count: 3, Window: 10 * time.Minute}
	var rec Record
	for i := 0; i < 2; i++ {
		out, _ := Apply(&rec, p, Report{Class: RateLimited, Rule: "x/slow", Trigger: tg}, t0.Add(time.Duration(i)*time.Minute))
		if !out.Pending || out.State != Healthy {
			t.Fatalf("match %d acted early: %+v", i, out)
		}
	}
	out, _ := Apply(&rec, p, Report{Class: RateLimited, Rule: "x/slow", Trigger: tg}, t0.Add(2*time.Minute))
	if out.Pending || out.State != Throttled {
		t.Fatalf("third match did not act: %+v", out)
	}
	// A share trigger: 20% of at least 10 attempts.
	share := &Trigger{Share: 0.2, MinAttempts: 10, Window: time.Hour}
	var r2 Record
	at := t0
	for i := 0; i < 8; i++ {
		Apply(&r2, p, Report{Class: Delivered}, at)
	}
	o1, _ := Apply(&r2, p, Report{Class: IPBlocked, Rule: "x/share", Trigger: share}, at)
	if !o1.Pending {
		t.Fatal("share trigger acted below its minimum")
	}
	for i := 0; i < 8; i++ {
		Apply(&r2, p, Report{Class: Delivered}, at)
	}
	// 2 matches in the 10 attempts since the first: 20%, and the minimum is met.
	o2, _ := Apply(&r2, p, Report{Class: IPBlocked, Rule: "x/share", Trigger: share}, at)
	if o2.Pending || o2.State != Blocked {
		t.Fatalf("share trigger did not act at 2/10: %+v", o2)
	}
}

func TestIdleKeepsRecentStories(t *testing.T) {
	t.Parallel()
	p := testProvider(Limits{Minute: 10})
	var rec Record
	if !Idle(&rec, p, t0) {
		t.Fatal("an empty record is not idle")
	}
	Admit(&rec, p, 1, false, t0)
	if Idle(&rec, p, t0) {
		t.Fatal("a partly used bucket is idle")
	}
	if !Idle(&rec, p, t0.Add(time.Minute)) {
		t.Fatal("a refilled bucket is not idle")
	}
	Hold(&rec, p, time.Time{}, "check", "ops", t0)
	Release(&rec, p, "checked", "ops", t0.Add(time.Hour))
	if Idle(&rec, p, t0.Add(2*time.Hour)) {
		t.Fatal("a key released an hour ago lost its story")
	}
	if !Idle(&rec, p, t0.Add(26*time.Hour)) {
		t.Fatal("a key released a day ago is kept forever")
	}
}

func TestCalendarDayCeilingFromTheDaysCount(t *testing.T) {
	t.Parallel()
	p := testProvider(Limits{Day: 100})
	p.CalendarDay, p.Location = true, time.FixedZone("CST", 8*3600) // days begin at 16:00 UTC
	var rec Record
	yesterday := time.Date(2026, 11, 27, 1, 0, 0, 0, time.UTC)
	for i := 0; i < 90; i++ { // yesterday in Beijing, 01:00-15:50 UTC
		Admit(&rec, p, 1, false, yesterday.Add(time.Duration(i)*10*time.Minute))
	}
	today := time.Date(2026, 11, 27, 16, 0, 0, 0, time.UTC)
	for i := 0; i < 30; i++ { // today in Beijing
		Admit(&rec, p, 1, false, today.Add(time.Duration(i)*5*time.Minute))
	}
	// A rolling 24h count would see 120; QQ counts today's 30.
	Apply(&rec, p, Report{Class: IPBlocked}, today.Add(3*time.Hour))
	if c := rec.Rep.Ceilings[Day]; c != 27 {
		t.Fatalf("day ceiling %d, want 27 (90%% of the day's 30)", c)
	}
}

// TestUnknownLimitsLearnTheHour: with generous default limits (60 a minute,
// 2,000 an hour, 20,000 a day) a key paced at 12 a minute is blocked by a
// provider whose hidden limit is 300 an hour. Against the configured limits
// the minute tier looks busier (12/60) than the hour (300/2000), but the
// hour's count is the pace the provider refused: both learn a ceiling; the
// day, whose count is mostly the morning's, does not.
func TestUnknownLimitsLearnTheHour(t *testing.T) {
	t.Parallel()
	p := testProvider(Limits{Minute: 60, Hour: 2000, Day: 20000})
	var rec Record
	for i := 0; i < 300; i++ {
		Admit(&rec, p, 1, false, t0.Add(time.Duration(i)*5*time.Second))
	}
	Apply(&rec, p, Report{Class: IPBlocked}, t0.Add(1500*time.Second))
	c := rec.Rep.Ceilings
	if c[Hour] < 240 || c[Hour] > 270 {
		t.Errorf("hour ceiling %d, want a margin below the 300 sent in the hour", c[Hour])
	}
	if c[Minute] < 9 || c[Minute] > 11 {
		t.Errorf("minute ceiling %d, want a margin below the 12 sent in the last minute", c[Minute])
	}
	if c[Day] != 0 && c[Day] < 1000 {
		t.Errorf("day ceiling %d: a morning's count is not the day's limit", c[Day])
	}
}

func TestRefusedProbeLearnsNothing(t *testing.T) {
	t.Parallel()
	p := testProvider(Limits{Minute: 30, Hour: 600})
	var rec Record
	for i := 0; i < 25; i++ {
		Admit(&rec, p, 1, false, t0.Add(time.Duration(i)*time.Second))
	}
	out, _ := Apply(&rec, p, Report{Class: IPBlocked}, t0.Add(time.Minute))
	ceilings := rec.Rep.Ceilings
	if rec.Rep.Remediation || ceilings[Minute] == 0 {
		t.Fatalf("first block: remediation %v ceilings %v", rec.Rep.Remediation, ceilings)
	}
	// The provider's own block outlasts the cooldown: the probe is refused.
	if d := Admit(&rec, p, 1, false, out.Until); d.Verdict != Allow || !d.Probe {
		t.Fatal("no probe")
	}
	out, _ = Apply(&rec, p, Report{Class: IPBlocked}, out.Until.Add(time.Second))
	if out.State != Blocked || rec.Rep.Strikes != 2 {
		t.Fatalf("refused probe: %v strikes %d", out.State, rec.Rep.Strikes)
	}
	if rec.Rep.Remediation || rec.Rep.Ceilings != ceilings {
		t.Fatalf("a one-message probe taught remediation %v or ceilings %v (were %v)", rec.Rep.Remediation, rec.Rep.Ceilings, ceilings)
	}
}
