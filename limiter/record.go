package limiter

import "time"

// Record is everything a store keeps about one key. It has two parts with
// different owners, so that a store can make each step atomic in its own way:
// Rep is written only by [Store.Update] (reports and operator actions), Use
// only by [Store.Admit] and [Store.Refund] (the hot path). Each part may be
// read by either.
type Record struct {
	Rep Reputation
	Use Usage
}

// Reputation is the state machine's part of a record.
type Reputation struct {
	// State as last materialised. A BLOCKED state whose Until has passed is
	// PROBING, and a THROTTLED one whose factor has ramped to 1 is HEALTHY,
	// even before anything writes the record again: see [Derive].
	State State
	// Since is when State began.
	Since time.Time
	// Until is the end of a block or of a hold; zero when none.
	Until time.Time
	// Reason is the rule id or operator note that caused State.
	Reason string
	// LastReply is the reply text that caused State.
	LastReply string
	// Strikes is the escalation level at StrikeAt; it decays afterwards.
	Strikes uint32
	// StrikeAt is when the last strike was added.
	StrikeAt time.Time
	// Factor is the rate factor at FactorAt (0 means 1).
	Factor float64
	// FactorAt is when the factor was last set; it ramps from there.
	FactorAt time.Time
	// DecreasedAt is when the factor was last decreased.
	DecreasedAt time.Time
	// ProbeOK counts delivered probes in the current PROBING state.
	ProbeOK uint32
	// Remediation marks a key blocked at a volume far below its limits.
	Remediation bool
	// Ceilings are the learned ceilings per tier at CeilingAt; 0 means none.
	Ceilings Limits
	// CeilingAt is when the ceilings were last lowered; they rise from there.
	CeilingAt time.Time
	// Counts counts reports by classification.
	Counts [NumClasses]uint64
	// Triggers counts matches of rules that need several before acting.
	Triggers []TriggerCount
	// History holds transitions, newest first, at most Machine.HistorySize.
	History []Transition
	// Version increases with every write of Rep; stores use it for
	// compare-and-set.
	Version uint64
}

// Usage is the hot path's part of a record: the tier buckets, the sliding
// counts that measure the rate a key sends at, and the probe slot.
type Usage struct {
	Buckets [NumTiers]Bucket
	Sent    [NumTiers]Window
	// ProbeNext is the earliest time of the next probe while PROBING.
	ProbeNext time.Time
}

// Bucket is one tier's token bucket, kept as GCRA state in integer
// nanoseconds so that retry_after is exact.
//
// For a rolling tier, TAT (theoretical arrival time, Unix nanoseconds) is
// the instant at which the bucket will be full again; zero or past means
// full. Each message moves it forward by the tier's emission interval
// (window / limit, rounded up so that the tier never admits more than its
// limit). For a calendar day tier, TAT is the start of the day whose count
// Used holds.
type Bucket struct {
	TAT  int64
	Used uint64
}

// Window counts messages sent in the current fixed window of a tier (which
// started at Start, Unix nanoseconds, aligned to the window) and in the one
// before, to estimate the rate over the last window.
type Window struct {
	Start     int64
	Cur, Prev float64
}

// Transition is one entry of a key's history.
type Transition struct {
	At     time.Time
	From   State
	To     State
	Reason string // rule id or operator note
	Reply  string // the reply text, when a reply caused it
	Actor  string // "report", "timer", or the operator's identity
}

// TriggerCount counts the matches of one rule since Start.
type TriggerCount struct {
	Rule     string
	Start    time.Time
	Hits     uint32
	Attempts uint32
}

// Trigger makes a rule act only after enough matches: Count matches within
// Window, or a Share of attempts (reports of any class) within Window once at
// least MinAttempts were seen. The zero Trigger acts at once.
type Trigger struct {
	Count       uint32
	Window      time.Duration
	Share       float64
	MinAttempts uint32
}

// Override replaces state machine parameters for the report of one rule.
type Override struct {
	// Cooldowns replaces the cooldown ladder when non-empty.
	Cooldowns []Cooldown
	// DecreaseFactor replaces the decrease factor when non-zero.
	DecreaseFactor float64
}

// Report is one classified delivery result.
type Report struct {
	Class Class
	// Rule is the id of the rule that classified the reply ("" for the
	// default mapping by code).
	Rule string
	// Reply is the reply text, kept in the history when it moves the state.
	Reply string
	// Count is the number of messages the result covers; 0 means 1.
	Count uint32
	// AttemptedAt is when the attempt was made; zero means now.
	AttemptedAt time.Time
	// Trigger, when non-nil and non-zero, delays the rule's effect.
	Trigger *Trigger
	// Override, when non-nil, replaces machine parameters for this report.
	Override *Override
}

// TierStatus describes one tier of a key at a decision.
type TierStatus struct {
	Tier Tier
	// Limit is the effective limit after throttling and learned ceilings.
	Limit uint64
	// Configured is the configured limit.
	Configured uint64
	// Ceiling is the learned ceiling, 0 when none.
	Ceiling uint64
	// Remaining is whole messages available after the decision.
	Remaining uint64
	// Window is the tier's window (24h for a calendar day).
	Window time.Duration
	// RetryAfter is until one message is available; 0 when one is.
	RetryAfter time.Duration
	// Calendar marks a calendar day tier.
	Calendar bool
}

// Tiers is the set of tiers that apply to a key, in tier order.
type Tiers struct {
	N    int
	List [NumTiers]TierStatus
}

// Slice returns the tiers that apply. It aliases t.
func (t *Tiers) Slice() []TierStatus { return t.List[:t.N] }

// Decision is the answer of an admission check.
type Decision struct {
	Verdict Verdict
	Reason  Reason
	// RetryAfter is > 0 for a DEFER, 0 for an ALLOW.
	RetryAfter time.Duration
	// State is the key's state at decision time.
	State State
	// Factor is the rate factor applied.
	Factor float64
	// Tiers after the decision.
	Tiers Tiers
	// Limiting is the tier that limited a RATE_LIMITED deferral.
	Limiting Tier
	// Probe marks an ALLOW that is a probe.
	Probe bool
	// Until is the end of the block or hold behind a BLOCKED or HELD
	// deferral (zero for a hold without an end).
	Until time.Time
}

// Outcome is what a report did to a key.
type Outcome struct {
	// State after the report.
	State State
	// Until is the end of a block, hold or probe wait, when there is one.
	Until time.Time
	// Changed reports that the report itself moved the state (a cooldown
	// that ended before it is in Transitions, but is not the report's doing).
	Changed bool
	// Stale reports that the attempt predates the current state, so the
	// report was only counted.
	Stale bool
	// Pending reports that the rule's trigger has not been met yet.
	Pending bool
	// Transition is the report's own transition, when Changed.
	Transition Transition
	// Transitions are every transition of the step, oldest first: those
	// time alone made before the report (a cooldown that ended), then the
	// report's own.
	Transitions []Transition
}
