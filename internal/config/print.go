package config

import (
	"bytes"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/sendgate/sendgate/limiter"
	"github.com/sendgate/sendgate/limiter/smtpreply"
)

// YAML prints the effective policy as a configuration file: every provider
// with its effective tiers, the global machine parameters in full and each
// provider's only where they differ, every rule, and disable_rules for the
// built-in rules that are gone. Loading the result with [Load] or [Parse]
// gives a Config equal to c.
func (c *Config) YAML() ([]byte, error) {
	root := &yaml.Node{Kind: yaml.MappingNode}
	add := func(key string, v *yaml.Node) { root.Content = append(root.Content, strNode(key), v) }

	add("dns", mapNode(
		"server", strNode(c.DNS.Server),
		"timeout", plainNode(fmtDuration(c.DNS.Timeout)),
		"min_ttl", plainNode(fmtDuration(c.DNS.MinTTL)),
		"max_ttl", plainNode(fmtDuration(c.DNS.MaxTTL)),
		"negative_ttl", plainNode(fmtDuration(c.DNS.NegativeTTL)),
	))
	add("machine", machineNode(c.machine, nil))
	add("default", c.providerNode(c.Policy.Default, nil, nil))
	providers := &yaml.Node{Kind: yaml.MappingNode}
	for _, rp := range c.Providers {
		p := c.Policy.Providers[rp.Name]
		providers.Content = append(providers.Content, strNode(rp.Name), c.providerNode(p, rp.Domains, rp.MXPatterns))
	}
	add("providers", providers)
	rules := &yaml.Node{Kind: yaml.SequenceNode}
	for _, r := range c.Rules {
		rules.Content = append(rules.Content, ruleNode(r))
	}
	add("rules", rules)
	if gone, err := c.disabledBuiltins(); err != nil {
		return nil, err
	} else if len(gone) > 0 {
		add("disable_rules", flowSeq(gone...))
	}

	doc := &yaml.Node{Kind: yaml.DocumentNode, Content: []*yaml.Node{root},
		HeadComment: "sendgate effective policy: the built-in policy with the configuration merged over it.\n" +
			"The schema is documented at the top of internal/config/builtin.yaml."}
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(doc); err != nil {
		return nil, fmt.Errorf("print policy: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("print policy: %w", err)
	}
	return buf.Bytes(), nil
}

// disabledBuiltins returns the ids of built-in rules that c does not have.
func (c *Config) disabledBuiltins() ([]string, error) {
	d, err := parseDoc(builtinName, builtinYAML)
	if err != nil {
		return nil, fmt.Errorf("built-in policy: %w", err)
	}
	have := make(map[string]bool, len(c.Rules))
	for _, r := range c.Rules {
		have[r.ID] = true
	}
	var gone []string
	for _, r := range d.rules {
		if !have[r.rule.ID] {
			gone = append(gone, r.rule.ID)
		}
	}
	return gone, nil
}

func (c *Config) providerNode(p *limiter.Provider, domains, mx []string) *yaml.Node {
	n := &yaml.Node{Kind: yaml.MappingNode}
	add := func(key string, v *yaml.Node) { n.Content = append(n.Content, strNode(key), v) }
	if domains != nil {
		add("domains", flowSeq(domains...))
	}
	if mx != nil {
		add("mx", flowSeq(mx...))
	}
	if p.Location != nil {
		add("timezone", strNode(p.Location.String()))
	}
	if p.CalendarDay {
		add("calendar_day", plainNode("true"))
	}
	tiers := &yaml.Node{Kind: yaml.MappingNode, Style: yaml.FlowStyle}
	for t, l := range p.Limits {
		if l > 0 {
			tiers.Content = append(tiers.Content, strNode(limiter.Tier(t).String()), plainNode(strconv.FormatUint(l, 10)))
		}
	}
	add("tiers", tiers)
	if m := machineNode(p.Machine, &c.machine); len(m.Content) > 0 {
		add("machine", m)
	}
	return n
}

// machineNode prints m; with base, only the fields that differ from it.
func machineNode(m limiter.Machine, base *limiter.Machine) *yaml.Node {
	n := &yaml.Node{Kind: yaml.MappingNode}
	for _, f := range machineFields {
		v := f.ptr(&m)
		if base != nil && reflect.DeepEqual(v, f.ptr(base)) {
			continue
		}
		var val *yaml.Node
		switch x := v.(type) {
		case *float64:
			val = plainNode(strconv.FormatFloat(*x, 'g', -1, 64))
		case *time.Duration:
			val = plainNode(fmtDuration(*x))
		case *int:
			val = plainNode(strconv.Itoa(*x))
		case *[]limiter.Cooldown:
			val = cooldownsNode(*x)
		}
		n.Content = append(n.Content, strNode(f.key), val)
	}
	return n
}

func cooldownsNode(cs []limiter.Cooldown) *yaml.Node {
	s := make([]string, len(cs))
	for i, c := range cs {
		s[i] = fmtCooldown(c)
	}
	return flowSeq(s...)
}

func ruleNode(r smtpreply.Rule) *yaml.Node {
	n := &yaml.Node{Kind: yaml.MappingNode}
	add := func(key string, v *yaml.Node) { n.Content = append(n.Content, strNode(key), v) }
	add("id", strNode(r.ID))
	if r.Provider != "" {
		add("provider", strNode(r.Provider))
	}
	if len(r.Codes) > 0 {
		codes := &yaml.Node{Kind: yaml.SequenceNode, Style: yaml.FlowStyle}
		for _, c := range r.Codes {
			if c == 2 || c == 4 || c == 5 {
				codes.Content = append(codes.Content, strNode(fmt.Sprintf("%dxx", c)))
			} else {
				codes.Content = append(codes.Content, plainNode(strconv.FormatUint(uint64(c), 10)))
			}
		}
		add("codes", codes)
	}
	if len(r.Enhanced) > 0 {
		add("enhanced", flowSeq(r.Enhanced...))
	}
	if r.Pattern != "" {
		add("pattern", strNode(r.Pattern))
	}
	add("class", strNode(strings.ToLower(r.Class.String())))
	if t := r.Trigger; t != nil {
		tn := &yaml.Node{Kind: yaml.MappingNode, Style: yaml.FlowStyle}
		if t.Count > 0 {
			tn.Content = append(tn.Content, strNode("count"), plainNode(strconv.FormatUint(uint64(t.Count), 10)))
		}
		if t.Share > 0 {
			tn.Content = append(tn.Content, strNode("share"), plainNode(strconv.FormatFloat(t.Share, 'g', -1, 64)))
		}
		if t.MinAttempts > 0 {
			tn.Content = append(tn.Content, strNode("min_attempts"), plainNode(strconv.FormatUint(uint64(t.MinAttempts), 10)))
		}
		tn.Content = append(tn.Content, strNode("window"), plainNode(fmtDuration(t.Window)))
		add("trigger", tn)
	}
	if o := r.Override; o != nil {
		on := &yaml.Node{Kind: yaml.MappingNode, Style: yaml.FlowStyle}
		if len(o.Cooldowns) > 0 {
			on.Content = append(on.Content, strNode("cooldowns"), cooldownsNode(o.Cooldowns))
		}
		if o.DecreaseFactor != 0 {
			on.Content = append(on.Content, strNode("decrease_factor"), plainNode(strconv.FormatFloat(o.DecreaseFactor, 'g', -1, 64)))
		}
		add("override", on)
	}
	if r.Description != "" {
		add("description", strNode(r.Description))
	}
	if r.Source != "" {
		add("source", strNode(r.Source))
	}
	return n
}

// strNode is a string, quoted when it would otherwise read as something else.
func strNode(s string) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: s}
}

// plainNode is a number, boolean or duration, written as is.
func plainNode(s string) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Value: s}
}

func flowSeq(items ...string) *yaml.Node {
	n := &yaml.Node{Kind: yaml.SequenceNode, Style: yaml.FlowStyle}
	for _, s := range items {
		n.Content = append(n.Content, strNode(s))
	}
	return n
}

func mapNode(kvs ...any) *yaml.Node {
	n := &yaml.Node{Kind: yaml.MappingNode}
	for i := 0; i+1 < len(kvs); i += 2 {
		n.Content = append(n.Content, strNode(kvs[i].(string)), kvs[i+1].(*yaml.Node))
	}
	return n
}

// fmtDuration writes d the way a person would: "10m", "2h", "1h30m", "1d",
// "500ms". parseDuration reads it back to d.
func fmtDuration(d time.Duration) string {
	const day = 24 * time.Hour
	if d > 0 && d%day == 0 {
		return strconv.FormatInt(int64(d/day), 10) + "d"
	}
	s := d.String()
	s = strings.TrimSuffix(s, "m0s")
	if strings.HasSuffix(d.String(), "m0s") {
		s += "m"
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

func fmtCooldown(c limiter.Cooldown) string {
	switch {
	case c.DayEnd && c.Duration > 0:
		return "day-end>=" + fmtDuration(c.Duration)
	case c.DayEnd:
		return "day-end"
	}
	return fmtDuration(c.Duration)
}
