package config

import (
	"errors"
	"fmt"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/sendgate/sendgate/limiter"
	"github.com/sendgate/sendgate/limiter/smtpreply"
)

// pos is a place in a configuration file.
type pos struct {
	file string
	line int
}

// posError is an error at a place in a file: "sendgate.yaml:12:
// providers.tencent.tiers.minute: "abc" is not a whole number".
type posError struct {
	at   pos
	path string
	err  error
}

func (e *posError) Error() string {
	where := e.at.file
	if e.at.line > 0 {
		where += ":" + strconv.Itoa(e.at.line)
	}
	if e.path == "" {
		return where + ": " + e.err.Error()
	}
	return where + ": " + e.path + ": " + e.err.Error()
}

func (e *posError) Unwrap() error { return e.err }

func errAt(at pos, path, format string, args ...any) error {
	return &posError{at: at, path: path, err: fmt.Errorf(format, args...)}
}

// doc is what one file says, with where it says it.
type doc struct {
	file      string
	machine   *machineSpec
	def       *providerSpec
	providers []*providerSpec
	rules     []*ruleSpec
	disable   []idAt
	dns       dnsSpec
}

type idAt struct {
	id   string
	at   pos
	path string
}

// machineSpec is a partial limiter.Machine: the fields a section sets.
type machineSpec struct {
	vals limiter.Machine
	set  [numMachineFields]bool
	at   [numMachineFields]pos
	path string // "providers.tencent.machine"
}

// providerSpec is what a section says about a provider (or, with path
// "default", about the default policy).
type providerSpec struct {
	name string
	at   pos
	path string

	domains, mx         []string
	domainsAt, mxAt     []pos // of each item
	hasDomains, hasMX   bool
	timezone            string
	location            *time.Location
	tzAt                pos
	hasTZ               bool
	calendarDay, hasCal bool
	calAt               pos
	tiers               limiter.Limits
	tiersAt             pos
	tierAt              [limiter.NumTiers]pos
	hasTiers            bool
	machine             machineSpec
}

// ruleSpec is one rule with where its fields are.
type ruleSpec struct {
	rule   smtpreply.Rule
	at     pos
	path   string         // "rules[3]"
	fields map[string]pos // "pattern", "trigger.window", ...
}

// dnsSpec is a partial DNSConfig.
type dnsSpec struct {
	cfg DNSConfig
	set [numDNSFields]bool
	at  [numDNSFields]pos
}

const (
	dnsServer = iota
	dnsTimeout
	dnsMinTTL
	dnsMaxTTL
	dnsNegativeTTL
	numDNSFields
)

var dnsKeys = [numDNSFields]string{"server", "timeout", "min_ttl", "max_ttl", "negative_ttl"}

// machineField describes one key of a machine section. ptr returns a pointer
// to the field in m: *float64, *time.Duration, *int or *[]limiter.Cooldown.
type machineField struct {
	key string
	ptr func(m *limiter.Machine) any
}

// machineFields lists the machine keys, named as in limiter.Machine.Validate.
var machineFields = [...]machineField{
	{"burst", func(m *limiter.Machine) any { return &m.Burst }},
	{"decrease_factor", func(m *limiter.Machine) any { return &m.DecreaseFactor }},
	{"connection_decrease_factor", func(m *limiter.Machine) any { return &m.ConnectionDecreaseFactor }},
	{"factor_floor", func(m *limiter.Machine) any { return &m.FactorFloor }},
	{"adjust_interval", func(m *limiter.Machine) any { return &m.AdjustInterval }},
	{"ramp_interval", func(m *limiter.Machine) any { return &m.RampInterval }},
	{"ramp_step", func(m *limiter.Machine) any { return &m.RampStep }},
	{"cooldowns", func(m *limiter.Machine) any { return &m.Cooldowns }},
	{"strike_decay", func(m *limiter.Machine) any { return &m.StrikeDecay }},
	{"probe_interval", func(m *limiter.Machine) any { return &m.ProbeInterval }},
	{"probe_successes", func(m *limiter.Machine) any { return &m.ProbeSuccesses }},
	{"probe_factor", func(m *limiter.Machine) any { return &m.ProbeFactor }},
	{"ceiling_margin", func(m *limiter.Machine) any { return &m.CeilingMargin }},
	{"ceiling_rise_interval", func(m *limiter.Machine) any { return &m.CeilingRiseInterval }},
	{"ceiling_rise_step", func(m *limiter.Machine) any { return &m.CeilingRiseStep }},
	{"remediation_share", func(m *limiter.Machine) any { return &m.RemediationShare }},
	{"remediation_probe_interval", func(m *limiter.Machine) any { return &m.RemediationProbeInterval }},
	{"history_size", func(m *limiter.Machine) any { return &m.HistorySize }},
}

const numMachineFields = len(machineFields)

// copyField copies field i from src to dst.
func copyField(i int, dst, src *limiter.Machine) {
	f := machineFields[i]
	switch d := f.ptr(dst).(type) {
	case *float64:
		*d = *f.ptr(src).(*float64)
	case *time.Duration:
		*d = *f.ptr(src).(*time.Duration)
	case *int:
		*d = *f.ptr(src).(*int)
	case *[]limiter.Cooldown:
		*d = slices.Clone(*f.ptr(src).(*[]limiter.Cooldown))
	}
}

// applyTo sets the fields s sets in m.
func (s *machineSpec) applyTo(m *limiter.Machine) {
	for i := range machineFields {
		if s.set[i] {
			copyField(i, m, &s.vals)
		}
	}
}

// overlay sets in s the fields o sets.
func (s *machineSpec) overlay(o *machineSpec) {
	for i := range machineFields {
		if o.set[i] {
			copyField(i, &s.vals, &o.vals)
			s.set[i] = true
			s.at[i] = o.at[i]
		}
	}
}

// fieldIndex returns the index of a machine key, or -1.
func fieldIndex(key string) int {
	for i, f := range machineFields {
		if f.key == key {
			return i
		}
	}
	return -1
}

// parser reads one file's YAML tree.
type parser struct {
	file string
}

var yamlLineRE = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// parseDoc parses one configuration file. An empty file is valid and says
// nothing.
func parseDoc(file string, data []byte) (*doc, error) {
	p := &parser{file: file}
	d := &doc{file: file}
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, p.yamlError(err)
	}
	if root.Kind == 0 || len(root.Content) == 0 {
		return d, nil
	}
	top := root.Content[0]
	if isNull(top) {
		return d, nil
	}
	pairs, err := p.mapping(top, "")
	if err != nil {
		return nil, err
	}
	for _, kv := range pairs {
		switch kv.key {
		case "providers":
			err = p.providers(kv.v, d)
		case "default":
			d.def, err = p.provider(kv.v, "", "default", false)
			if d.def != nil {
				d.def.at = p.pos(kv.k)
			}
		case "machine":
			var m machineSpec
			m, err = p.machine(kv.v, "machine")
			d.machine = &m
		case "rules":
			d.rules, err = p.rules(kv.v)
		case "disable_rules":
			d.disable, err = p.idList(kv.v, "disable_rules")
		case "dns":
			d.dns, err = p.dns(kv.v)
		default:
			err = p.unknownKey(kv.k, "")
		}
		if err != nil {
			return nil, err
		}
	}
	return d, nil
}

func (p *parser) yamlError(err error) error {
	msg := err.Error()
	var te *yaml.TypeError
	if errors.As(err, &te) && len(te.Errors) > 0 {
		msg = te.Errors[0]
	}
	msg = strings.TrimPrefix(strings.TrimSpace(msg), "yaml: unmarshal errors:\n")
	msg = strings.TrimSpace(msg)
	if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		if strings.HasPrefix(m[2], "did not find expected") {
			// yaml.v3 reports the lines of parser (not scanner) errors
			// counting from 0.
			line++
		}
		return errAt(pos{p.file, line}, "", "%s", m[2])
	}
	return errAt(pos{file: p.file}, "", "%s", strings.TrimPrefix(msg, "yaml: "))
}

func (p *parser) pos(n *yaml.Node) pos { return pos{file: p.file, line: n.Line} }

// kv is one key of a mapping.
type kv struct {
	key  string
	k, v *yaml.Node
}

func deref(n *yaml.Node) *yaml.Node {
	for i := 0; n.Kind == yaml.AliasNode && n.Alias != nil && i < 100; i++ {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	n = deref(n)
	return n.Kind == yaml.ScalarNode && n.Tag == "!!null"
}

func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		if n.Tag == "!!null" {
			return "nothing"
		}
		return strconv.Quote(n.Value)
	}
	return "something else"
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// mapping returns the keys of a mapping node in order; null is an empty
// mapping. Duplicate and merge ("<<") keys are errors.
func (p *parser) mapping(n *yaml.Node, path string) ([]kv, error) {
	n = deref(n)
	if isNull(n) {
		return nil, nil
	}
	if n.Kind != yaml.MappingNode {
		return nil, errAt(p.pos(n), path, "expected a mapping, found %s", describe(n))
	}
	out := make([]kv, 0, len(n.Content)/2)
	seen := make(map[string]int, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := deref(n.Content[i])
		if k.Kind != yaml.ScalarNode {
			return nil, errAt(p.pos(k), path, "a key must be a plain word, found %s", describe(k))
		}
		if k.Value == "<<" {
			return nil, errAt(p.pos(k), path, "merge keys (<<) are not supported")
		}
		if first, dup := seen[k.Value]; dup {
			return nil, errAt(p.pos(k), join(path, k.Value), "given twice (first at line %d)", first)
		}
		seen[k.Value] = k.Line
		out = append(out, kv{key: k.Value, k: k, v: n.Content[i+1]})
	}
	return out, nil
}

// sequence returns the items of a list; null is an empty list.
func (p *parser) sequence(n *yaml.Node, path string) ([]*yaml.Node, error) {
	n = deref(n)
	if isNull(n) {
		return nil, nil
	}
	if n.Kind != yaml.SequenceNode {
		return nil, errAt(p.pos(n), path, "expected a list, found %s", describe(n))
	}
	return n.Content, nil
}

// listOrScalar is sequence, accepting a single scalar as a list of one.
func (p *parser) listOrScalar(n *yaml.Node, path string) ([]*yaml.Node, error) {
	if d := deref(n); d.Kind == yaml.ScalarNode && !isNull(d) {
		return []*yaml.Node{d}, nil
	}
	return p.sequence(n, path)
}

func (p *parser) unknownKey(k *yaml.Node, path string) error {
	return errAt(p.pos(k), path, "unknown key %q", k.Value)
}

func (p *parser) scalar(n *yaml.Node, path string) (string, error) {
	n = deref(n)
	if n.Kind != yaml.ScalarNode || n.Tag == "!!null" {
		return "", errAt(p.pos(n), path, "expected a value, found %s", describe(n))
	}
	return n.Value, nil
}

func (p *parser) str(n *yaml.Node, path string) (string, error) {
	n = deref(n)
	if isNull(n) {
		return "", nil
	}
	return p.scalar(n, path)
}

func (p *parser) uintVal(n *yaml.Node, path string, limit uint64) (uint64, error) {
	s, err := p.scalar(n, path)
	if err != nil {
		return 0, err
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil || deref(n).Tag != "!!int" {
		return 0, errAt(p.pos(n), path, "%q is not a whole number", s)
	}
	if v > limit {
		return 0, errAt(p.pos(n), path, "%d is too large (max %d)", v, limit)
	}
	return v, nil
}

func (p *parser) floatVal(n *yaml.Node, path string) (float64, error) {
	s, err := p.scalar(n, path)
	if err != nil {
		return 0, err
	}
	tag := deref(n).Tag
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || (tag != "!!float" && tag != "!!int") || math.IsNaN(v) || math.IsInf(v, 0) {
		return 0, errAt(p.pos(n), path, "%q is not a number", s)
	}
	return v, nil
}

func (p *parser) boolVal(n *yaml.Node, path string) (bool, error) {
	s, err := p.scalar(n, path)
	if err != nil {
		return false, err
	}
	v, err := strconv.ParseBool(s)
	if err != nil || deref(n).Tag != "!!bool" {
		return false, errAt(p.pos(n), path, "%q is not true or false", s)
	}
	return v, nil
}

func (p *parser) duration(n *yaml.Node, path string) (time.Duration, error) {
	s, err := p.scalar(n, path)
	if err != nil {
		return 0, err
	}
	d, err := parseDuration(s)
	if err != nil {
		return 0, errAt(p.pos(n), path, "%w", err)
	}
	return d, nil
}

func (p *parser) strList(n *yaml.Node, path string) ([]string, []pos, error) {
	items, err := p.sequence(n, path)
	if err != nil {
		return nil, nil, err
	}
	out := make([]string, 0, len(items))
	at := make([]pos, 0, len(items))
	for i, it := range items {
		s, err := p.scalar(it, fmt.Sprintf("%s[%d]", path, i))
		if err != nil {
			return nil, nil, err
		}
		out = append(out, s)
		at = append(at, p.pos(it))
	}
	return out, at, nil
}

// parseDuration accepts Go durations ("90s", "2h30m") and whole days in
// front of one ("1d", "2d12h"). Negative durations are errors.
func parseDuration(s string) (time.Duration, error) {
	t := strings.TrimSpace(s)
	var days time.Duration
	if i := strings.IndexByte(t, 'd'); i > 0 {
		n, err := strconv.ParseUint(t[:i], 10, 32)
		if err != nil || n > 100000 {
			return 0, fmt.Errorf("%q is not a duration (like \"90s\", \"2h\" or \"1d\")", s)
		}
		days = time.Duration(n) * 24 * time.Hour
		t = t[i+1:]
		if t == "" {
			return days, nil
		}
	}
	d, err := time.ParseDuration(t)
	if err != nil {
		return 0, fmt.Errorf("%q is not a duration (like \"90s\", \"2h\" or \"1d\")", s)
	}
	if d < 0 {
		return 0, fmt.Errorf("%q is negative", s)
	}
	if days > 0 && d > math.MaxInt64-days {
		return 0, fmt.Errorf("%q is too long", s)
	}
	return days + d, nil
}

// parseCooldown accepts "10m", "day-end" and "day-end>=4h".
func parseCooldown(s string) (limiter.Cooldown, error) {
	t := strings.TrimSpace(s)
	if rest, ok := strings.CutPrefix(t, "day-end"); ok {
		rest = strings.TrimSpace(rest)
		if rest == "" {
			return limiter.Cooldown{DayEnd: true}, nil
		}
		least, ok := strings.CutPrefix(rest, ">=")
		if !ok {
			return limiter.Cooldown{}, fmt.Errorf("%q is not a cooldown (like \"10m\", \"day-end\" or \"day-end>=4h\")", s)
		}
		d, err := parseDuration(least)
		if err != nil {
			return limiter.Cooldown{}, err
		}
		return limiter.Cooldown{DayEnd: true, Duration: d}, nil
	}
	d, err := parseDuration(t)
	if err != nil {
		return limiter.Cooldown{}, fmt.Errorf("%q is not a cooldown (like \"10m\", \"day-end\" or \"day-end>=4h\")", s)
	}
	return limiter.Cooldown{Duration: d}, nil
}

func (p *parser) cooldowns(n *yaml.Node, path string) ([]limiter.Cooldown, error) {
	items, err := p.sequence(n, path)
	if err != nil {
		return nil, err
	}
	out := make([]limiter.Cooldown, 0, len(items))
	for i, it := range items {
		ipath := fmt.Sprintf("%s[%d]", path, i)
		s, err := p.scalar(it, ipath)
		if err != nil {
			return nil, err
		}
		c, err := parseCooldown(s)
		if err != nil {
			return nil, errAt(p.pos(it), ipath, "%w", err)
		}
		out = append(out, c)
	}
	return out, nil
}

var providerNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]*$`)

func (p *parser) providers(n *yaml.Node, d *doc) error {
	pairs, err := p.mapping(n, "providers")
	if err != nil {
		return err
	}
	for _, e := range pairs {
		path := "providers." + e.key
		if !providerNameRE.MatchString(e.key) || e.key == "default" {
			return errAt(p.pos(e.k), path, "provider names are lower-case letters, digits, '-' and '_', and not \"default\"")
		}
		ps, err := p.provider(e.v, e.key, path, true)
		if err != nil {
			return err
		}
		ps.at = p.pos(e.k)
		d.providers = append(d.providers, ps)
	}
	return nil
}

// provider parses a provider section, or the default section when
// withDomains is false.
func (p *parser) provider(n *yaml.Node, name, path string, withDomains bool) (*providerSpec, error) {
	pairs, err := p.mapping(n, path)
	if err != nil {
		return nil, err
	}
	ps := &providerSpec{name: name, at: p.pos(n), path: path}
	ps.machine.path = path + ".machine"
	for _, e := range pairs {
		fpath := join(path, e.key)
		switch {
		case e.key == "domains" && withDomains:
			ps.domains, ps.domainsAt, err = p.strList(e.v, fpath)
			ps.hasDomains = true
		case e.key == "mx" && withDomains:
			ps.mx, ps.mxAt, err = p.strList(e.v, fpath)
			ps.hasMX = true
		case e.key == "timezone":
			ps.tzAt, ps.hasTZ = p.pos(e.v), true
			if ps.timezone, err = p.scalar(e.v, fpath); err == nil {
				ps.location, err = time.LoadLocation(ps.timezone)
				if err != nil || ps.timezone == "" || ps.timezone == "Local" {
					err = errAt(ps.tzAt, fpath, "unknown time zone %q (want an IANA name like \"Asia/Shanghai\")", ps.timezone)
				}
			}
		case e.key == "calendar_day":
			ps.calAt, ps.hasCal = p.pos(e.v), true
			ps.calendarDay, err = p.boolVal(e.v, fpath)
		case e.key == "tiers":
			err = p.tiers(e.v, fpath, ps)
			ps.tiersAt = p.pos(e.k)
		case e.key == "machine":
			ps.machine, err = p.machine(e.v, fpath)
		default:
			err = p.unknownKey(e.k, path)
		}
		if err != nil {
			return nil, err
		}
	}
	return ps, nil
}

func (p *parser) tiers(n *yaml.Node, path string, ps *providerSpec) error {
	pairs, err := p.mapping(n, path)
	if err != nil {
		return err
	}
	ps.hasTiers, ps.tiersAt, ps.tiers = true, p.pos(n), limiter.Limits{}
	for _, e := range pairs {
		t, err := limiter.ParseTier(e.key)
		if err != nil || t.String() != e.key {
			return errAt(p.pos(e.k), path, "unknown tier %q (want second, minute, hour or day)", e.key)
		}
		v, err := p.uintVal(e.v, join(path, e.key), 1<<40)
		if err != nil {
			return err
		}
		ps.tiers[t], ps.tierAt[t] = v, p.pos(e.v)
	}
	return nil
}

// machine parses a machine section and checks its values on their own,
// over the compiled-in defaults, so that an error points at the line that
// set the value.
func (p *parser) machine(n *yaml.Node, path string) (machineSpec, error) {
	ms := machineSpec{path: path}
	pairs, err := p.mapping(n, path)
	if err != nil {
		return ms, err
	}
	for _, e := range pairs {
		i := fieldIndex(e.key)
		if i < 0 {
			return ms, p.unknownKey(e.k, path)
		}
		fpath := join(path, e.key)
		switch f := machineFields[i].ptr(&ms.vals).(type) {
		case *float64:
			*f, err = p.floatVal(e.v, fpath)
		case *time.Duration:
			*f, err = p.duration(e.v, fpath)
		case *int:
			var v uint64
			v, err = p.uintVal(e.v, fpath, math.MaxInt32)
			*f = int(v)
		case *[]limiter.Cooldown:
			*f, err = p.cooldowns(e.v, fpath)
		}
		if err != nil {
			return ms, err
		}
		ms.set[i], ms.at[i] = true, p.pos(e.v)
	}
	m := limiter.DefaultMachine()
	ms.applyTo(&m)
	if err := m.Validate(); err != nil {
		return ms, ms.placeError(err, pos{file: p.file, line: n.Line})
	}
	return ms, nil
}

// placeError places a limiter.Machine.Validate error ("cooldowns[1]: ...")
// at the line of the key it names, when this section sets it.
func (s *machineSpec) placeError(err error, fallback pos) error {
	key, reason, ok := splitKey(err.Error())
	if !ok {
		return errAt(fallback, s.path, "%w", err)
	}
	base, _, _ := strings.Cut(key, "[")
	if i := fieldIndex(base); i >= 0 && s.set[i] {
		return errAt(s.at[i], join(s.path, key), "%s", reason)
	}
	return errAt(fallback, join(s.path, key), "%s", reason)
}

// splitKey splits "tiers.minute: reason" into key and reason.
func splitKey(msg string) (key, reason string, ok bool) {
	key, reason, ok = strings.Cut(msg, ": ")
	if !ok || key == "" || strings.ContainsAny(key, " \t\"") {
		return "", msg, false
	}
	return key, reason, true
}

func (p *parser) dns(n *yaml.Node) (dnsSpec, error) {
	var ds dnsSpec
	pairs, err := p.mapping(n, "dns")
	if err != nil {
		return ds, err
	}
	for _, e := range pairs {
		i := slices.Index(dnsKeys[:], e.key)
		if i < 0 {
			return ds, p.unknownKey(e.k, "dns")
		}
		path := "dns." + e.key
		switch i {
		case dnsServer:
			ds.cfg.Server, err = p.str(e.v, path)
		case dnsTimeout:
			ds.cfg.Timeout, err = p.duration(e.v, path)
		case dnsMinTTL:
			ds.cfg.MinTTL, err = p.duration(e.v, path)
		case dnsMaxTTL:
			ds.cfg.MaxTTL, err = p.duration(e.v, path)
		case dnsNegativeTTL:
			ds.cfg.NegativeTTL, err = p.duration(e.v, path)
		}
		if err != nil {
			return ds, err
		}
		ds.set[i], ds.at[i] = true, p.pos(e.v)
	}
	return ds, nil
}

func (p *parser) idList(n *yaml.Node, path string) ([]idAt, error) {
	ids, at, err := p.strList(n, path)
	if err != nil {
		return nil, err
	}
	out := make([]idAt, len(ids))
	for i := range ids {
		out[i] = idAt{id: ids[i], at: at[i], path: fmt.Sprintf("%s[%d]", path, i)}
	}
	return out, nil
}

func (p *parser) rules(n *yaml.Node) ([]*ruleSpec, error) {
	items, err := p.sequence(n, "rules")
	if err != nil {
		return nil, err
	}
	out := make([]*ruleSpec, 0, len(items))
	seen := make(map[string]int)
	for i, it := range items {
		rs, err := p.rule(it, fmt.Sprintf("rules[%d]", i))
		if err != nil {
			return nil, err
		}
		if first, dup := seen[rs.rule.ID]; dup {
			return nil, errAt(rs.fields["id"], rs.path+".id", "%q listed twice (first at line %d)", rs.rule.ID, first)
		}
		seen[rs.rule.ID] = rs.fields["id"].line
		out = append(out, rs)
	}
	return out, nil
}

var codeClassRE = regexp.MustCompile(`^[245][xX][xX]$`)

func (p *parser) rule(n *yaml.Node, path string) (*ruleSpec, error) {
	pairs, err := p.mapping(n, path)
	if err != nil {
		return nil, err
	}
	rs := &ruleSpec{at: p.pos(n), path: path, fields: make(map[string]pos)}
	r := &rs.rule
	hasClass := false
	for _, e := range pairs {
		fpath := join(path, e.key)
		rs.fields[e.key] = p.pos(e.k)
		switch e.key {
		case "id":
			r.ID, err = p.scalar(e.v, fpath)
		case "provider":
			r.Provider, err = p.str(e.v, fpath)
		case "codes":
			r.Codes, err = p.codes(e.v, fpath)
		case "enhanced":
			var items []*yaml.Node
			if items, err = p.listOrScalar(e.v, fpath); err == nil {
				for j, it := range items {
					var s string
					if s, err = p.scalar(it, fmt.Sprintf("%s[%d]", fpath, j)); err != nil {
						break
					}
					r.Enhanced = append(r.Enhanced, s)
				}
			}
		case "pattern":
			r.Pattern, err = p.str(e.v, fpath)
		case "class":
			var s string
			if s, err = p.scalar(e.v, fpath); err == nil {
				if r.Class, err = limiter.ParseClass(s); err != nil {
					err = errAt(p.pos(e.v), fpath, "%w", err)
				}
			}
			hasClass = true
		case "trigger":
			r.Trigger, err = p.trigger(e.v, fpath, rs)
		case "override":
			r.Override, err = p.override(e.v, fpath, rs)
		case "description":
			r.Description, err = p.str(e.v, fpath)
		case "source":
			r.Source, err = p.str(e.v, fpath)
		default:
			err = p.unknownKey(e.k, path)
		}
		if err != nil {
			return nil, err
		}
	}
	if _, ok := rs.fields["id"]; !ok || r.ID == "" {
		return nil, errAt(rs.at, path+".id", "missing")
	}
	if !hasClass {
		return nil, errAt(rs.at, path+".class", "missing")
	}
	return rs, nil
}

// codes accepts 550, "5xx", or a list of them.
func (p *parser) codes(n *yaml.Node, path string) ([]uint32, error) {
	items, err := p.listOrScalar(n, path)
	if err != nil {
		return nil, err
	}
	out := make([]uint32, 0, len(items))
	for i, it := range items {
		ipath := fmt.Sprintf("%s[%d]", path, i)
		s, err := p.scalar(it, ipath)
		if err != nil {
			return nil, err
		}
		if codeClassRE.MatchString(s) {
			out = append(out, uint32(s[0]-'0'))
			continue
		}
		v, err := strconv.ParseUint(s, 10, 32)
		if err != nil || (v != 0 && (v < 200 || v > 599)) {
			return nil, errAt(p.pos(it), ipath, "%q is not a reply code (like 550), a class (\"4xx\", \"5xx\") or 0 (no reply)", s)
		}
		out = append(out, uint32(v))
	}
	return out, nil
}

func (p *parser) trigger(n *yaml.Node, path string, rs *ruleSpec) (*limiter.Trigger, error) {
	pairs, err := p.mapping(n, path)
	if err != nil {
		return nil, err
	}
	t := &limiter.Trigger{}
	for _, e := range pairs {
		fpath := join(path, e.key)
		rs.fields["trigger."+e.key] = p.pos(e.k)
		var v uint64
		switch e.key {
		case "count":
			v, err = p.uintVal(e.v, fpath, math.MaxUint32)
			t.Count = uint32(v)
		case "window":
			t.Window, err = p.duration(e.v, fpath)
		case "share":
			t.Share, err = p.floatVal(e.v, fpath)
		case "min_attempts":
			v, err = p.uintVal(e.v, fpath, math.MaxUint32)
			t.MinAttempts = uint32(v)
		default:
			err = p.unknownKey(e.k, path)
		}
		if err != nil {
			return nil, err
		}
	}
	return t, nil
}

func (p *parser) override(n *yaml.Node, path string, rs *ruleSpec) (*limiter.Override, error) {
	pairs, err := p.mapping(n, path)
	if err != nil {
		return nil, err
	}
	o := &limiter.Override{}
	for _, e := range pairs {
		fpath := join(path, e.key)
		rs.fields["override."+e.key] = p.pos(e.k)
		switch e.key {
		case "cooldowns":
			o.Cooldowns, err = p.cooldowns(e.v, fpath)
		case "decrease_factor":
			o.DecreaseFactor, err = p.floatVal(e.v, fpath)
		default:
			err = p.unknownKey(e.k, path)
		}
		if err != nil {
			return nil, err
		}
	}
	return o, nil
}

// placeError places a smtpreply.Rule.Validate error ("pattern: ...",
// "trigger.window: ...") at the line of the field it names.
func (rs *ruleSpec) placeError(err error) error {
	key, reason, ok := splitKey(err.Error())
	if !ok {
		return errAt(rs.at, rs.path, "%w", err)
	}
	base, _, _ := strings.Cut(key, "[")
	for k := base; k != ""; {
		if at, ok := rs.fields[k]; ok {
			return errAt(at, join(rs.path, key), "%s", reason)
		}
		i := strings.LastIndexByte(k, '.')
		if i < 0 {
			break
		}
		k = k[:i]
	}
	return errAt(rs.at, join(rs.path, key), "%s", reason)
}
