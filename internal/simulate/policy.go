package simulate

import (
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/sendgate/sendgate/internal/config"
	"github.com/sendgate/sendgate/internal/smtpsim"
)

// Scenario says what sendgate is told about the simulated providers' limits.
type Scenario string

// The scenarios of issue 8, and the built-in policy as shipped.
const (
	// Correct configures each provider's true (hidden) limits.
	Correct Scenario = "correct"
	// TooHigh configures limits Config.TooHighFactor times the hidden ones:
	// sendgate must learn the real ones from the replies.
	TooHigh Scenario = "too-high"
	// Unknown gives each provider the generous tiers of the built-in
	// policy's default section, as for a receiver nobody configured.
	Unknown Scenario = "unknown"
	// Builtin runs the built-in policy unchanged: its cautious guesses.
	Builtin Scenario = "builtin"
)

// Scenarios returns every scenario, in the order tables show them.
func Scenarios() []Scenario { return []Scenario{Correct, TooHigh, Unknown, Builtin} }

// ParseScenario returns the scenario named s.
func ParseScenario(s string) (Scenario, error) {
	for _, sc := range Scenarios() {
		if strings.EqualFold(string(sc), s) {
			return sc, nil
		}
	}
	return "", fmt.Errorf("unknown scenario %q (want correct, too-high, unknown or builtin)", s)
}

var tierKeys = [smtpsim.NumTiers]string{"minute", "hour", "day"}

// scenarioYAML returns the configuration file an operator would write for
// the scenario: per simulated provider, its tiers (and calendar day), plus
// the machine parameters of tuning (a YAML flow mapping such as
// "{probe_factor: 0.5}", or "").
func scenarioYAML(sc Scenario, profiles []smtpsim.Profile, factor float64, tuning string) (string, error) {
	base, err := config.Builtin()
	if err != nil {
		return "", fmt.Errorf("built-in policy: %w", err)
	}
	known := map[string]bool{}
	for _, p := range base.Providers {
		known[p.Name] = true
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# sendgate simulate: scenario %s\n", sc)
	var provs strings.Builder
	for _, p := range profiles {
		var lines []string
		if !known[p.Provider] {
			lines = append(lines, fmt.Sprintf("domains: [%s]", p.Domain))
		}
		var tiers []string
		switch sc {
		case Correct, TooHigh:
			f := 1.0
			if sc == TooHigh {
				f = factor
			}
			for t, l := range p.Limits {
				if l > 0 {
					tiers = append(tiers, fmt.Sprintf("%s: %d", tierKeys[t], uint64(math.Ceil(float64(l)*f))))
				}
			}
			// A day counted in natural windows is a calendar day in the
			// provider's zone, whatever the profile calls it.
			if p.Limits[smtpsim.Day] > 0 && (p.CalendarDay || p.Counting == smtpsim.Fixed) {
				loc := p.Location
				if loc == nil {
					loc = time.UTC
				}
				lines = append(lines, "calendar_day: true", fmt.Sprintf("timezone: %s", loc))
			}
		case Unknown:
			names := [...]string{"second", "minute", "hour", "day"}
			for t, l := range base.Policy.Default.Limits {
				if l > 0 {
					tiers = append(tiers, fmt.Sprintf("%s: %d", names[t], l))
				}
			}
		case Builtin:
		default:
			return "", fmt.Errorf("unknown scenario %q", sc)
		}
		if len(tiers) > 0 {
			lines = append(lines, fmt.Sprintf("tiers: {%s}", strings.Join(tiers, ", ")))
		}
		if tuning != "" {
			lines = append(lines, "machine: "+tuning)
		}
		if len(lines) > 0 {
			fmt.Fprintf(&provs, "  %s:\n", p.Provider)
			for _, l := range lines {
				fmt.Fprintf(&provs, "    %s\n", l)
			}
		}
	}
	if provs.Len() == 0 {
		b.WriteString("providers: {}\n")
	} else {
		b.WriteString("providers:\n")
		b.WriteString(provs.String())
	}
	return b.String(), nil
}
