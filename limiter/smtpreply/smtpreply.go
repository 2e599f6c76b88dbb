// Package smtpreply turns an SMTP reply (basic code, enhanced code, text)
// into a [limiter.Class] by rules: the provider's own rules in order, then
// the generic rules (those with no provider) in order, then the mapping by
// codes of [Default]. The first rule that matches decides, and may carry a
// [limiter.Trigger] (act only after several matches) and a
// [limiter.Override] (other machine parameters for this report).
//
// Rules are plain data, normally read from configuration; [New] validates
// and compiles them once into a [Classifier], which is immutable and safe for
// concurrent use. Classify is on the path of every ReportResult: it does not
// allocate, filters each rule by codes before it runs any regular expression,
// and matches plain-literal patterns without the regexp engine.
//
// The package imports only the standard library and package limiter.
package smtpreply

import (
	"errors"
	"fmt"
	"regexp"
	"regexp/syntax"
	"strings"
	"unicode/utf8"

	"github.com/sendgate/sendgate/limiter"
)

// Rule is one reply rule. A rule matches a reply when every condition it sets
// holds: its codes, its enhanced codes and its pattern; an empty condition
// holds for every reply.
type Rule struct {
	// ID names the rule in results, state reasons and history:
	// "<provider>/<slug>" ("tencent/ip-frequency-limited"), or
	// "default/<slug>" for a generic rule. Unique within a Classifier.
	ID string
	// Provider is the provider the rule is for ("tencent"); "" makes a
	// generic rule, tried for every provider after the provider's own.
	Provider string
	// Codes are the basic reply codes that match (550). The values 2, 4 and
	// 5 stand for a class: any 2xx, 4xx or 5xx. Empty matches any reply
	// code, but not code 0 (no reply), which a rule matches only when Codes
	// lists 0.
	Codes []uint32
	// Enhanced are the enhanced codes that match: exact ("4.7.28") or a
	// prefix ending in '.' ("5.7." or "5."); a leading "x." stands for any
	// class ("x.7.26" is 4.7.26 or 5.7.26). Empty matches any reply, even
	// one without an enhanced code; otherwise a reply without one does not
	// match.
	Enhanced []string
	// Pattern is a Go regular expression (RE2 syntax) searched for in the
	// reply text, case-insensitively and with '.' matching a line break
	// (flags "is"); "" matches any text. A pattern that is a plain literal,
	// or an alternation of plain ASCII literals, is matched without the
	// regexp engine, folding ASCII case only.
	Pattern string
	// Class is the classification of a matching reply; neither
	// ClassUnspecified nor NotAttempted (a caller's outcome, not a reply).
	Class limiter.Class
	// Trigger, when non-nil, makes the rule act only after enough matches.
	Trigger *limiter.Trigger
	// Override, when non-nil, replaces machine parameters for the report.
	Override *limiter.Override
	// Description says in one line what the provider means and what to do.
	Description string
	// Source is where the reply's wording and meaning come from (the URL of
	// the provider's documentation or postmaster page).
	Source string
}

// Result is what Classify made of a reply.
type Result struct {
	// Class is the classification.
	Class limiter.Class
	// Rule is the ID of the rule that matched, "" when Default decided.
	Rule string
	// Enhanced is the enhanced code used: the one given, or the one parsed
	// from the text ("" when none).
	Enhanced string
	// Trigger and Override are the matching rule's; nil when it has none.
	// They are shared by every result of that rule: read-only.
	Trigger  *limiter.Trigger
	Override *limiter.Override
}

// Classifier classifies replies by a fixed set of rules. It is immutable and
// safe for concurrent use. Create one with [New].
type Classifier struct {
	rules      []Rule
	byProvider map[string][]compiled
	generic    []compiled
}

// compiled is a Rule prepared for matching.
type compiled struct {
	id        string
	codes     []uint32 // exact basic codes (0 included)
	classMask uint8    // bit n: any nxx code (n in 2, 4, 5)
	enhanced  []string
	lits      []string       // lower-case ASCII literals: any one matches an ASCII text
	need      []string       // lower-case ASCII literals, one of which every match contains
	re        *regexp.Regexp // the pattern; nil for ""
	class     limiter.Class
	trigger   *limiter.Trigger
	override  *limiter.Override
}

// New validates the rules and compiles them into a Classifier. Rules keep
// their order within their provider. An error names the rule and the field:
// `rule "tencent/x": pattern: error parsing regexp: missing closing ): ...`;
// duplicate IDs are errors. New copies what it keeps: the caller may reuse
// rules.
func New(rules []Rule) (*Classifier, error) {
	c := &Classifier{
		rules:      make([]Rule, 0, len(rules)),
		byProvider: make(map[string][]compiled),
	}
	seen := make(map[string]bool, len(rules))
	for i, r := range rules {
		if r.ID == "" {
			return nil, fmt.Errorf("rule #%d: id: empty", i+1)
		}
		if err := r.Validate(); err != nil {
			return nil, fmt.Errorf("rule %q: %w", r.ID, err)
		}
		if seen[r.ID] {
			return nil, fmt.Errorf("rule %q: id: listed twice", r.ID)
		}
		seen[r.ID] = true
		r = r.clone()
		cr, err := compile(r)
		if err != nil {
			return nil, fmt.Errorf("rule %q: %w", r.ID, err)
		}
		c.rules = append(c.rules, r)
		if r.Provider == "" {
			c.generic = append(c.generic, cr)
		} else {
			c.byProvider[r.Provider] = append(c.byProvider[r.Provider], cr)
		}
	}
	return c, nil
}

// Rules returns a copy of the classifier's rules, in the order given to New.
func (c *Classifier) Rules() []Rule {
	out := make([]Rule, len(c.rules))
	for i, r := range c.rules {
		out[i] = r.clone()
	}
	return out
}

// Classify classifies one reply towards provider: code is the basic reply
// code (0 when there was no reply), enhanced the enhanced code or "" to parse
// it from text (see [ParseEnhanced]), text the whole reply with multi-line
// replies joined. The provider's rules are tried in order, then the generic
// rules, then [Default]. Classify does not allocate.
func (c *Classifier) Classify(provider string, code uint32, enhanced, text string) Result {
	if enhanced == "" {
		enhanced = parseEnhanced(text, code)
	}
	rp := reply{code: code, enhanced: enhanced, text: text, ascii: isASCII(text)}
	if list, ok := c.byProvider[provider]; ok {
		if r, ok := first(list, &rp); ok {
			return r.result(enhanced)
		}
	}
	if r, ok := first(c.generic, &rp); ok {
		return r.result(enhanced)
	}
	return Result{Class: Default(code, enhanced, text), Enhanced: enhanced}
}

// reply is one reply being classified.
type reply struct {
	code     uint32
	enhanced string
	text     string
	ascii    bool // text is all ASCII
}

func first(list []compiled, rp *reply) (*compiled, bool) {
	for i := range list {
		if list[i].match(rp) {
			return &list[i], true
		}
	}
	return nil, false
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

func (r *compiled) result(enhanced string) Result {
	return Result{Class: r.class, Rule: r.id, Enhanced: enhanced, Trigger: r.trigger, Override: r.override}
}

// match checks the cheap conditions first: codes, enhanced codes, then the
// text.
func (r *compiled) match(rp *reply) bool {
	code := rp.code
	if len(r.codes) > 0 || r.classMask != 0 {
		ok := code != 0 && code/100 < 8 && r.classMask&(1<<(code/100)) != 0
		for _, c := range r.codes {
			if c == code {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	} else if code == 0 {
		return false
	}
	if len(r.enhanced) > 0 {
		ok := false
		for _, p := range r.enhanced {
			if matchEnhanced(p, rp.enhanced) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	switch {
	case r.lits != nil && rp.ascii:
		for _, l := range r.lits {
			if containsFold(rp.text, l) {
				return true
			}
		}
		return false
	case r.re != nil:
		// Literals one of which every match contains are a cheap test
		// that rules out most replies before the engine runs.
		if r.need != nil && rp.ascii && !containsAny(rp.text, r.need) {
			return false
		}
		return r.re.MatchString(rp.text)
	}
	return true
}

// matchEnhanced matches an enhanced code against a validated pattern.
func matchEnhanced(p, e string) bool {
	if e == "" {
		return false
	}
	if p[0] == 'x' {
		if e[0] != '2' && e[0] != '4' && e[0] != '5' {
			return false
		}
		p, e = p[1:], e[1:]
	}
	if p[len(p)-1] == '.' {
		return strings.HasPrefix(e, p)
	}
	return e == p
}

// Validate reports the first problem with r, naming the field: "pattern:
// error parsing regexp: ...", "class: unspecified", "trigger.window: ...".
// New calls it for every rule; configuration loaders call it to place an
// error at the rule's line.
func (r Rule) Validate() error {
	if err := r.validateID(); err != nil {
		return fmt.Errorf("id: %w", err)
	}
	for _, c := range r.Codes {
		if c != 0 && c != 2 && c != 4 && c != 5 && (c < 200 || c > 599) {
			return fmt.Errorf("codes: %d is not a reply code (200-599), a class (2, 4, 5) or 0 (no reply)", c)
		}
	}
	for _, e := range r.Enhanced {
		if !validEnhancedPattern(e) {
			return fmt.Errorf("enhanced: %q is not an enhanced code (\"4.7.28\", \"x.7.26\") or a prefix ending in '.' (\"5.7.\")", e)
		}
	}
	if r.Pattern != "" {
		if _, err := syntax.Parse(r.Pattern, syntax.Perl); err != nil {
			return fmt.Errorf("pattern: %w", err)
		}
	}
	switch {
	case r.Class == limiter.ClassUnspecified:
		return errors.New("class: unspecified")
	case r.Class == limiter.NotAttempted:
		return errors.New("class: NOT_ATTEMPTED is a caller's outcome, not a reply's classification")
	case int(r.Class) >= limiter.NumClasses:
		return fmt.Errorf("class: unknown %v", r.Class)
	}
	if t := r.Trigger; t != nil {
		switch {
		case t.Count == 0 && t.Share == 0:
			return errors.New("trigger: set count or share")
		case t.Count > 0 && t.Share > 0:
			return errors.New("trigger: count and share exclude each other")
		case t.Window <= 0:
			return fmt.Errorf("trigger.window: %v is not positive", t.Window)
		case t.Count == 0 && !(t.Share > 0 && t.Share <= 1):
			return fmt.Errorf("trigger.share: %v is not in (0, 1]", t.Share)
		case t.Count == 0 && t.MinAttempts == 0:
			return errors.New("trigger.min_attempts: must be at least 1 with a share")
		case t.Count > 0 && t.MinAttempts > 0:
			return errors.New("trigger.min_attempts: only with a share")
		}
	}
	if o := r.Override; o != nil {
		if len(o.Cooldowns) == 0 && o.DecreaseFactor == 0 {
			return errors.New("override: sets nothing")
		}
		if o.DecreaseFactor != 0 && !(o.DecreaseFactor > 0 && o.DecreaseFactor < 1) {
			return fmt.Errorf("override.decrease_factor: %v is not between 0 and 1 (exclusive)", o.DecreaseFactor)
		}
		for i, cd := range o.Cooldowns {
			if cd.Duration < 0 || (cd.Duration == 0 && !cd.DayEnd) {
				return fmt.Errorf("override.cooldowns[%d]: %v is not positive", i, cd.Duration)
			}
		}
	}
	return nil
}

func (r Rule) validateID() error {
	prefix := r.Provider
	if prefix == "" {
		prefix = "default"
	} else if strings.ContainsAny(r.Provider, "/ \t\r\n") {
		return fmt.Errorf("provider %q contains '/' or white space", r.Provider)
	}
	slug, ok := strings.CutPrefix(r.ID, prefix+"/")
	if !ok || slug == "" {
		return fmt.Errorf("%q is not of the form %q", r.ID, prefix+"/<slug>")
	}
	if strings.ContainsAny(slug, " \t\r\n") || !utf8.ValidString(slug) {
		return fmt.Errorf("%q contains white space or invalid UTF-8", r.ID)
	}
	return nil
}

// validEnhancedPattern accepts "4.7.28", "x.7.26", "5.7.", "5." and "x.7.".
func validEnhancedPattern(p string) bool {
	if len(p) < 2 || p[1] != '.' || (p[0] != 'x' && p[0] != '2' && p[0] != '4' && p[0] != '5') {
		return false
	}
	if len(p) == 2 {
		return true // "5."
	}
	j := digits(p, 2)
	if j < 0 || j >= len(p) || p[j] != '.' {
		return false
	}
	if j+1 == len(p) {
		return true // "5.7."
	}
	return digits(p, j+1) == len(p)
}

// compile prepares a validated rule.
func compile(r Rule) (compiled, error) {
	cr := compiled{
		id:       r.ID,
		enhanced: r.Enhanced,
		class:    r.Class,
		trigger:  r.Trigger,
		override: r.Override,
	}
	for _, c := range r.Codes {
		if c == 2 || c == 4 || c == 5 {
			cr.classMask |= 1 << c
		} else {
			cr.codes = append(cr.codes, c)
		}
	}
	if r.Pattern != "" {
		re, err := regexp.Compile("(?is)" + r.Pattern)
		if err != nil {
			return compiled{}, fmt.Errorf("pattern: %w", err)
		}
		cr.re = re
		cr.lits, _ = literals(r.Pattern)
		if cr.lits == nil {
			cr.need = required(r.Pattern)
		}
	}
	return cr, nil
}

// literals returns the lower-cased alternatives of a pattern that is a plain
// ASCII literal or an alternation of them ("ip frequency limited",
// `\[TSS04\]`, "trop de connexions|too many connections"), so that matching
// an ASCII reply needs no regexp engine. (On ASCII text, case-insensitive
// matching of an ASCII literal is exactly ASCII case folding; a reply with
// other bytes goes to the engine, which also folds "K" with the Kelvin sign.)
func literals(pattern string) ([]string, bool) {
	// An alternation of words without metacharacters. (The parser would
	// factor their common prefixes out, hiding the literals.)
	if parts := strings.Split(pattern, "|"); len(parts) > 1 {
		out := make([]string, 0, len(parts))
		for _, p := range parts {
			if p == "" || regexp.QuoteMeta(p) != p || !isASCII(p) {
				return nil, false
			}
			out = append(out, strings.ToLower(p))
		}
		return out, true
	}
	// One literal, possibly with escaped metacharacters or in a group.
	re, err := syntax.Parse(pattern, syntax.Perl)
	if err != nil {
		return nil, false
	}
	re = re.Simplify()
	for re.Op == syntax.OpCapture {
		re = re.Sub[0]
	}
	if re.Op != syntax.OpLiteral || len(re.Rune) == 0 {
		return nil, false
	}
	b := make([]byte, len(re.Rune))
	for i, c := range re.Rune {
		if c >= utf8.RuneSelf {
			return nil, false
		}
		b[i] = lowerASCII(byte(c))
	}
	return []string{string(b)}, true
}

// required returns literals, lower-cased, at least one of which every match
// of pattern contains: "temporarily blocked" for `your ip\b.*\btemporarily
// blocked`, or dmarc, spf, dkim and unauthenticated for
// `\b(dmarc|spf|dkim)\b|unauthenticated`. It returns nil when it finds no such
// set. Like literals, it is used only on ASCII text.
func required(pattern string) []string {
	re, err := syntax.Parse(pattern, syntax.Perl)
	if err != nil {
		return nil
	}
	return requiredSet(re.Simplify(), 0)
}

func requiredSet(re *syntax.Regexp, depth int) []string {
	if depth > 20 {
		return nil
	}
	switch re.Op {
	case syntax.OpCapture, syntax.OpPlus:
		return requiredSet(re.Sub[0], depth+1)
	case syntax.OpRepeat:
		if re.Min >= 1 {
			return requiredSet(re.Sub[0], depth+1)
		}
	case syntax.OpLiteral:
		b := make([]byte, len(re.Rune))
		for i, c := range re.Rune {
			if c >= utf8.RuneSelf {
				return nil
			}
			b[i] = lowerASCII(byte(c))
		}
		if len(b) > 0 {
			return []string{string(b)}
		}
	case syntax.OpConcat:
		// Any part's set will do; prefer the one whose shortest literal
		// is longest (the most selective).
		var best []string
		for _, sub := range re.Sub {
			if set := requiredSet(sub, depth+1); set != nil && (best == nil || shortest(set) > shortest(best)) {
				best = set
			}
		}
		return best
	case syntax.OpAlternate:
		var out []string
		for _, sub := range re.Sub {
			set := requiredSet(sub, depth+1)
			if set == nil {
				return nil
			}
			out = append(out, set...)
		}
		return out
	}
	return nil
}

func shortest(set []string) int {
	n := len(set[0])
	for _, s := range set[1:] {
		n = min(n, len(s))
	}
	return n
}

// clone returns a deep copy of r, so that a Classifier shares nothing with
// its caller.
func (r Rule) clone() Rule {
	r.Codes = append([]uint32(nil), r.Codes...)
	r.Enhanced = append([]string(nil), r.Enhanced...)
	if r.Trigger != nil {
		t := *r.Trigger
		r.Trigger = &t
	}
	if r.Override != nil {
		o := *r.Override
		o.Cooldowns = append([]limiter.Cooldown(nil), o.Cooldowns...)
		r.Override = &o
	}
	return r
}
