// Package config loads sendgate's policy: providers (domains, MX patterns,
// tiers, time zone), reply rules, state machine parameters and DNS settings.
//
// The built-in policy (builtin.yaml, compiled in) is complete on its own:
// [Builtin] returns it. A configuration file overrides and extends it:
// [Load] and [Parse] merge the file over the built-in policy, and
// [Config.YAML] prints the effective result, which loads again to the same
// Config. builtin.yaml's header documents the schema.
//
// Merging: a provider named in the file replaces the built-in provider's
// fields that the file sets (a tiers map as a whole, machine parameters one
// by one); new providers are added. A rule whose id exists replaces that rule
// in place; a new id is added after the rules of its provider (generic rules
// always come last). disable_rules removes rules. The global machine, the
// default section and dns merge field by field.
//
// Every error names the file, the line and the path of the value:
// `sendgate.yaml:12: providers.tencent.tiers.minute: "abc" is not a whole
// number`. A Config is not modified after it is returned; share it freely.
package config

import (
	_ "embed" // builtin.yaml
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
	_ "time/tzdata" // provider time zones on machines without /usr/share/zoneinfo

	"github.com/sendgate/sendgate/internal/normalize"
	"github.com/sendgate/sendgate/internal/resolve"
	"github.com/sendgate/sendgate/limiter"
	"github.com/sendgate/sendgate/limiter/smtpreply"
)

//go:embed builtin.yaml
var builtinYAML []byte

// builtinName is the file name errors in the built-in policy carry.
const builtinName = "builtin.yaml"

// Config is an effective policy, validated.
type Config struct {
	// Policy holds the tiers, time zones and machine parameters of every
	// provider and of the default.
	Policy *limiter.Policy
	// Providers lists every provider with its domains and MX patterns, for
	// the resolver, in configuration order.
	Providers []resolve.Provider
	// Rules are the reply rules, in classification order within each
	// provider; generic rules last.
	Rules []smtpreply.Rule
	// DNS configures MX lookups.
	DNS DNSConfig

	// machine is the effective global machine, the base of every
	// provider's; YAML prints providers' parameters relative to it.
	machine limiter.Machine
}

// DNSConfig configures the MX lookups of provider resolution.
type DNSConfig struct {
	// Server is the DNS server, "ip:port"; empty means the system resolver.
	Server string
	// Timeout bounds how long a decision waits for a lookup.
	Timeout time.Duration
	// MinTTL and MaxTTL clamp how long an answer is cached.
	MinTTL, MaxTTL time.Duration
	// NegativeTTL is how long a failure is cached.
	NegativeTTL time.Duration
}

// Builtin returns the built-in policy.
func Builtin() (*Config, error) {
	m, err := builtinMerged()
	if err != nil {
		return nil, err
	}
	return build(m)
}

// Load reads the configuration file at path and merges it over the built-in
// policy. Errors name the file as path.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load config: %w", err)
	}
	return Parse(path, data)
}

// Parse is Load for a file already read; name is what errors call it.
func Parse(name string, data []byte) (*Config, error) {
	d, err := parseDoc(name, data)
	if err != nil {
		return nil, err
	}
	m, err := builtinMerged()
	if err != nil {
		return nil, err
	}
	if err := m.merge(d); err != nil {
		return nil, err
	}
	return build(m)
}

// Classifier returns a reply classifier for the configuration's rules.
func (c *Config) Classifier() (*smtpreply.Classifier, error) {
	return smtpreply.New(c.Rules)
}

// merged is the built-in policy with the files merged over it.
type merged struct {
	machine   machineSpec
	def       providerSpec
	providers []*providerSpec
	rules     []*ruleSpec
	dns       dnsSpec
}

func builtinMerged() (*merged, error) {
	d, err := parseDoc(builtinName, builtinYAML)
	if err != nil {
		return nil, fmt.Errorf("built-in policy: %w", err)
	}
	m := &merged{
		machine: machineSpec{path: "machine"},
		def:     providerSpec{path: "default", at: pos{file: builtinName}},
	}
	if err := m.merge(d); err != nil {
		return nil, fmt.Errorf("built-in policy: %w", err)
	}
	return m, nil
}

// merge applies one file.
func (m *merged) merge(d *doc) error {
	if d.machine != nil {
		m.machine.overlay(d.machine)
	}
	if d.def != nil {
		m.def.overlay(d.def)
	}
	for _, p := range d.providers {
		if i := slices.IndexFunc(m.providers, func(q *providerSpec) bool { return q.name == p.name }); i >= 0 {
			m.providers[i].overlay(p)
		} else {
			c := *p
			m.providers = append(m.providers, &c)
		}
	}
	defined := make(map[string]bool, len(d.rules))
	for _, r := range d.rules {
		defined[r.rule.ID] = true
		if i := m.ruleIndex(r.rule.ID); i >= 0 {
			m.rules[i] = r
		} else {
			m.rules = append(m.rules, r)
		}
	}
	for _, x := range d.disable {
		if defined[x.id] {
			return errAt(x.at, x.path, "rule %q is defined in this file too", x.id)
		}
		i := m.ruleIndex(x.id)
		if i < 0 {
			return errAt(x.at, x.path, "no rule %q", x.id)
		}
		m.rules = slices.Delete(m.rules, i, i+1)
	}
	for i := range numDNSFields {
		if d.dns.set[i] {
			m.dns.set[i], m.dns.at[i] = true, d.dns.at[i]
			switch i {
			case dnsServer:
				m.dns.cfg.Server = d.dns.cfg.Server
			case dnsTimeout:
				m.dns.cfg.Timeout = d.dns.cfg.Timeout
			case dnsMinTTL:
				m.dns.cfg.MinTTL = d.dns.cfg.MinTTL
			case dnsMaxTTL:
				m.dns.cfg.MaxTTL = d.dns.cfg.MaxTTL
			case dnsNegativeTTL:
				m.dns.cfg.NegativeTTL = d.dns.cfg.NegativeTTL
			}
		}
	}
	return nil
}

func (m *merged) ruleIndex(id string) int {
	return slices.IndexFunc(m.rules, func(r *ruleSpec) bool { return r.rule.ID == id })
}

// overlay sets in p what o sets.
func (p *providerSpec) overlay(o *providerSpec) {
	p.at = o.at
	if o.hasDomains {
		p.domains, p.domainsAt, p.hasDomains = o.domains, o.domainsAt, true
	}
	if o.hasMX {
		p.mx, p.mxAt, p.hasMX = o.mx, o.mxAt, true
	}
	if o.hasTZ {
		p.timezone, p.location, p.tzAt, p.hasTZ = o.timezone, o.location, o.tzAt, true
	}
	if o.hasCal {
		p.calendarDay, p.calAt, p.hasCal = o.calendarDay, o.calAt, true
	}
	if o.hasTiers {
		p.tiers, p.tiersAt, p.tierAt, p.hasTiers = o.tiers, o.tiersAt, o.tierAt, true
		// Tiers without a day tier replace a calendar day the file did not
		// ask for: a built-in calendar_day has nothing left to apply to.
		if !o.hasCal && o.tiers[limiter.Day] == 0 {
			p.calendarDay, p.hasCal = false, false
		}
	}
	p.machine.overlay(&o.machine)
}

// build validates a merged policy and turns it into a Config.
func build(m *merged) (*Config, error) {
	c := &Config{machine: limiter.DefaultMachine()}
	m.machine.applyTo(&c.machine)

	if !m.def.hasTiers {
		return nil, errAt(m.def.at, "default.tiers", "missing: the default needs tiers")
	}
	def, err := m.provider(&m.def, m.def.tiers, c.machine)
	if err != nil {
		return nil, err
	}
	c.Policy = &limiter.Policy{Providers: make(map[string]*limiter.Provider, len(m.providers)), Default: def}

	domainOwner := make(map[string]string)
	mxOwner := make(map[string]string)
	for _, ps := range m.providers {
		tiers := m.def.tiers
		if ps.hasTiers {
			tiers = ps.tiers
		}
		lp, err := m.provider(ps, tiers, c.machine)
		if err != nil {
			return nil, err
		}
		c.Policy.Providers[ps.name] = lp
		rp := resolve.Provider{Name: ps.name, Domains: slices.Clone(ps.domains), MXPatterns: slices.Clone(ps.mx)}
		for i, d := range ps.domains {
			path := fmt.Sprintf("%s.domains[%d]", ps.path, i)
			if err := checkDomain(d); err != nil {
				return nil, errAt(ps.domainsAt[i], path, "%w", err)
			}
			if owner, dup := domainOwner[d]; dup {
				return nil, errAt(ps.domainsAt[i], path, "%q already belongs to provider %q", d, owner)
			}
			domainOwner[d] = ps.name
		}
		for i, x := range ps.mx {
			path := fmt.Sprintf("%s.mx[%d]", ps.path, i)
			host, _ := strings.CutPrefix(x, "*.")
			if err := checkDomain(host); err != nil {
				return nil, errAt(ps.mxAt[i], path, "%w", err)
			}
			if owner, dup := mxOwner[x]; dup {
				return nil, errAt(ps.mxAt[i], path, "%q already belongs to provider %q", x, owner)
			}
			mxOwner[x] = ps.name
		}
		c.Providers = append(c.Providers, rp)
	}
	if err := c.Policy.Validate(); err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}

	// Rules: provider rules in order, then generic ones.
	specs := make([]*ruleSpec, 0, len(m.rules))
	for _, generic := range []bool{false, true} {
		for _, r := range m.rules {
			if (r.rule.Provider == "") == generic {
				specs = append(specs, r)
			}
		}
	}
	for _, r := range specs {
		if p := r.rule.Provider; p != "" {
			if _, ok := c.Policy.Providers[p]; !ok {
				return nil, errAt(r.fields["provider"], r.path+".provider", "unknown provider %q", p)
			}
		}
		if err := r.rule.Validate(); err != nil {
			return nil, r.placeError(err)
		}
		c.Rules = append(c.Rules, r.rule)
	}
	if _, err := smtpreply.New(c.Rules); err != nil {
		return nil, fmt.Errorf("rules: %w", err)
	}

	if err := m.dns.validate(); err != nil {
		return nil, err
	}
	c.DNS = m.dns.cfg
	return c, nil
}

// provider builds and validates one provider's policy.
func (m *merged) provider(ps *providerSpec, tiers limiter.Limits, global limiter.Machine) (*limiter.Provider, error) {
	lp := &limiter.Provider{
		Name:        ps.name,
		Limits:      tiers,
		CalendarDay: ps.calendarDay,
		Location:    ps.location,
		Machine:     global,
	}
	ps.machine.applyTo(&lp.Machine)
	if err := lp.Validate(); err != nil {
		return nil, m.placeProviderError(ps, err)
	}
	return lp, nil
}

// placeProviderError places a limiter.Provider.Validate error at the line
// of the value it names.
func (m *merged) placeProviderError(ps *providerSpec, err error) error {
	key, reason, ok := splitKey(err.Error())
	if !ok {
		return errAt(ps.at, ps.path, "%w", err)
	}
	path := join(ps.path, key)
	switch base, _, _ := strings.Cut(key, "."); {
	case base == "tiers":
		owner := ps
		if !ps.hasTiers {
			owner, path = &m.def, "default."+key
		}
		at := owner.tiersAt
		if _, name, ok := strings.Cut(key, "."); ok {
			if t, err := limiter.ParseTier(name); err == nil && owner.tierAt[t].line > 0 {
				at = owner.tierAt[t]
			}
		}
		if at.line == 0 {
			at = ps.at
		}
		return errAt(at, path, "%s", reason)
	case base == "calendar_day" && ps.hasCal:
		return errAt(ps.calAt, path, "%s", reason)
	}
	name, _, _ := strings.Cut(key, "[")
	if i := fieldIndex(name); i >= 0 {
		if ps.machine.set[i] {
			return errAt(ps.machine.at[i], join(ps.machine.path, key), "%s", reason)
		}
		if m.machine.set[i] {
			return errAt(m.machine.at[i], "machine."+key, "%s", reason)
		}
	}
	return errAt(ps.at, path, "%s", reason)
}

// checkDomain requires a domain in canonical form: lower-case ASCII, no
// trailing dot, valid labels.
func checkDomain(d string) error {
	if strings.Contains(d, "*") {
		return fmt.Errorf("%q: '*' only as a leading \"*.\" of an mx pattern", d)
	}
	nd, err := normalize.Domain(d)
	if err != nil {
		return err
	}
	if nd != d {
		return fmt.Errorf("%q is not canonical: write %q", d, nd)
	}
	return nil
}

func (s *dnsSpec) validate() error {
	c := s.cfg
	at := func(i int) pos { return s.at[i] }
	if c.Server != "" {
		host, port, ok := strings.Cut(c.Server, "]:")
		if ok {
			host = strings.TrimPrefix(host, "[")
		} else {
			i := strings.LastIndexByte(c.Server, ':')
			if i < 0 {
				return errAt(at(dnsServer), "dns.server", "%q is not ip:port", c.Server)
			}
			host, port = c.Server[:i], c.Server[i+1:]
		}
		addr, err := netip.ParseAddr(host)
		n, perr := strconv.ParseUint(port, 10, 16)
		if err != nil || addr.Zone() != "" || perr != nil || n == 0 || (!ok && addr.Is6()) {
			return errAt(at(dnsServer), "dns.server", "%q is not ip:port (like \"127.0.0.1:53\" or \"[::1]:53\")", c.Server)
		}
	}
	switch {
	case c.Timeout <= 0:
		return errAt(at(dnsTimeout), "dns.timeout", "%v is not positive", c.Timeout)
	case c.MinTTL > c.MaxTTL:
		return errAt(at(dnsMinTTL), "dns.min_ttl", "%v is above max_ttl %v", c.MinTTL, c.MaxTTL)
	}
	return nil
}
