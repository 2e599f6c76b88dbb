package config

import (
	"bufio"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sendgate/sendgate/limiter"
	"github.com/sendgate/sendgate/limiter/smtpreply"
)

func TestBuiltin(t *testing.T) {
	t.Parallel()
	c, err := Builtin()
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"tencent", "netease", "google", "microsoft", "yahoo", "apple", "orange", "gmx", "mailru", "comcast"}
	var got []string
	for _, p := range c.Providers {
		got = append(got, p.Name)
		if len(p.Domains) == 0 || len(p.MXPatterns) == 0 {
			t.Errorf("provider %s: no domains or mx patterns", p.Name)
		}
		if _, ok := c.Policy.Providers[p.Name]; !ok {
			t.Errorf("provider %s: not in the policy", p.Name)
		}
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("providers = %v, want %v", got, want)
	}
	perProvider := make(map[string]int)
	for _, r := range c.Rules {
		perProvider[r.Provider]++
		if r.Description == "" || r.Source == "" {
			t.Errorf("rule %s: no description or source", r.ID)
		}
	}
	for _, name := range want {
		if perProvider[name] == 0 {
			t.Errorf("provider %s has no rules", name)
		}
	}
	tencent := c.Policy.Providers["tencent"]
	if !tencent.CalendarDay || tencent.Location.String() != "Asia/Shanghai" || tencent.Limits[limiter.Minute] != 30 {
		t.Errorf("tencent = %+v", tencent)
	}
	if got := c.Policy.Default.Limits; got != (limiter.Limits{0, 60, 2000, 20000}) {
		t.Errorf("default tiers = %v", got)
	}
	if c.DNS != (DNSConfig{Timeout: 500 * time.Millisecond, MinTTL: time.Minute, MaxTTL: 24 * time.Hour, NegativeTTL: time.Minute}) {
		t.Errorf("dns = %+v", c.DNS)
	}
	if c.Policy.Providers["google"].Machine.DecreaseFactor != limiter.DefaultMachine().DecreaseFactor {
		t.Errorf("google machine = %+v, want the defaults", c.Policy.Providers["google"].Machine)
	}
	// The QQ rule mirrors QQ's minute/hour/day blocks.
	for _, r := range c.Rules {
		if r.ID == "tencent/ip-frequency-limited" {
			want := []limiter.Cooldown{{Duration: 10 * time.Minute}, {Duration: 2 * time.Hour}, {DayEnd: true}}
			if r.Override == nil || !reflect.DeepEqual(r.Override.Cooldowns, want) {
				t.Errorf("tencent/ip-frequency-limited override = %+v", r.Override)
			}
		}
	}
	t.Logf("%d providers, %d rules (%v)", len(c.Providers), len(c.Rules), perProvider)
}

// TestReplies classifies every reply of testdata/smtp-replies.tsv with the
// built-in policy and reports every mismatch.
func TestReplies(t *testing.T) {
	t.Parallel()
	c, err := Builtin()
	if err != nil {
		t.Fatal(err)
	}
	cl, err := c.Classifier()
	if err != nil {
		t.Fatal(err)
	}
	providerOf := make(map[string]string)
	for _, p := range c.Providers {
		for _, d := range p.Domains {
			providerOf[d] = p.Name
		}
	}
	f, err := os.Open(filepath.Join("..", "..", "testdata", "smtp-replies.tsv"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	rows, bad := 0, 0
	for line := 1; sc.Scan(); line++ {
		text := sc.Text()
		if strings.TrimSpace(text) == "" || strings.HasPrefix(text, "#") {
			continue
		}
		cols := strings.SplitN(text, "\t", 5)
		if len(cols) != 5 {
			t.Errorf("line %d: %d columns, want 5", line, len(cols))
			continue
		}
		domain, enhanced, reply := cols[0], cols[2], cols[4]
		code, err := strconv.ParseUint(cols[1], 10, 32)
		if err != nil {
			t.Errorf("line %d: code %q: %v", line, cols[1], err)
			continue
		}
		want, err := limiter.ParseClass(cols[3])
		if err != nil {
			t.Errorf("line %d: %v", line, err)
			continue
		}
		provider, ok := providerOf[domain]
		if !ok {
			provider = domain
		}
		rows++
		got := cl.Classify(provider, uint32(code), enhanced, reply)
		if got.Class != want {
			bad++
			t.Errorf("line %d: %s %d %q %q: got %v (rule %q), want %v", line, provider, code, enhanced, reply, got.Class, got.Rule, want)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if rows < 59 {
		t.Errorf("only %d rows", rows)
	}
	t.Logf("%d/%d replies classified as expected", rows-bad, rows)
}

func mustParse(t *testing.T, yaml string) *Config {
	t.Helper()
	c, err := Parse("test.yaml", []byte(yaml))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return c
}

func ruleIDs(c *Config) []string {
	ids := make([]string, len(c.Rules))
	for i, r := range c.Rules {
		ids[i] = r.ID
	}
	return ids
}

func TestMerge(t *testing.T) {
	t.Parallel()
	builtin, err := Builtin()
	if err != nil {
		t.Fatal(err)
	}
	builtinIDs := ruleIDs(builtin)
	indexOf := func(ids []string, id string) int {
		for i, x := range ids {
			if x == id {
				return i
			}
		}
		return -1
	}
	tests := []struct {
		name  string
		yaml  string
		check func(t *testing.T, c *Config)
	}{
		{"empty file is the built-in policy", "", func(t *testing.T, c *Config) {
			assertSameConfig(t, c, builtin)
		}},
		{"comments only", "# nothing\n", func(t *testing.T, c *Config) {
			assertSameConfig(t, c, builtin)
		}},
		{"provider tiers replaced as a whole, other fields kept", `
providers:
  tencent:
    tiers: {minute: 10, day: 100}
`, func(t *testing.T, c *Config) {
			p := c.Policy.Providers["tencent"]
			if p.Limits != (limiter.Limits{0, 10, 0, 100}) {
				t.Errorf("limits = %v", p.Limits)
			}
			if !p.CalendarDay || p.Location.String() != "Asia/Shanghai" {
				t.Errorf("calendar day or zone lost: %+v", p)
			}
			if !reflect.DeepEqual(c.Providers[0].Domains, builtin.Providers[0].Domains) {
				t.Errorf("domains = %v", c.Providers[0].Domains)
			}
			if !reflect.DeepEqual(p.Machine, builtin.Policy.Providers["tencent"].Machine) {
				t.Errorf("machine changed: %+v", p.Machine)
			}
		}},
		{"domains replaced; a freed domain may move", `
providers:
  tencent:
    domains: [qq.com]
  fastmail:
    domains: [fastmail.com, foxmail.com]
    mx: ["*.messagingengine.com"]
`, func(t *testing.T, c *Config) {
			if got := c.Providers[0].Domains; !reflect.DeepEqual(got, []string{"qq.com"}) {
				t.Errorf("tencent domains = %v", got)
			}
			last := c.Providers[len(c.Providers)-1]
			if last.Name != "fastmail" || !reflect.DeepEqual(last.Domains, []string{"fastmail.com", "foxmail.com"}) {
				t.Errorf("new provider = %+v", last)
			}
			p := c.Policy.Providers["fastmail"]
			if p.Limits != builtin.Policy.Default.Limits || p.Location != nil || p.CalendarDay {
				t.Errorf("new provider without tiers should use default's: %+v", p)
			}
		}},
		{"default tiers apply to providers without their own", `
default:
  tiers: {hour: 50}
providers:
  newco:
    domains: [newco.example]
`, func(t *testing.T, c *Config) {
			if got := c.Policy.Default.Limits; got != (limiter.Limits{2: 50}) {
				t.Errorf("default = %v", got)
			}
			if got := c.Policy.Providers["newco"].Limits; got != (limiter.Limits{2: 50}) {
				t.Errorf("newco = %v", got)
			}
			if got := c.Policy.Providers["google"].Limits; got != builtin.Policy.Providers["google"].Limits {
				t.Errorf("google changed: %v", got)
			}
		}},
		{"global machine under provider machine", `
machine:
  decrease_factor: 0.3
  cooldowns: ["5m", "1h", "day-end>=6h"]
providers:
  google:
    machine: {probe_successes: 5, strike_decay: 2d}
default:
  machine: {history_size: 8}
`, func(t *testing.T, c *Config) {
			g := c.Policy.Providers["google"].Machine
			if g.DecreaseFactor != 0.3 || g.ProbeSuccesses != 5 || g.StrikeDecay != 48*time.Hour {
				t.Errorf("google machine = %+v", g)
			}
			want := []limiter.Cooldown{{Duration: 5 * time.Minute}, {Duration: time.Hour}, {DayEnd: true, Duration: 6 * time.Hour}}
			if !reflect.DeepEqual(g.Cooldowns, want) {
				t.Errorf("google cooldowns = %v", g.Cooldowns)
			}
			tc := c.Policy.Providers["tencent"].Machine
			if tc.DecreaseFactor != 0.3 || tc.Cooldowns[2] != (limiter.Cooldown{DayEnd: true}) {
				t.Errorf("tencent machine = %+v (keeps its own cooldowns)", tc)
			}
			if d := c.Policy.Default.Machine; d.HistorySize != 8 || d.DecreaseFactor != 0.3 {
				t.Errorf("default machine = %+v", d)
			}
			if c.Policy.Providers["yahoo"].Machine.HistorySize != 32 {
				t.Errorf("default's machine leaked into yahoo")
			}
		}},
		{"remediation_share 0 is kept, not defaulted", `
machine: {remediation_share: 0}
`, func(t *testing.T, c *Config) {
			if got := c.Policy.Providers["google"].Machine.RemediationShare; got != 0 {
				t.Errorf("remediation_share = %v", got)
			}
		}},
		{"rule replaced in place, new ones before the generic rules, disabled removed", `
rules:
  - id: tencent/ip-frequency-limited
    provider: tencent
    codes: [550]
    pattern: 'ip frequency limited'
    class: rate_limited
  - id: tencent/my-rule
    provider: tencent
    pattern: 'my words'
    class: content_rejected
  - id: default/my-generic
    codes: "5xx"
    pattern: 'go away'
    class: ip_blocked
disable_rules: [google/ptr-record, default/rate-limited]
`, func(t *testing.T, c *Config) {
			ids := ruleIDs(c)
			if i, j := indexOf(ids, "tencent/ip-frequency-limited"), indexOf(builtinIDs, "tencent/ip-frequency-limited"); i != j {
				t.Errorf("replaced rule moved from %d to %d", j, i)
			}
			r := c.Rules[indexOf(ids, "tencent/ip-frequency-limited")]
			if r.Class != limiter.RateLimited || r.Override != nil {
				t.Errorf("replaced rule = %+v", r)
			}
			firstGeneric := indexOf(ids, "default/mailbox-status")
			if i := indexOf(ids, "tencent/my-rule"); i < 0 || i > firstGeneric {
				t.Errorf("new provider rule at %d, first generic at %d", i, firstGeneric)
			}
			if ids[len(ids)-1] != "default/my-generic" {
				t.Errorf("new generic rule not last: %v", ids[len(ids)-3:])
			}
			if indexOf(ids, "google/ptr-record") >= 0 || indexOf(ids, "default/rate-limited") >= 0 {
				t.Errorf("disabled rules still there")
			}
			if len(ids) != len(builtinIDs)+2-2 {
				t.Errorf("%d rules, want %d", len(ids), len(builtinIDs))
			}
			cl, err := c.Classifier()
			if err != nil {
				t.Fatal(err)
			}
			if got := cl.Classify("tencent", 550, "", "550 MY WORDS"); got.Rule != "tencent/my-rule" {
				t.Errorf("new rule not used: %+v", got)
			}
		}},
		{"dns merges field by field", `
dns:
  server: "127.0.0.1:5353"
  max_ttl: 2h
`, func(t *testing.T, c *Config) {
			want := builtin.DNS
			want.Server, want.MaxTTL = "127.0.0.1:5353", 2*time.Hour
			if c.DNS != want {
				t.Errorf("dns = %+v, want %+v", c.DNS, want)
			}
		}},
		{"codes, enhanced, trigger and override forms", `
rules:
  - id: default/forms
    codes: [421, "4xx", 0]
    enhanced: "x.7.1"
    class: connection_limited
    trigger: {share: 0.5, min_attempts: 10, window: 1d}
    override: {decrease_factor: 0.25, cooldowns: ["1m"]}
`, func(t *testing.T, c *Config) {
			r := c.Rules[len(c.Rules)-1]
			want := smtpreply.Rule{ID: "default/forms", Codes: []uint32{421, 4, 0}, Enhanced: []string{"x.7.1"},
				Class: limiter.ConnectionLimited, Trigger: &limiter.Trigger{Share: 0.5, MinAttempts: 10, Window: 24 * time.Hour},
				Override: &limiter.Override{DecreaseFactor: 0.25, Cooldowns: []limiter.Cooldown{{Duration: time.Minute}}}}
			if !reflect.DeepEqual(r, want) {
				t.Errorf("rule = %+v, want %+v", r, want)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := mustParse(t, tt.yaml)
			tt.check(t, c)
			assertRoundTrip(t, c)
		})
	}
}

func TestErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		yaml string
		want string
	}{
		{"not a whole number", "providers:\n  tencent:\n    tiers: {minute: abc}\n",
			`test.yaml:3: providers.tencent.tiers.minute: "abc" is not a whole number`},
		{"negative tier", "providers:\n  tencent:\n    tiers:\n      minute: -5\n",
			`test.yaml:4: providers.tencent.tiers.minute: "-5" is not a whole number`},
		{"tier too large", "default:\n  tiers: {day: 2000000000000}\n",
			`test.yaml:2: default.tiers.day: 2000000000000 is too large`},
		{"unknown tier", "default:\n  tiers: {week: 5}\n",
			`test.yaml:2: default.tiers: unknown tier "week"`},
		{"no tier", "providers:\n  google:\n    tiers: {}\n",
			`test.yaml:3: providers.google.tiers: no tier has a limit`},
		{"unknown top-level key", "\nprovider: {}\n", `test.yaml:2: unknown key "provider"`},
		{"unknown provider key", "providers:\n  tencent:\n    tier: {minute: 1}\n",
			`test.yaml:3: providers.tencent: unknown key "tier"`},
		{"domains under default", "default:\n  domains: [x.com]\n", `test.yaml:2: default: unknown key "domains"`},
		{"unknown machine key", "machine:\n  decrease: 0.5\n", `test.yaml:2: machine: unknown key "decrease"`},
		{"machine range", "providers:\n  google:\n    machine:\n      decrease_factor: 1.5\n",
			`test.yaml:4: providers.google.machine.decrease_factor: 1.5 is not between 0 and 1 (exclusive)`},
		{"machine not a number", "machine:\n  ramp_step: lots\n", `test.yaml:2: machine.ramp_step: "lots" is not a number`},
		{"bad duration", "machine:\n  ramp_interval: 10 minutes\n",
			`test.yaml:2: machine.ramp_interval: "10 minutes" is not a duration`},
		{"negative duration", "machine:\n  ramp_interval: -1m\n", `test.yaml:2: machine.ramp_interval: "-1m" is negative`},
		{"cooldown order", "machine:\n  cooldowns: [\"2h\", \"10m\"]\n",
			`test.yaml:2: machine.cooldowns[1]: 10m0s is shorter than the rung before it`},
		{"bad cooldown", "machine:\n  cooldowns:\n    - 10m\n    - day-end<4h\n",
			`test.yaml:4: machine.cooldowns[1]: "day-end<4h" is not a cooldown`},
		{"unknown time zone", "providers:\n  tencent:\n    timezone: Asia/Beijing\n",
			`test.yaml:3: providers.tencent.timezone: unknown time zone "Asia/Beijing"`},
		{"calendar day without day tier", "providers:\n  newco:\n    domains: [newco.example]\n    tiers: {minute: 5}\n    calendar_day: true\n",
			`test.yaml:5: providers.newco.calendar_day: set, but there is no day tier`},
		{"not a bool", "providers:\n  newco:\n    calendar_day: yes please\n",
			`test.yaml:3: providers.newco.calendar_day: "yes please" is not true or false`},
		{"domain not lower-case", "providers:\n  newco:\n    domains:\n      - NewCo.example\n",
			`test.yaml:4: providers.newco.domains[0]: "NewCo.example" is not canonical: write "newco.example"`},
		{"domain in two providers", "providers:\n  newco:\n    domains: [newco.example, gmail.com]\n",
			`test.yaml:3: providers.newco.domains[1]: "gmail.com" already belongs to provider "google"`},
		{"bad mx pattern", "providers:\n  newco:\n    mx: [\"*.*.example\"]\n",
			`test.yaml:3: providers.newco.mx[0]: "*.example": '*' only as a leading "*." of an mx pattern`},
		{"mx pattern in two providers", "providers:\n  newco:\n    mx: [\"*.google.com\"]\n",
			`test.yaml:3: providers.newco.mx[0]: "*.google.com" already belongs to provider "google"`},
		{"bad provider name", "providers:\n  NewCo: {}\n", `test.yaml:2: providers.NewCo: provider names are lower-case`},
		{"provider named default", "providers:\n  default: {}\n", `test.yaml:2: providers.default: provider names`},
		{"bad regexp", "rules:\n  - id: tencent/x\n    provider: tencent\n    pattern: '(abc'\n    class: ip_blocked\n",
			"test.yaml:4: rules[0].pattern: error parsing regexp: missing closing ): `(abc`"},
		{"unknown rule provider", "rules:\n  - id: nobody/x\n    provider: nobody\n    class: ip_blocked\n",
			`test.yaml:3: rules[0].provider: unknown provider "nobody"`},
		{"unknown class", "rules:\n  - id: default/x\n    class: blocked\n",
			`test.yaml:3: rules[0].class: unknown classification "blocked"`},
		{"not attempted class", "rules:\n  - id: default/x\n    class: not_attempted\n",
			`test.yaml:3: rules[0].class: NOT_ATTEMPTED`},
		{"missing class", "rules:\n  - id: default/x\n    pattern: x\n", `test.yaml:2: rules[0].class: missing`},
		{"missing id", "rules:\n  - class: ip_blocked\n", `test.yaml:2: rules[0].id: missing`},
		{"id prefix", "rules:\n  - id: google/x\n    class: ip_blocked\n",
			`test.yaml:2: rules[0].id: "google/x" is not of the form "default/<slug>"`},
		{"id twice in a file", "rules:\n  - {id: default/x, class: ip_blocked}\n  - {id: default/x, class: ip_blocked}\n",
			`test.yaml:3: rules[1].id: "default/x" listed twice (first at line 2)`},
		{"bad code", "rules:\n  - id: default/x\n    codes: [\"6xx\"]\n    class: ip_blocked\n",
			`test.yaml:3: rules[0].codes[0]: "6xx" is not a reply code`},
		{"bad enhanced", "rules:\n  - id: default/x\n    enhanced: [\"5.7\"]\n    class: ip_blocked\n",
			`test.yaml:3: rules[0].enhanced: "5.7" is not an enhanced code`},
		{"trigger count and share", "rules:\n  - id: default/x\n    class: ip_blocked\n    trigger:\n      count: 3\n      share: 0.5\n      window: 1h\n",
			`test.yaml:4: rules[0].trigger: count and share exclude each other`},
		{"trigger without window", "rules:\n  - id: default/x\n    class: ip_blocked\n    trigger: {count: 3}\n",
			`test.yaml:4: rules[0].trigger.window: 0s is not positive`},
		{"unknown trigger key", "rules:\n  - id: default/x\n    class: ip_blocked\n    trigger: {times: 3}\n",
			`test.yaml:4: rules[0].trigger: unknown key "times"`},
		{"override factor", "rules:\n  - id: default/x\n    class: ip_blocked\n    override:\n      decrease_factor: 2\n",
			`test.yaml:5: rules[0].override.decrease_factor: 2 is not between 0 and 1`},
		{"disable unknown rule", "disable_rules:\n  - default/x\n  - google/nope\n", `test.yaml:2: disable_rules[0]: no rule "default/x"`},
		{"disable and define", "rules:\n  - {id: default/x, class: ip_blocked}\ndisable_rules: [default/x]\n",
			`test.yaml:3: disable_rules[0]: rule "default/x" is defined in this file too`},
		{"dns server", "dns:\n  server: 8.8.8.8\n", `test.yaml:2: dns.server: "8.8.8.8" is not ip:port`},
		{"dns server host", "dns:\n  server: dns.example:53\n", `test.yaml:2: dns.server: "dns.example:53" is not ip:port`},
		{"dns ttl order", "dns:\n  min_ttl: 2h\n  max_ttl: 1h\n", `test.yaml:2: dns.min_ttl: 2h0m0s is above max_ttl 1h0m0s`},
		{"dns timeout", "dns:\n  timeout: 0s\n", `test.yaml:2: dns.timeout: 0s is not positive`},
		{"yaml syntax", "providers:\n  tencent:\n    tiers: {minute: 5\n", `test.yaml:3: did not find expected ',' or '}'`},
		{"duplicate key", "providers:\n  tencent: {}\n  tencent: {}\n", `test.yaml:3: providers.tencent: given twice (first at line 2)`},
		{"mapping expected", "providers: [tencent]\n", `test.yaml:1: providers: expected a mapping, found a list`},
		{"list expected", "providers:\n  google:\n    domains: gmail.com\n",
			`test.yaml:3: providers.google.domains: expected a list, found "gmail.com"`},
		{"merge key", "providers:\n  a: &x {domains: [a.example]}\n  b:\n    <<: *x\n", `test.yaml:4: providers.b: merge keys (<<) are not supported`},
		{"top level not a mapping", "- a\n", `test.yaml:1: expected a mapping, found a list`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := Parse("test.yaml", []byte(tt.yaml))
			if err == nil {
				t.Fatalf("Parse succeeded, want error %q", tt.want)
			}
			if !strings.HasPrefix(err.Error(), tt.want) {
				t.Fatalf("error\n %q\nwant prefix\n %q", err, tt.want)
			}
		})
	}
}

func TestLoad(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "sendgate.yaml")
	if err := os.WriteFile(path, []byte("providers:\n  tencent:\n    tiers: {minute: abc}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Load(path)
	if want := path + `:3: providers.tencent.tiers.minute: "abc" is not a whole number`; err == nil || err.Error() != want {
		t.Errorf("Load error = %v, want %s", err, want)
	}
	if _, err := Load(filepath.Join(dir, "missing.yaml")); err == nil || !strings.Contains(err.Error(), "load config: ") {
		t.Errorf("Load of a missing file: %v", err)
	}
	if err := os.WriteFile(path, []byte("dns: {timeout: 2s}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(path)
	if err != nil || c.DNS.Timeout != 2*time.Second {
		t.Errorf("Load = %+v, %v", c, err)
	}
}

func TestDurations(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		in   string
		want time.Duration
	}{
		{"90s", 90 * time.Second}, {"2h", 2 * time.Hour}, {"1d", 24 * time.Hour}, {"1d12h", 36 * time.Hour},
		{"500ms", 500 * time.Millisecond}, {"0s", 0}, {" 10m ", 10 * time.Minute},
	} {
		got, err := parseDuration(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("parseDuration(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
		if back, err := parseDuration(fmtDuration(got)); err != nil || back != got {
			t.Errorf("fmtDuration(%v) = %q does not read back: %v, %v", got, fmtDuration(got), back, err)
		}
	}
	for _, in := range []string{"", "d", "1x", "xd", "-1m", "1d-1h", "999999999d"} {
		if got, err := parseDuration(in); err == nil {
			t.Errorf("parseDuration(%q) = %v, want an error", in, got)
		}
	}
	for d, want := range map[time.Duration]string{
		10 * time.Minute: "10m", 2 * time.Hour: "2h", 90 * time.Minute: "1h30m", 48 * time.Hour: "2d",
		36 * time.Hour: "36h", 90 * time.Second: "1m30s", 0: "0s", 1500 * time.Millisecond: "1.5s",
	} {
		if got := fmtDuration(d); got != want {
			t.Errorf("fmtDuration(%v) = %q, want %q", d, got, want)
		}
	}
}

func TestRoundTripBuiltin(t *testing.T) {
	t.Parallel()
	c, err := Builtin()
	if err != nil {
		t.Fatal(err)
	}
	assertRoundTrip(t, c)
}

// assertRoundTrip checks that c.YAML() loads to a Config equal to c, and
// prints the same again.
func assertRoundTrip(t *testing.T, c *Config) {
	t.Helper()
	out, err := c.YAML()
	if err != nil {
		t.Fatalf("YAML: %v", err)
	}
	c2, err := Parse("effective.yaml", out)
	if err != nil {
		t.Fatalf("loading YAML() output: %v\n%s", err, out)
	}
	assertSameConfig(t, c2, c)
	out2, err := c2.YAML()
	if err != nil {
		t.Fatal(err)
	}
	if string(out) != string(out2) {
		t.Errorf("YAML() is not stable:\n%s\n---\n%s", out, out2)
	}
}

func assertSameConfig(t *testing.T, got, want *Config) {
	t.Helper()
	if !reflect.DeepEqual(got.Providers, want.Providers) {
		t.Errorf("providers differ:\n%+v\n%+v", got.Providers, want.Providers)
	}
	if !reflect.DeepEqual(got.Rules, want.Rules) {
		for i := range min(len(got.Rules), len(want.Rules)) {
			if !reflect.DeepEqual(got.Rules[i], want.Rules[i]) {
				t.Errorf("rule %d differs:\n%+v\n%+v", i, got.Rules[i], want.Rules[i])
				break
			}
		}
		t.Errorf("rules differ (%d and %d)", len(got.Rules), len(want.Rules))
	}
	if got.DNS != want.DNS {
		t.Errorf("dns = %+v, want %+v", got.DNS, want.DNS)
	}
	samePolicy := func(name string, a, b *limiter.Provider) {
		if a == nil || b == nil {
			t.Errorf("%s: missing (%v, %v)", name, a, b)
			return
		}
		la, lb := "", ""
		if a.Location != nil {
			la = a.Location.String()
		}
		if b.Location != nil {
			lb = b.Location.String()
		}
		if a.Name != b.Name || a.Limits != b.Limits || a.CalendarDay != b.CalendarDay || la != lb || !reflect.DeepEqual(a.Machine, b.Machine) {
			t.Errorf("%s differs:\n%+v %s\n%+v %s", name, a, la, b, lb)
		}
	}
	samePolicy("default", got.Policy.Default, want.Policy.Default)
	if len(got.Policy.Providers) != len(want.Policy.Providers) {
		t.Errorf("%d providers in the policy, want %d", len(got.Policy.Providers), len(want.Policy.Providers))
	}
	for name, p := range want.Policy.Providers {
		samePolicy(name, got.Policy.Providers[name], p)
	}
}

// A configuration that touches every kind of setting prints and loads back.
func TestRoundTripCustom(t *testing.T) {
	t.Parallel()
	c := mustParse(t, `
dns: {server: "[::1]:53", timeout: 750ms, negative_ttl: 30s}
machine: {decrease_factor: 0.4, cooldowns: ["15m", "day-end>=1h30m"], remediation_share: 0}
default:
  tiers: {second: 2, minute: 50}
  timezone: Europe/Paris
  machine: {probe_interval: 90s}
providers:
  tencent:
    machine: {history_size: 64}
  newco:
    domains: [newco.example, "007.example"]
    mx: [mx.newco.example]
    calendar_day: true
    timezone: America/Sao_Paulo
    tiers: {hour: 100, day: 1000}
rules:
  - id: newco/odd
    provider: newco
    codes: [0, "2xx", 451]
    pattern: "it's \"quoted\"\\s+and: colon # not a comment"
    class: transient
    description: "yes"
    source: "123"
  - id: google/rate-limited
    provider: google
    enhanced: ["4.7.28"]
    class: rate_limited
    trigger: {count: 5, window: 90s}
disable_rules: [comcast/reverse-dns, default/auth]
`)
	assertRoundTrip(t, c)
	out, err := c.YAML()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), "disable_rules: [comcast/reverse-dns, default/auth]") {
		t.Errorf("disable_rules missing from:\n%s", out)
	}
}

func BenchmarkClassifyBuiltin(b *testing.B) {
	c, err := Builtin()
	if err != nil {
		b.Fatal(err)
	}
	cl, err := c.Classifier()
	if err != nil {
		b.Fatal(err)
	}
	for _, r := range []struct {
		name, provider, text string
		code                 uint32
	}{
		{"gmail-421-4.7.28", "google", "421-4.7.28 [203.0.113.42] Our system has detected an unusual rate of unsolicited mail originating from your IP address. To protect our users from spam, mail sent from your IP address has been temporarily rate limited. Please visit https://support.google.com/mail/?p=UnsolicitedRateLimitError to review our Bulk Email Senders Guidelines. a1si123456wmq.12 - gsmtp", 421},
		{"qq-550", "tencent", "550 Ip frequency limited. http://service.mail.qq.com/cgi-bin/help?subtype=1&&id=20022&&no=1000725", 550},
		{"unknown-550-default", "example.org", "550 5.7.1 <user@example.org>: Relay access denied", 550},
	} {
		b.Run(r.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				cl.Classify(r.provider, r.code, "", r.text)
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(""))
	f.Add([]byte("providers:\n  tencent:\n    tiers: {minute: 10, day: 100}\n"))
	f.Add([]byte("rules:\n  - {id: default/x, codes: 5xx, pattern: 'a|b', class: ip_blocked}\n"))
	f.Add([]byte("machine: {cooldowns: [day-end>=1d]}\ndns: {server: '127.0.0.1:53'}\n"))
	f.Add([]byte("a: &x [*x]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse("fuzz.yaml", data)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "fuzz.yaml") {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		out, err := c.YAML()
		if err != nil {
			t.Fatalf("YAML: %v", err)
		}
		if _, err := Parse("effective.yaml", out); err != nil {
			t.Fatalf("YAML() output does not load: %v\n%s", err, out)
		}
	})
}
