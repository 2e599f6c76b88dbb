package config

import (
	"os"
	"strings"
	"testing"
)

// TestREADMEExample keeps the README's configuration example true: it must
// load, and do what the README says it does.
func TestREADMEExample(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	var block string
	for _, part := range strings.Split(string(b), "```yaml\n")[1:] {
		body, _, _ := strings.Cut(part, "```")
		if strings.Contains(body, "example-esp") {
			block = body
			break
		}
	}
	if block == "" {
		t.Fatal("README has no configuration example")
	}
	cfg, err := Parse("README.md", []byte(block))
	if err != nil {
		t.Fatalf("the README's example does not load: %v", err)
	}
	if p := cfg.Policy.For("example-esp"); p.Name != "example-esp" || p.Limits[1] != 100 {
		t.Fatalf("example-esp: %+v", p)
	}
	var found bool
	for _, r := range cfg.Rules {
		if r.ID == "tencent/ip-frequency-limited" {
			found = r.Override != nil && len(r.Override.Cooldowns) == 3 && r.Override.Cooldowns[0].Duration.Minutes() == 30
		}
		if r.ID == "comcast/residential" {
			t.Fatal("disable_rules did not remove comcast/residential")
		}
	}
	if !found {
		t.Fatal("the README's override of tencent/ip-frequency-limited did not take")
	}
	// The error the README shows.
	_, err = Parse("sendgate.yaml", []byte("providers:\n  tencent:\n    tiers:\n      minute: abc\n"))
	if err == nil || err.Error() != `sendgate.yaml:4: providers.tencent.tiers.minute: "abc" is not a whole number` {
		t.Fatalf("error: %v", err)
	}
}

// TestTiersWithoutDayDropInheritedCalendarDay: replacing a built-in
// provider's tiers with ones that have no day tier is not an error about the
// built-in calendar_day the operator never wrote.
func TestTiersWithoutDayDropInheritedCalendarDay(t *testing.T) {
	t.Parallel()
	cfg, err := Parse("sendgate.yaml", []byte("providers:\n  tencent:\n    tiers: {minute: 3, hour: 100}\n"))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if p := cfg.Policy.For("tencent"); p.CalendarDay || p.Limits[1] != 3 {
		t.Fatalf("tencent: calendar %v limits %v", p.CalendarDay, p.Limits)
	}
	// Written in the same file, it is still refused.
	_, err = Parse("sendgate.yaml", []byte("providers:\n  tencent:\n    calendar_day: true\n    tiers: {minute: 3}\n"))
	if err == nil {
		t.Fatal("calendar_day without a day tier in the same file accepted")
	}
}
