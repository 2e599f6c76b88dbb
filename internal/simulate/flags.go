package simulate

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/sendgate/sendgate/internal/smtpsim"
)

// Flags are the command-line flags of `sendgate simulate`. Bind them with
// AddFlags, parse the flag set, then call Configs.
type Flags struct {
	scenario  string
	direct    bool
	compare   bool
	providers string
	counting  string
	limits    string
	ips       int
	mailers   int
	duration  time.Duration
	start     string
	backlog   int
	sendTime  time.Duration
	retry     time.Duration
	factor    float64
	tuning    string
	config    string
	// JSON prints each result as one line of JSON instead of tables.
	JSON bool
	// Quiet turns the progress bar off.
	Quiet bool
	// Check makes the command fail when a target of issue 8 is missed.
	Check bool
}

// AddFlags defines the simulate flags on fs and returns them.
func AddFlags(fs *flag.FlagSet) *Flags {
	f := &Flags{}
	fs.StringVar(&f.scenario, "scenario", string(Correct), "`scenario`: correct, too-high, unknown, builtin, or all")
	fs.BoolVar(&f.direct, "direct", false, "run the fleet without sendgate (send as fast as possible, retry after --retry)")
	fs.BoolVar(&f.compare, "compare", false, "run each scenario with and without sendgate, side by side")
	fs.StringVar(&f.providers, "providers", "qq", "simulated `providers`, comma-separated: qq, gmail, yahoo")
	fs.StringVar(&f.counting, "counting", "", "how the providers count their hidden limits: fixed (natural windows), sliding or bucket (default: each profile's own, fixed)")
	fs.StringVar(&f.limits, "limits", "", "hidden per-IP `limits` of every provider, e.g. minute=20,hour=300,day=5000 (default: each profile's own)")
	fs.IntVar(&f.ips, "ips", DefaultIPs, "number of sender IPs (127.0.0.2 upwards)")
	fs.IntVar(&f.mailers, "mailers", DefaultMailers, "number of mailers")
	fs.DurationVar(&f.duration, "duration", DefaultDuration, "virtual `duration` of the run")
	fs.StringVar(&f.start, "start", DefaultStart().Format(time.RFC3339), "virtual start `time` (RFC 3339)")
	fs.IntVar(&f.backlog, "backlog", 0, "messages to deliver per provider (0: unlimited)")
	fs.DurationVar(&f.sendTime, "send-time", DefaultSendTime, "virtual `time` one SMTP transaction takes")
	fs.DurationVar(&f.retry, "retry", DefaultRetryBackoff, "without sendgate: wait after a refusal")
	fs.Float64Var(&f.factor, "too-high-factor", DefaultTooHighFactor, "too-high: configured limits are the hidden ones times this")
	fs.StringVar(&f.tuning, "tuning", "", "state machine parameters for every simulated provider, as YAML, e.g. '{probe_factor: 0.5}'")
	fs.StringVar(&f.config, "config", "", "configuration `file` sendgate runs with, instead of the scenario's")
	fs.BoolVar(&f.JSON, "json", false, "print each result as one line of JSON")
	fs.BoolVar(&f.Quiet, "quiet", false, "no progress bar")
	fs.BoolVar(&f.Check, "check", false, "exit with an error when a target of issue 8 is missed")
	return f
}

// Configs returns the runs the flags ask for: one per scenario, or two with
// --compare (through sendgate, then direct). Errors name the flag.
func (f *Flags) Configs() ([]Config, error) {
	var scs []Scenario
	if f.scenario == "all" {
		scs = Scenarios()
	} else {
		for _, s := range strings.Split(f.scenario, ",") {
			sc, err := ParseScenario(strings.TrimSpace(s))
			if err != nil {
				return nil, fmt.Errorf("--scenario: %w", err)
			}
			scs = append(scs, sc)
		}
	}
	var profiles []smtpsim.Profile
	for _, name := range strings.Split(f.providers, ",") {
		p, err := smtpsim.ByName(strings.TrimSpace(name))
		if err != nil {
			return nil, fmt.Errorf("--providers: %w", err)
		}
		if f.counting != "" {
			c, err := smtpsim.ParseCounting(f.counting)
			if err != nil {
				return nil, fmt.Errorf("--counting: %w", err)
			}
			p.Counting = c
		}
		if f.limits != "" {
			l, err := parseLimits(f.limits)
			if err != nil {
				return nil, fmt.Errorf("--limits: %w", err)
			}
			p.Limits = l
			if p.CalendarDay && l[smtpsim.Day] == 0 {
				p.CalendarDay = false
			}
		}
		profiles = append(profiles, p)
	}
	start, err := time.Parse(time.RFC3339, f.start)
	if err != nil {
		return nil, fmt.Errorf("--start: %w", err)
	}
	start = start.In(DefaultStart().Location()) // shown in Beijing time
	var policy string
	if f.config != "" {
		b, err := os.ReadFile(f.config)
		if err != nil {
			return nil, fmt.Errorf("--config: %w", err)
		}
		policy = string(b)
	}
	base := Config{
		Providers: profiles, IPs: f.ips, Mailers: f.mailers, Duration: f.duration, Start: start,
		Backlog: f.backlog, SendTime: f.sendTime, RetryBackoff: f.retry, TooHighFactor: f.factor,
		Tuning: f.tuning, PolicyYAML: policy,
	}
	var out []Config
	for _, sc := range scs {
		c := base
		c.Scenario = sc
		if _, err := c.withDefaults(); err != nil {
			return nil, err
		}
		if f.compare {
			out = append(out, c)
			c.Direct = true
			out = append(out, c)
			continue
		}
		c.Direct = f.direct
		out = append(out, c)
	}
	return out, nil
}

// Progress returns where the progress bar goes: stderr, or nil with
// --quiet.
func (f *Flags) Progress(stderr io.Writer) io.Writer {
	if f.Quiet {
		return nil
	}
	return stderr
}

// Print writes the results as the flags ask: a table per result and, for
// several, a side-by-side summary; or one line of JSON per result. With
// --check it returns an error naming the missed targets.
func (f *Flags) Print(w io.Writer, results []Result) error {
	if f.JSON {
		enc := json.NewEncoder(w)
		for _, r := range results {
			if err := enc.Encode(r); err != nil {
				return fmt.Errorf("write json: %w", err)
			}
		}
	} else {
		for i, r := range results {
			if i > 0 {
				fmt.Fprintln(w)
			}
			fmt.Fprint(w, r.Table())
		}
		if len(results) > 1 {
			fmt.Fprintf(w, "\nside by side (all providers):\n%s", CompareTable(results))
		}
	}
	if !f.Check {
		return nil
	}
	var missed []string
	for _, r := range results {
		for _, t := range r.Targets {
			if !t.OK {
				missed = append(missed, fmt.Sprintf("%s: %s: want %s, got %s", r.Scenario, t.Name, t.Want, t.Got))
			}
		}
	}
	if len(missed) > 0 {
		return fmt.Errorf("targets missed:\n  %s", strings.Join(missed, "\n  "))
	}
	return nil
}

// parseLimits parses "minute=20,hour=300,day=5000".
func parseLimits(s string) (smtpsim.Limits, error) {
	var l smtpsim.Limits
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if !ok {
			return l, fmt.Errorf("%q is not tier=limit", kv)
		}
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			return l, fmt.Errorf("%s: %q is not a whole number", k, v)
		}
		switch k {
		case "minute":
			l[smtpsim.Minute] = n
		case "hour":
			l[smtpsim.Hour] = n
		case "day":
			l[smtpsim.Day] = n
		default:
			return l, fmt.Errorf("unknown tier %q (want minute, hour or day)", k)
		}
	}
	return l, nil
}
