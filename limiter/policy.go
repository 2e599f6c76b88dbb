package limiter

import (
	"fmt"
	"time"
)

// Tier indexes the four tiers a key may have. Arrays indexed by Tier keep
// the hot path free of allocations.
type Tier uint8

// The tiers, shortest window first.
const (
	Second Tier = iota
	Minute
	Hour
	Day
	// NumTiers is the number of tiers.
	NumTiers = 4
)

var tierNames = [NumTiers]string{"second", "minute", "hour", "day"}

// tierWindows are the windows of the tiers; a calendar day tier uses the
// provider's calendar day instead of a rolling 24 hours.
var tierWindows = [NumTiers]time.Duration{time.Second, time.Minute, time.Hour, 24 * time.Hour}

// String returns "second", "minute", "hour" or "day". It never panics.
func (t Tier) String() string {
	if int(t) < NumTiers {
		return tierNames[t]
	}
	return fmt.Sprintf("Tier(%d)", uint8(t))
}

// Window returns the tier's window: 1s, 1m, 1h or 24h.
func (t Tier) Window() time.Duration {
	if int(t) < NumTiers {
		return tierWindows[t]
	}
	return 0
}

// ParseTier returns the tier named s.
func ParseTier(s string) (Tier, error) {
	for i, n := range tierNames {
		if equalFold(n, s) {
			return Tier(i), nil
		}
	}
	return 0, fmt.Errorf("unknown tier %q (want second, minute, hour or day)", s)
}

// Limits holds one limit per tier, in messages per tier window. Zero means
// the tier does not apply.
type Limits [NumTiers]uint64

// Cooldown is one rung of the cooldown ladder.
type Cooldown struct {
	// Duration of the cooldown.
	Duration time.Duration
	// DayEnd makes the cooldown last until the next midnight in the
	// provider's time zone, and at least Duration (and never less than the
	// rung below it), like QQ's "rest of the day" blocks.
	DayEnd bool
}

// String returns "10m0s", or "day-end" (with a minimum when one is set).
func (c Cooldown) String() string {
	if c.DayEnd {
		if c.Duration > 0 {
			return "day-end>=" + c.Duration.String()
		}
		return "day-end"
	}
	return c.Duration.String()
}

// Machine holds the parameters of the reputation state machine. The zero
// value of a field means "use the default" (see [DefaultMachine]) once the
// policy is prepared with [Machine.WithDefaults].
type Machine struct {
	// Burst is how many messages a tier admits at once before it paces
	// them. A tier then spaces messages window / (limit - burst + 1) apart,
	// so that no span of the tier's window ever holds more than its limit,
	// whether the provider counts in fixed windows, sliding windows or
	// buckets: with burst 1 the sustained rate is the limit exactly, with no
	// burst. 0 (or more than a tier's limit) means a plain token bucket of
	// the tier's limit refilling limit per window, which can admit up to
	// twice the limit within one window.
	// A check of more messages than the burst passes when the tier is full.
	Burst int
	// DecreaseFactor multiplies the rate factor on a RATE_LIMITED report.
	DecreaseFactor float64
	// ConnectionDecreaseFactor multiplies it on a CONNECTION_LIMITED report.
	ConnectionDecreaseFactor float64
	// FactorFloor is the lowest rate factor (0 < floor < 1).
	FactorFloor float64
	// AdjustInterval allows at most one decrease per interval, so a burst of
	// reports from sends already in flight counts once.
	AdjustInterval time.Duration
	// RampInterval is the quiet time after which the factor climbs a step.
	RampInterval time.Duration
	// RampStep is added to the factor after each quiet RampInterval.
	RampStep float64
	// Cooldowns is the ladder of block cooldowns by strike: the first block
	// waits Cooldowns[0], the second Cooldowns[1], and so on; the last rung
	// repeats.
	Cooldowns []Cooldown
	// StrikeDecay forgives one strike per clean interval of this length.
	StrikeDecay time.Duration
	// ProbeInterval is the least time between two probes.
	ProbeInterval time.Duration
	// ProbeSuccesses is how many delivered probes end PROBING.
	ProbeSuccesses int
	// ProbeFactor is the rate factor THROTTLED starts at after probing.
	ProbeFactor float64
	// CeilingMargin sets a learned ceiling at this share of the rate that
	// tripped the provider (0 < margin <= 1).
	CeilingMargin float64
	// CeilingRiseInterval is the clean time after which a learned ceiling
	// rises a step.
	CeilingRiseInterval time.Duration
	// CeilingRiseStep is the step, as a share of the learned ceiling: the
	// ceiling probes upwards slowly, in case the provider raised its limit.
	CeilingRiseStep float64
	// RemediationShare: a block while every tier was used below this share
	// of its limit is a reputation problem, not a rate problem.
	RemediationShare float64
	// RemediationProbeInterval is the (long) probe interval of such a key.
	RemediationProbeInterval time.Duration
	// HistorySize bounds the transitions kept per key.
	HistorySize int
}

// DefaultMachine returns the built-in state machine parameters. They mirror
// the providers' published behaviour: QQ blocks for minutes, hours, then the
// rest of its day; Gmail and Microsoft throttle before they block.
func DefaultMachine() Machine {
	return Machine{
		DecreaseFactor:           0.5,
		ConnectionDecreaseFactor: 0.8,
		FactorFloor:              0.1,
		AdjustInterval:           time.Minute,
		RampInterval:             10 * time.Minute,
		RampStep:                 0.1,
		Cooldowns:                []Cooldown{{Duration: 10 * time.Minute}, {Duration: 2 * time.Hour}, {DayEnd: true, Duration: 4 * time.Hour}},
		StrikeDecay:              24 * time.Hour,
		ProbeInterval:            time.Minute,
		ProbeSuccesses:           3,
		ProbeFactor:              0.25,
		CeilingMargin:            0.9,
		CeilingRiseInterval:      24 * time.Hour,
		CeilingRiseStep:          0.05,
		RemediationShare:         0.05,
		RemediationProbeInterval: 6 * time.Hour,
		HistorySize:              32,
	}
}

// WithDefaults returns m with every zero field taken from d.
func (m Machine) WithDefaults(d Machine) Machine {
	f := func(x *float64, y float64) {
		if *x == 0 {
			*x = y
		}
	}
	dur := func(x *time.Duration, y time.Duration) {
		if *x == 0 {
			*x = y
		}
	}
	f(&m.DecreaseFactor, d.DecreaseFactor)
	f(&m.ConnectionDecreaseFactor, d.ConnectionDecreaseFactor)
	f(&m.FactorFloor, d.FactorFloor)
	dur(&m.AdjustInterval, d.AdjustInterval)
	dur(&m.RampInterval, d.RampInterval)
	f(&m.RampStep, d.RampStep)
	if len(m.Cooldowns) == 0 {
		m.Cooldowns = append([]Cooldown(nil), d.Cooldowns...)
	}
	dur(&m.StrikeDecay, d.StrikeDecay)
	dur(&m.ProbeInterval, d.ProbeInterval)
	if m.ProbeSuccesses == 0 {
		m.ProbeSuccesses = d.ProbeSuccesses
	}
	f(&m.ProbeFactor, d.ProbeFactor)
	f(&m.CeilingMargin, d.CeilingMargin)
	dur(&m.CeilingRiseInterval, d.CeilingRiseInterval)
	f(&m.CeilingRiseStep, d.CeilingRiseStep)
	f(&m.RemediationShare, d.RemediationShare)
	dur(&m.RemediationProbeInterval, d.RemediationProbeInterval)
	if m.HistorySize == 0 {
		m.HistorySize = d.HistorySize
	}
	return m
}

// Validate reports the first parameter out of range, naming it by its
// configuration key.
func (m Machine) Validate() error {
	switch {
	case m.Burst < 0 || m.Burst > 1<<30:
		return fmt.Errorf("burst: %d is not between 0 and %d", m.Burst, 1<<30)
	case !(m.DecreaseFactor > 0 && m.DecreaseFactor < 1):
		return fmt.Errorf("decrease_factor: %v is not between 0 and 1 (exclusive)", m.DecreaseFactor)
	case !(m.ConnectionDecreaseFactor > 0 && m.ConnectionDecreaseFactor <= 1):
		return fmt.Errorf("connection_decrease_factor: %v is not in (0, 1]", m.ConnectionDecreaseFactor)
	case !(m.FactorFloor > 0 && m.FactorFloor < 1):
		return fmt.Errorf("factor_floor: %v is not between 0 and 1 (exclusive)", m.FactorFloor)
	case m.AdjustInterval <= 0:
		return fmt.Errorf("adjust_interval: %v is not positive", m.AdjustInterval)
	case m.RampInterval <= 0:
		return fmt.Errorf("ramp_interval: %v is not positive", m.RampInterval)
	case !(m.RampStep > 0 && m.RampStep <= 1):
		return fmt.Errorf("ramp_step: %v is not in (0, 1]", m.RampStep)
	case len(m.Cooldowns) == 0:
		return fmt.Errorf("cooldowns: empty")
	case m.StrikeDecay <= 0:
		return fmt.Errorf("strike_decay: %v is not positive", m.StrikeDecay)
	case m.ProbeInterval <= 0:
		return fmt.Errorf("probe_interval: %v is not positive", m.ProbeInterval)
	case m.ProbeSuccesses < 1 || m.ProbeSuccesses > 1000:
		return fmt.Errorf("probe_successes: %d is not between 1 and 1000", m.ProbeSuccesses)
	case !(m.ProbeFactor > 0 && m.ProbeFactor <= 1):
		return fmt.Errorf("probe_factor: %v is not in (0, 1]", m.ProbeFactor)
	case !(m.CeilingMargin > 0 && m.CeilingMargin <= 1):
		return fmt.Errorf("ceiling_margin: %v is not in (0, 1]", m.CeilingMargin)
	case m.CeilingRiseInterval <= 0:
		return fmt.Errorf("ceiling_rise_interval: %v is not positive", m.CeilingRiseInterval)
	case !(m.CeilingRiseStep > 0 && m.CeilingRiseStep <= 1):
		return fmt.Errorf("ceiling_rise_step: %v is not in (0, 1]", m.CeilingRiseStep)
	case !(m.RemediationShare >= 0 && m.RemediationShare < 1):
		return fmt.Errorf("remediation_share: %v is not in [0, 1)", m.RemediationShare)
	case m.RemediationProbeInterval <= 0:
		return fmt.Errorf("remediation_probe_interval: %v is not positive", m.RemediationProbeInterval)
	case m.HistorySize < 1 || m.HistorySize > 10000:
		return fmt.Errorf("history_size: %d is not between 1 and 10000", m.HistorySize)
	}
	for i, c := range m.Cooldowns {
		if c.Duration < 0 || (c.Duration == 0 && !c.DayEnd) {
			return fmt.Errorf("cooldowns[%d]: %v is not positive", i, c.Duration)
		}
		if i > 0 && !c.DayEnd && !m.Cooldowns[i-1].DayEnd && c.Duration < m.Cooldowns[i-1].Duration {
			return fmt.Errorf("cooldowns[%d]: %v is shorter than the rung before it", i, c.Duration)
		}
	}
	return nil
}

// Provider is the policy of one provider: its tiers, its time zone and its
// state machine parameters. A Provider is immutable once in use; build a new
// [Policy] to change it.
type Provider struct {
	// Name is the provider's name ("tencent").
	Name string
	// Limits per tier; zero means the tier does not apply.
	Limits Limits
	// CalendarDay makes the day tier reset at midnight in Location instead
	// of refilling continuously over 24 hours.
	CalendarDay bool
	// Location is the provider's time zone; nil means UTC.
	Location *time.Location
	// Machine holds the state machine parameters, defaults filled in.
	Machine Machine
}

// Validate reports the first problem with p.
func (p *Provider) Validate() error {
	any := false
	for t, l := range p.Limits {
		if l > 0 {
			any = true
		}
		if l > 1<<40 {
			return fmt.Errorf("tiers.%s: %d is too large", Tier(t), l)
		}
	}
	if !any {
		return fmt.Errorf("tiers: no tier has a limit")
	}
	if p.CalendarDay && p.Limits[Day] == 0 {
		return fmt.Errorf("calendar_day: set, but there is no day tier")
	}
	return p.Machine.Validate()
}

func (p *Provider) location() *time.Location {
	if p.Location == nil {
		return time.UTC
	}
	return p.Location
}

// Policy maps provider names to their policies. Keys whose provider has no
// entry use Default. A Policy is immutable once in use.
type Policy struct {
	Providers map[string]*Provider
	Default   *Provider
}

// For returns the policy of the named provider, or the default.
func (p *Policy) For(provider string) *Provider {
	if pp, ok := p.Providers[provider]; ok {
		return pp
	}
	return p.Default
}

// Validate checks every provider and the default.
func (p *Policy) Validate() error {
	if p.Default == nil {
		return fmt.Errorf("default: missing")
	}
	if err := p.Default.Validate(); err != nil {
		return fmt.Errorf("default: %w", err)
	}
	for name, pp := range p.Providers {
		if err := pp.Validate(); err != nil {
			return fmt.Errorf("providers.%s: %w", name, err)
		}
	}
	return nil
}
