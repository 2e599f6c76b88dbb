package limiter

import (
	"math"
	"time"
)

// Actors recorded in transitions that no operator caused.
const (
	ActorReport = "report"
	ActorTimer  = "timer"
)

// derived is a key's state at some instant, computed from its record
// without writing it: a cooldown that has ended is PROBING, a hold that has
// ended and a factor that has ramped back to 1 are HEALTHY.
type derived struct {
	state  State
	since  time.Time
	until  time.Time
	factor float64
}

func derive(rec *Record, p *Provider, now time.Time) derived {
	rep := &rec.Rep
	m := &p.Machine
	switch rep.State {
	case Throttled:
		f, healthyAt := ramp(rep, m, now)
		if !healthyAt.IsZero() {
			return derived{state: Healthy, since: healthyAt, factor: 1}
		}
		return derived{state: Throttled, since: rep.Since, factor: f}
	case Blocked:
		if now.Before(rep.Until) {
			return derived{state: Blocked, since: rep.Since, until: rep.Until, factor: factorOf(rep)}
		}
		return derived{state: Probing, since: rep.Until, factor: factorOf(rep)}
	case Probing:
		return derived{state: Probing, since: rep.Since, factor: factorOf(rep)}
	case Held:
		if !rep.Until.IsZero() && !now.Before(rep.Until) {
			return derived{state: Healthy, since: rep.Until, factor: 1}
		}
		return derived{state: Held, since: rep.Since, until: rep.Until, factor: factorOf(rep)}
	}
	return derived{state: Healthy, since: rep.Since, factor: 1}
}

// factorOf returns the stored factor, where 0 means 1.
func factorOf(rep *Reputation) float64 {
	if rep.Factor <= 0 || rep.Factor > 1 {
		return 1
	}
	return rep.Factor
}

// ramp returns a THROTTLED key's factor at now, climbed by RampStep per
// whole quiet RampInterval since FactorAt, and the instant it reached 1
// (zero while it has not).
func ramp(rep *Reputation, m *Machine, now time.Time) (float64, time.Time) {
	f := factorOf(rep)
	steps := intervals(rep.FactorAt, now, m.RampInterval)
	if f+float64(steps)*m.RampStep >= 1-eps {
		need := math.Ceil((1-f)/m.RampStep - eps)
		if need < 0 {
			need = 0
		}
		return 1, rep.FactorAt.Add(time.Duration(need) * m.RampInterval)
	}
	return f + float64(steps)*m.RampStep, time.Time{}
}

// strikesAt returns the strikes left at now after one decays per clean
// StrikeDecay since the last strike.
func strikesAt(rep *Reputation, m *Machine, now time.Time) uint32 {
	k := intervals(rep.StrikeAt, now, m.StrikeDecay)
	if k >= int64(rep.Strikes) {
		return 0
	}
	return rep.Strikes - uint32(k)
}

func probeInterval(rep *Reputation, m *Machine) time.Duration {
	if rep.Remediation {
		return m.RemediationProbeInterval
	}
	return m.ProbeInterval
}

// transition moves rep to state to at instant at and records it.
func transition(rep *Reputation, m *Machine, to State, at time.Time, reason, reply, actor string) Transition {
	from := rep.State
	if from == StateUnspecified {
		from = Healthy
	}
	tr := Transition{At: at, From: from, To: to, Reason: reason, Reply: reply, Actor: actor}
	rep.State, rep.Since, rep.Until = to, at, time.Time{}
	rep.Reason, rep.LastReply = reason, reply
	// Never write into the History array in place: stores hand fn a shallow
	// copy, and the stored record may share it.
	n := len(rep.History) + 1
	if n > m.HistorySize {
		n = m.HistorySize
	}
	h := make([]Transition, 0, n)
	h = append(h, tr)
	h = append(h, rep.History[:n-1]...)
	rep.History = h
	return tr
}

// materialize writes into rep the transitions that time alone has made
// since it was last written (a cooldown ended, a hold ended, the factor
// ramped back to 1), each at the instant it happened, and returns them.
func materialize(rec *Record, p *Provider, now time.Time, out []Transition) []Transition {
	rep := &rec.Rep
	m := &p.Machine
	for {
		switch rep.State {
		case Blocked:
			if now.Before(rep.Until) {
				return out
			}
			at := rep.Until
			out = append(out, transition(rep, m, Probing, at, "cooldown ended", "", ActorTimer))
			rep.ProbeOK = 0
			continue
		case Held:
			if rep.Until.IsZero() || now.Before(rep.Until) {
				return out
			}
			at := rep.Until
			out = append(out, transition(rep, m, Healthy, at, "hold ended", "", ActorTimer))
			rep.Factor, rep.FactorAt = 0, at
			continue
		case Throttled:
			f, healthyAt := ramp(rep, m, now)
			if healthyAt.IsZero() {
				_ = f
				return out
			}
			out = append(out, transition(rep, m, Healthy, healthyAt, "recovered", "", ActorTimer))
			rep.Factor, rep.FactorAt = 0, healthyAt
			continue
		}
		return out
	}
}

// machineFor returns p's parameters with a rule's overrides applied.
func machineFor(p *Provider, o *Override) *Machine {
	if o == nil || (len(o.Cooldowns) == 0 && o.DecreaseFactor == 0) {
		return &p.Machine
	}
	m := p.Machine
	if len(o.Cooldowns) > 0 {
		m.Cooldowns = o.Cooldowns
	}
	if o.DecreaseFactor > 0 && o.DecreaseFactor < 1 {
		m.DecreaseFactor = o.DecreaseFactor
	}
	return &m
}

// Apply runs one classified report through the state machine of rec. It
// is the whole report step; a store calls it inside [Store.Update]. Reports
// whose attempt predates the current state only count: they never move it.
func Apply(rec *Record, p *Provider, r Report, now time.Time) (Outcome, Change) {
	rep := &rec.Rep
	m := machineFor(p, r.Override)
	ch := Touched
	var out Outcome
	trs := materialize(rec, p, now, nil)
	if len(trs) > 0 {
		ch = Transitioned
	}
	count := uint64(r.Count)
	if count == 0 {
		count = 1
	}
	if int(r.Class) < NumClasses {
		rep.Counts[r.Class] += count
	}
	at := r.AttemptedAt
	if at.IsZero() || at.After(now) {
		at = now
	}
	out.Stale = at.Before(rep.Since)
	acts := r.Class.Negative() || r.Class == Delivered
	if acts && !out.Stale && r.Class.Negative() && r.Trigger != nil && (r.Trigger.Count > 1 || r.Trigger.Share > 0) {
		if !triggerMet(rep, r, count, now) {
			out.Pending = true
			acts = false
		}
	}
	if acts && !out.Stale {
		if tr, ok := step(rec, p, m, r, now); ok {
			trs = append(trs, tr)
			ch = Transitioned
			out.Changed = true
			out.Transition = tr
		}
	}
	st := derive(rec, p, now)
	out.State = st.state
	out.Until = st.until
	if st.state == Probing {
		out.Until = rec.Use.ProbeNext
		if out.Until.Before(st.since) {
			out.Until = st.since
		}
	}
	out.Transitions = trs
	return out, ch
}

// step applies a fresh report that acts; it returns the transition it made.
func step(rec *Record, p *Provider, m *Machine, r Report, now time.Time) (Transition, bool) {
	rep := &rec.Rep
	reason := r.Rule
	if reason == "" {
		reason = "classified " + r.Class.String()
	}
	switch r.Class {
	case Delivered:
		if rep.State != Probing {
			return Transition{}, false
		}
		rep.ProbeOK++
		if int(rep.ProbeOK) < m.ProbeSuccesses {
			return Transition{}, false
		}
		to := Throttled
		if m.ProbeFactor >= 1 {
			to = Healthy
		}
		tr := transition(rep, m, to, now, "probes delivered", "", ActorReport)
		rep.Factor, rep.FactorAt, rep.ProbeOK = m.ProbeFactor, now, 0
		return tr, true
	case RateLimited, ConnectionLimited:
		dec := m.DecreaseFactor
		if r.Class == ConnectionLimited {
			dec = m.ConnectionDecreaseFactor
		}
		switch rep.State {
		case StateUnspecified, Healthy:
			learnFromThrottle(rec, p, m, r, now)
			tr := transition(rep, m, Throttled, now, reason, r.Reply, ActorReport)
			rep.Factor = math.Max(m.FactorFloor, dec)
			rep.FactorAt, rep.DecreasedAt = now, now
			return tr, true
		case Throttled:
			f, _ := ramp(rep, m, now)
			if now.Sub(rep.DecreasedAt) >= m.AdjustInterval {
				learnFromThrottle(rec, p, m, r, now)
				f = math.Max(m.FactorFloor, f*dec)
				rep.DecreasedAt = now
				rep.Reason, rep.LastReply = reason, r.Reply
			}
			// Either way the quiet time starts again.
			rep.Factor, rep.FactorAt = f, now
			return Transition{}, false
		case Probing:
			rep.ProbeOK = 0
		}
		return Transition{}, false
	case IPBlocked:
		switch rep.State {
		case Blocked, Held:
			return Transition{}, false
		}
		return block(rec, p, m, r, reason, now), true
	}
	return Transition{}, false
}

// block moves the key to BLOCKED one strike higher, learns ceilings from the
// rate that tripped the provider, and tells a rate block from a reputation
// block.
func block(rec *Record, p *Provider, m *Machine, r Report, reason string, now time.Time) Transition {
	rep := &rec.Rep
	strikes := strikesAt(rep, m, now) + 1
	u := measure(rec, p, now)
	// A refused probe says nothing about volume (a probe is one message)
	// nor about the rate that trips the provider: the provider's own block
	// simply outlasted the cooldown. It escalates, and learns nothing.
	probe := rep.State == Probing
	remediation := !probe && u.util() < m.RemediationShare
	if !remediation && !probe {
		learn(rep, p, m, &u, now)
	}
	until := cooldownEnd(m, strikes, p.location(), now, !probingSinceMidnight(rep, p))
	if remediation {
		until = cooldownEnd(m, uint32(len(m.Cooldowns)), p.location(), now, true)
		reason += "; needs remediation: blocked far below every limit, a reputation problem: ask the provider to delist the IP, then release the key"
	}
	tr := transition(rep, m, Blocked, now, reason, r.Reply, ActorReport)
	rep.Until = until
	rep.Strikes, rep.StrikeAt = strikes, now
	rep.ProbeOK = 0
	rep.Remediation = rep.Remediation || remediation
	return tr
}

// learnFromThrottle learns ceilings from a RATE_LIMITED report, as a block
// does: the rate the provider throttled is a limit found, and without a
// ceiling the factor would ramp straight back into it, a saw-tooth that
// sends at half the provider's rate on average. A throttle while the key
// sent below remediation_share of every limit is about reputation, not
// rate, and a CONNECTION_LIMITED report is about concurrency: neither
// teaches a ceiling.
func learnFromThrottle(rec *Record, p *Provider, m *Machine, r Report, now time.Time) {
	if r.Class != RateLimited {
		return
	}
	if u := measure(rec, p, now); u.util() >= m.RemediationShare {
		learn(&rec.Rep, p, m, &u, now)
	}
}

// usage is how close to its limits a key was sending at some instant.
type usage struct {
	// rates is each tier's count over its own window (for a calendar day
	// tier, the day's count so far).
	rates [NumTiers]float64
	// maxUtil is the largest share rates[t]/limit of any tier.
	maxUtil float64
	// paceUtil is the recent pace (over the longest tier window up to an
	// hour) against the pace the tiers allow together; nowUtil the pace over
	// the shortest window, the rate the provider refused just now.
	paceUtil, nowUtil float64
	// first is the shortest configured tier, bind the one that sets the
	// pace (NumTiers when there is none).
	first, bind Tier
}

// util is the key's use of its limits: a key paced to its day tier sends
// far below its minute and hour limits, and has sent little of its day yet
// when it has just started, but it is sending as fast as its policy allows.
func (u *usage) util() float64 { return math.Max(u.maxUtil, u.paceUtil) }

// measure returns how close to its limits rec was sending at now: each
// tier's count over its own window against its limit, and the recent pace
// (one message just sent is no pace) against the pace the tiers allow
// together.
func measure(rec *Record, p *Provider, now time.Time) usage {
	n := now.UnixNano()
	u := usage{first: NumTiers, bind: NumTiers}
	paceTier := Tier(NumTiers)
	pace := math.Inf(1) // messages per nanosecond the tiers allow together
	for t := Tier(0); t < NumTiers; t++ {
		limit := p.Limits[t]
		if limit == 0 {
			continue
		}
		if u.first == NumTiers {
			u.first = t
		}
		if paceTier == NumTiers || tierWindows[t] <= time.Hour {
			paceTier = t
		}
		u.rates[t] = rec.Use.Sent[t].Rate(n, int64(tierWindows[t]))
		if t == Day && p.CalendarDay {
			// The provider counts this calendar day: so does the bucket.
			u.rates[t] = 0
			if b := rec.Use.Buckets[Day]; b.TAT >= dayStart(n, p.location()) {
				u.rates[t] = float64(b.Used)
			}
		}
		if x := u.rates[t] / float64(limit); x > u.maxUtil {
			u.maxUtil = x
		}
		if r := float64(limit) / float64(tierWindows[t]); r < pace {
			pace, u.bind = r, t
		}
	}
	if u.first < NumTiers {
		u.paceUtil = u.rates[paceTier] / float64(tierWindows[paceTier]) / pace
		u.nowUtil = u.rates[u.first] / float64(tierWindows[u.first]) / pace
	}
	return u
}

// learn lowers rep's ceilings to what the provider just refused: it keeps
// the ceilings learned so far at their risen values, then lowers the
// busiest tiers to a margin below their count, and the tier that sets the
// pace to a margin below the pace the provider refused.
func learn(rep *Reputation, p *Provider, m *Machine, u *usage, now time.Time) {
	for t := Tier(0); t < NumTiers; t++ {
		rep.Ceilings[t] = ceilingAt(rep, p, t, now)
	}
	lower := func(t Tier, v float64) {
		c := uint64(math.Max(1, math.Floor(v*m.CeilingMargin)))
		if c >= p.Limits[t] {
			return
		}
		if cur := rep.Ceilings[t]; cur == 0 || c < cur {
			rep.Ceilings[t] = c
		}
	}
	for t := Tier(0); t < NumTiers; t++ {
		if limit := p.Limits[t]; limit > 0 {
			// The busiest tiers against their configured limits; and, since
			// configured limits may be far from the provider's (unknown
			// limits, generous defaults), every tier of up to an hour that
			// is at least half as busy: its count is the recent pace, and a
			// margin below it is the pace the provider just refused. A
			// longer tier's count is mostly sending long past, and is
			// lowered only when it is among the busiest.
			share := 0.9
			if tierWindows[t] <= time.Hour {
				share = 0.5
			}
			if x := u.rates[t] / float64(limit); x >= share*u.maxUtil {
				lower(t, u.rates[t])
			}
		}
	}
	if u.nowUtil >= u.maxUtil && u.bind < NumTiers {
		lower(u.bind, u.rates[u.first]*float64(tierWindows[u.bind])/float64(tierWindows[u.first]))
	}
	rep.CeilingAt = now
}

// probingSinceMidnight reports whether a PROBING key began probing at a
// midnight of its provider: the cooldown that ended was a day-end rung.
// When such a probe is refused, the provider's block did not end with its
// day (Yahoo's deferrals last hours from the breach), and waiting for the
// next midnight would lose a whole day.
func probingSinceMidnight(rep *Reputation, p *Provider) bool {
	n := rep.Since.UnixNano()
	return rep.State == Probing && n == dayStart(n, p.location())
}

// cooldownEnd returns the end of the cooldown for the given strike count
// (>= 1): the rung for that strike, and never earlier than any rung below
// it, so that cooldowns never shrink as strikes grow. With dayEnd false a
// day-end rung lasts its least duration only (">=4h": 4 hours), not to the
// next midnight: for a probe refused just after a day-end cooldown.
func cooldownEnd(m *Machine, strikes uint32, loc *time.Location, now time.Time, dayEnd bool) time.Time {
	idx := int(strikes) - 1
	if idx >= len(m.Cooldowns) {
		idx = len(m.Cooldowns) - 1
	}
	var end time.Time
	for i := 0; i <= idx; i++ {
		c := m.Cooldowns[i]
		e := now.Add(c.Duration)
		if c.DayEnd && dayEnd {
			midnight := time.Unix(0, nextDayStart(now.UnixNano(), loc))
			if midnight.After(e) {
				e = midnight
			}
		}
		if e.After(end) {
			end = e
		}
	}
	return end
}

// triggerMet counts a match of r's rule and reports whether its trigger is
// now met; a met trigger is forgotten so that the next one counts afresh.
func triggerMet(rep *Reputation, r Report, count uint64, now time.Time) bool {
	tg := r.Trigger
	var total uint64
	for _, c := range rep.Counts {
		total += c
	}
	idx := -1
	for i := range rep.Triggers {
		if rep.Triggers[i].Rule == r.Rule {
			idx = i
			break
		}
	}
	// Copy before writing: the stored record may share the array.
	trg := make([]TriggerCount, len(rep.Triggers), len(rep.Triggers)+1)
	copy(trg, rep.Triggers)
	if idx < 0 || (tg.Window > 0 && now.Sub(trg[idx].Start) > tg.Window) {
		tc := TriggerCount{Rule: r.Rule, Start: now, Attempts: uint32(total - count)}
		if idx < 0 {
			if len(trg) >= 8 {
				trg = trg[1:]
			}
			trg = append(trg, tc)
			idx = len(trg) - 1
		} else {
			trg[idx] = tc
		}
	}
	tc := &trg[idx]
	tc.Hits += uint32(count)
	met := false
	if tg.Count > 1 && tc.Hits >= tg.Count {
		met = true
	}
	if tg.Share > 0 {
		attempts := total - uint64(tc.Attempts)
		if attempts >= uint64(tg.MinAttempts) && float64(tc.Hits) >= tg.Share*float64(attempts) {
			met = true
		}
	}
	if met {
		trg = append(trg[:idx], trg[idx+1:]...)
	}
	if len(trg) == 0 {
		trg = nil
	}
	rep.Triggers = trg
	return met
}

// Hold stops every send of the key until until (zero: until released).
func Hold(rec *Record, p *Provider, until time.Time, note, actor string, now time.Time) Change {
	materialize(rec, p, now, nil)
	if note == "" {
		note = "operator hold"
	}
	transition(&rec.Rep, &p.Machine, Held, now, note, "", actor)
	rec.Rep.Until = until
	return Transitioned
}

// Release returns the key to HEALTHY now, clearing a hold, a block, a
// throttle and the remediation mark. Strikes and learned ceilings stay and
// decay as usual.
func Release(rec *Record, p *Provider, note, actor string, now time.Time) Change {
	materialize(rec, p, now, nil)
	if note == "" {
		note = "operator release"
	}
	rep := &rec.Rep
	transition(rep, &p.Machine, Healthy, now, note, "", actor)
	rep.Factor, rep.FactorAt, rep.ProbeOK, rep.Remediation = 0, now, 0, false
	rep.Triggers = nil
	return Transitioned
}

// Reset forgets everything about the key (buckets, strikes, learned
// ceilings, counts and history) but the reset itself.
func Reset(rec *Record, p *Provider, note, actor string, now time.Time) Change {
	if note == "" {
		note = "operator reset"
	}
	from := derive(rec, p, now).state
	version := rec.Rep.Version
	rec.Rep = Reputation{Version: version, State: from}
	transition(&rec.Rep, &p.Machine, Healthy, now, note, "", actor)
	return Cleared
}

// KeyView is everything known about a key at an instant: the state machine
// after what time alone has done, and the tiers as a dry run would see them.
type KeyView struct {
	Key         Key
	State       State
	Since       time.Time
	Until       time.Time
	Reason      string
	LastReply   string
	Strikes     uint32
	Factor      float64
	Tiers       Tiers
	History     []Transition
	Remediation bool
	Counts      [NumClasses]uint64
}

// View returns the key's state at now without changing rec.
func View(key Key, rec *Record, p *Provider, now time.Time) KeyView {
	c := *rec
	c.Rep.History = append([]Transition(nil), rec.Rep.History...)
	materialize(&c, p, now, nil)
	d := Admit(&c, p, 1, true, now)
	st := derive(&c, p, now)
	v := KeyView{
		Key: key, State: st.state, Since: c.Rep.Since, Until: st.until,
		Reason: c.Rep.Reason, LastReply: c.Rep.LastReply,
		Strikes: strikesAt(&c.Rep, &p.Machine, now), Factor: st.factor,
		Tiers: d.Tiers, History: c.Rep.History, Remediation: c.Rep.Remediation, Counts: c.Rep.Counts,
	}
	if st.state == Throttled || st.state == Healthy {
		v.Since = st.since
	}
	if st.state == Probing {
		v.Until = d.Until
		if v.Until.IsZero() {
			v.Until = c.Use.ProbeNext
			if v.Until.Before(st.since) {
				v.Until = st.since
			}
		}
	}
	return v
}

// Idle reports whether rec carries no information at now: HEALTHY, no
// strikes, no learned ceilings, no remediation or pending triggers, no
// transition within the last StrikeDecay, and every bucket full. A store may
// forget such a key.
func Idle(rec *Record, p *Provider, now time.Time) bool {
	rep := &rec.Rep
	if derive(rec, p, now).state != Healthy || rep.Remediation || len(rep.Triggers) > 0 || strikesAt(rep, &p.Machine, now) > 0 {
		return false
	}
	// A recent transition is the operator's story ("released because …"):
	// keep it as long as a strike would be kept.
	if len(rep.History) > 0 && now.Sub(rep.History[0].At) < p.Machine.StrikeDecay {
		return false
	}
	n := now.UnixNano()
	for t := Tier(0); t < NumTiers; t++ {
		if ceilingAt(rep, p, t, now) > 0 {
			return false
		}
		if p.Limits[t] == 0 {
			continue
		}
		eff, _ := effectiveLimit(rep, p, t, 1, now)
		if g := gauge(&rec.Use.Buckets[t], p, t, eff, n); g.remaining() < eff {
			return false
		}
	}
	return true
}
