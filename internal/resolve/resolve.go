// Package resolve maps a recipient domain to the provider that receives its
// mail, the second half of the (sender IP, provider) key.
//
// A [Resolver] answers from, in order:
//
//  1. the provider table: an exact match of the domain against
//     [Provider.Domains] (Via "table");
//  2. MX rollup: the domain's MX hosts, in preference order, matched against
//     [Provider.MXPatterns]; the first host that matches names the provider
//     (Via "mx"), so a company domain hosted by Google shares Google's limits;
//  3. the registrable domain (eTLD+1) of the primary MX host, or the table
//     provider of that registrable domain when it is listed (Via "mx");
//  4. the domain itself, when there is no lookuper, no MX, NXDOMAIN, a DNS
//     failure or a timeout (Via "domain").
//
// Lookups are cached, bounded in time and deduplicated; see [Resolver.Resolve].
package resolve

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/publicsuffix"
	"golang.org/x/sync/singleflight"

	"github.com/sendgate/sendgate/internal/normalize"
)

// Values of [Result.Via].
const (
	ViaTable  = "table"  // the domain is listed in the provider table
	ViaMX     = "mx"     // derived from the domain's MX hosts
	ViaDomain = "domain" // the domain itself: nothing better was known
)

// Defaults of [Options].
const (
	DefaultTimeout       = 500 * time.Millisecond
	DefaultLookupTimeout = 5 * time.Second
	DefaultMinTTL        = time.Minute
	DefaultMaxTTL        = 24 * time.Hour
	DefaultNegativeTTL   = time.Minute
	DefaultMaxEntries    = 100_000

	// UnknownTTL is how long the answer of a lookuper that does not report
	// TTLs (an [MXLookuper] that is not a [TTLLookuper], such as
	// *net.Resolver) is cached, before clamping to [MinTTL, MaxTTL].
	UnknownTTL = time.Hour
)

// Provider is one entry of the provider table.
type Provider struct {
	// Name identifies the provider in keys, e.g. "tencent".
	Name string
	// Domains are recipient domains that belong to the provider, matched
	// exactly: "qq.com" does not cover "vip.qq.com", which may be listed too.
	Domains []string
	// MXPatterns match MX hosts: "*.qq.com" matches any host ending in
	// ".qq.com" (not "qq.com" itself); a pattern without '*' matches that
	// host exactly. When several patterns match a host, the most specific
	// wins: an exact host, then the longest suffix.
	MXPatterns []string
}

// MXLookuper is what the Resolver needs from DNS; *net.Resolver and
// *DNSClient satisfy it. The name passed is fully qualified (it ends in a
// dot), so that no search list applies.
type MXLookuper interface {
	LookupMX(ctx context.Context, name string) ([]*net.MX, error)
}

// TTLLookuper is an [MXLookuper] that also reports how long its answer may be
// cached. The Resolver uses LookupMXTTL when its lookuper implements it.
type TTLLookuper interface {
	LookupMXTTL(ctx context.Context, name string) ([]*net.MX, time.Duration, error)
}

// Options tune a Resolver. The zero value of each field selects its default.
type Options struct {
	// Timeout bounds how long Resolve waits for a lookup (default 500ms).
	// A lookup still running then goes on in the background, bounded by
	// LookupTimeout, and fills the cache when it ends.
	Timeout time.Duration
	// LookupTimeout bounds one DNS lookup, however many callers wait on it
	// (default 5s, and never less than Timeout).
	LookupTimeout time.Duration
	// MinTTL and MaxTTL clamp how long an answer is cached (defaults 1m and
	// 24h). Answers of a lookuper without TTLs are cached for UnknownTTL
	// (1h), clamped likewise.
	MinTTL, MaxTTL time.Duration
	// NegativeTTL is how long a failure is cached: NXDOMAIN, no MX, SERVFAIL
	// or any other error, a lookup timeout, or a caller giving up after
	// Timeout (default 1m). A later success replaces the latter at once.
	NegativeTTL time.Duration
	// MaxEntries bounds the cache (default 100000). Beyond it, inserting
	// evicts an entry picked from a small random sample: an expired one, or
	// else the one expiring first.
	MaxEntries int
	// Now returns the current time, for tests (default time.Now). It dates
	// cache entries; Timeout and LookupTimeout run on the real clock.
	Now func() time.Time
}

// Result says which provider a domain belongs to and why.
type Result struct {
	// Provider is the provider name (Via "table" or "mx", or a registrable
	// domain with Via "mx") or the domain itself (Via "domain").
	Provider string
	// Via is ViaTable, ViaMX or ViaDomain.
	Via string
	// MXHosts are the domain's MX hosts by preference, then by name,
	// lower-case without trailing dot; nil when not looked up or none. The
	// slice is shared with the cache: callers must not modify it.
	MXHosts []string
}

// Stats are counters since New. Each is read atomically, not the set.
type Stats struct {
	TableHits    uint64 // answered from the provider table
	CacheHits    uint64 // answered from a cached lookup
	NegativeHits uint64 // answered from a cached failure
	Lookups      uint64 // DNS lookups made
	NotFound     uint64 // lookups answered NXDOMAIN or no (usable) MX
	Errors       uint64 // lookups that failed otherwise, timeouts included
	Timeouts     uint64 // lookups that timed out (a subset of Errors)
	WaitTimeouts uint64 // Resolve calls that stopped waiting after Options.Timeout
	Evictions    uint64 // cache entries evicted by MaxEntries
	Entries      int    // cache entries now, expired ones included
}

// Resolver resolves recipient domains to providers. It is safe for
// concurrent use; create it with New.
type Resolver struct {
	domains  map[string]string   // table domain -> provider; read-only
	names    map[string]struct{} // provider names; read-only
	patterns []pattern           // most specific first; read-only

	lookup    MXLookuper
	ttlLookup TTLLookuper // lookup as a TTLLookuper, or nil

	timeout, lookupTimeout      time.Duration
	minTTL, maxTTL, negativeTTL time.Duration
	maxEntries                  int
	now                         func() time.Time

	flights singleflight.Group

	mu    sync.RWMutex
	cache map[string]entry // guarded by mu

	tableHits, cacheHits, negativeHits atomic.Uint64
	lookups, notFound, errs, timeouts  atomic.Uint64
	waitTimeouts, evictions            atomic.Uint64
}

// pattern is a compiled MXPattern: suffix (".qq.com") for "*.qq.com", or an
// exact host.
type pattern struct {
	suffix, exact, provider string
}

func (p pattern) match(host string) bool {
	if p.exact != "" {
		return host == p.exact
	}
	return len(host) > len(p.suffix) && strings.HasSuffix(host, p.suffix)
}

func (p pattern) text() string {
	if p.exact != "" {
		return p.exact
	}
	return "*" + p.suffix
}

// entry is a cached lookup, fresh in [stored, expires).
type entry struct {
	result          Result
	stored, expires time.Time
	negative        bool // a failure: result is the fallback
	provisional     bool // stored by a caller that gave up waiting; negative
}

func (e *entry) fresh(now time.Time) bool {
	// A clock that went backwards before stored makes the entry stale
	// rather than immortal.
	return now.Before(e.expires) && !now.Before(e.stored)
}

// New returns a Resolver for the provider table and lookuper. Table domains
// and patterns are normalised like [normalize.Domain]; a domain or pattern
// listed under two providers, an empty or repeated provider name, or an
// invalid option is an error. lookup may be nil: then no DNS is used and a
// domain outside the table resolves to itself.
func New(providers []Provider, lookup MXLookuper, opts Options) (*Resolver, error) {
	r := &Resolver{
		domains: make(map[string]string),
		names:   make(map[string]struct{}),
		lookup:  lookup,
		cache:   make(map[string]entry),
	}
	if err := r.setOptions(opts); err != nil {
		return nil, err
	}
	if tl, ok := lookup.(TTLLookuper); ok {
		r.ttlLookup = tl
	}
	seen := make(map[string]string) // pattern text -> provider
	for _, p := range providers {
		if p.Name == "" {
			return nil, errors.New("provider with empty name")
		}
		if _, dup := r.names[p.Name]; dup {
			return nil, fmt.Errorf("provider %q listed twice", p.Name)
		}
		r.names[p.Name] = struct{}{}
		for _, d := range p.Domains {
			nd, err := normalize.Domain(d)
			if err != nil {
				return nil, fmt.Errorf("provider %q: domain: %w", p.Name, err)
			}
			if other, dup := r.domains[nd]; dup && other != p.Name {
				return nil, fmt.Errorf("provider %q: domain %q already belongs to %q", p.Name, nd, other)
			}
			r.domains[nd] = p.Name
		}
		for _, mp := range p.MXPatterns {
			pat, err := compilePattern(mp, p.Name)
			if err != nil {
				return nil, fmt.Errorf("provider %q: %w", p.Name, err)
			}
			if other, dup := seen[pat.text()]; dup {
				if other != p.Name {
					return nil, fmt.Errorf("provider %q: mx pattern %q already belongs to %q", p.Name, pat.text(), other)
				}
				continue
			}
			seen[pat.text()] = p.Name
			r.patterns = append(r.patterns, pat)
		}
	}
	// Most specific first, table order otherwise: exact hosts, then longer
	// suffixes.
	slices.SortStableFunc(r.patterns, func(a, b pattern) int {
		if c := cmp.Compare(len(b.exact), len(a.exact)); c != 0 {
			return c
		}
		return cmp.Compare(len(b.suffix), len(a.suffix))
	})
	return r, nil
}

func compilePattern(s, provider string) (pattern, error) {
	host, wild := strings.CutPrefix(s, "*.")
	if strings.Contains(host, "*") {
		return pattern{}, fmt.Errorf("mx pattern %q: '*' only as a leading label", s)
	}
	h, err := normalize.Domain(host)
	if err != nil {
		return pattern{}, fmt.Errorf("mx pattern %q: %w", s, err)
	}
	if wild {
		return pattern{suffix: "." + h, provider: provider}, nil
	}
	return pattern{exact: h, provider: provider}, nil
}

func (r *Resolver) setOptions(o Options) error {
	if o.Timeout < 0 || o.LookupTimeout < 0 || o.MinTTL < 0 || o.MaxTTL < 0 || o.NegativeTTL < 0 || o.MaxEntries < 0 {
		return errors.New("negative option")
	}
	r.timeout = cmp.Or(o.Timeout, DefaultTimeout)
	r.lookupTimeout = max(cmp.Or(o.LookupTimeout, DefaultLookupTimeout), r.timeout)
	r.minTTL = cmp.Or(o.MinTTL, DefaultMinTTL)
	r.maxTTL = cmp.Or(o.MaxTTL, DefaultMaxTTL)
	r.negativeTTL = cmp.Or(o.NegativeTTL, DefaultNegativeTTL)
	r.maxEntries = cmp.Or(o.MaxEntries, DefaultMaxEntries)
	r.now = o.Now
	if r.now == nil {
		r.now = time.Now
	}
	if r.minTTL > r.maxTTL {
		return fmt.Errorf("MinTTL %v above MaxTTL %v", r.minTTL, r.maxTTL)
	}
	return nil
}

// IsProvider reports whether name is the Name of a provider of the table.
func (r *Resolver) IsProvider(name string) bool {
	_, ok := r.names[name]
	return ok
}

// Resolve returns the provider of domain, which must already be normalised
// (see [normalize.Domain]). It never fails: when nothing better is known the
// provider is the domain itself, Via "domain".
//
// A table domain or a cached answer costs no allocation and no DNS. Otherwise
// Resolve looks the MX hosts up, sharing one lookup among all concurrent
// callers for the domain, and waits for it at most Options.Timeout or until
// ctx is done; a caller that stops waiting gets Via "domain" while the lookup
// goes on in the background (with ctx's values but not its cancellation) and
// fills the cache. Answers are cached for their TTL clamped to
// [MinTTL, MaxTTL], failures for NegativeTTL.
func (r *Resolver) Resolve(ctx context.Context, domain string) Result {
	if p, ok := r.domains[domain]; ok {
		r.tableHits.Add(1)
		return Result{Provider: p, Via: ViaTable}
	}
	if r.lookup == nil || domain == "" {
		return Result{Provider: domain, Via: ViaDomain}
	}
	if e, ok := r.cached(domain, r.now()); ok {
		if e.negative {
			r.negativeHits.Add(1)
		} else {
			r.cacheHits.Add(1)
		}
		return e.result
	}
	return r.wait(ctx, domain)
}

// wait joins or starts the lookup of domain and waits for it, at most
// r.timeout.
func (r *Resolver) wait(ctx context.Context, domain string) Result {
	ch := r.flights.DoChan(domain, func() (any, error) {
		return r.fetch(ctx, domain), nil
	})
	timer := time.NewTimer(r.timeout)
	defer timer.Stop()
	select {
	case res := <-ch:
		return res.Val.(Result)
	case <-timer.C:
		r.waitTimeouts.Add(1)
		// Spare the next callers the same wait: they get the fallback at
		// once until the lookup ends, which replaces this entry.
		e := r.negativeEntry(domain, r.now())
		e.provisional = true
		r.store(domain, e, false)
		return e.result
	case <-ctx.Done():
		return fallback(domain)
	}
}

func fallback(domain string) Result {
	return Result{Provider: domain, Via: ViaDomain}
}

// fetch looks domain up and caches the outcome. It runs once per flight, in
// its own goroutine (singleflight.DoChan), so it outlives impatient callers.
func (r *Resolver) fetch(ctx context.Context, domain string) Result {
	// A flight ending between a caller's cache miss and its DoChan would
	// otherwise cause a second lookup.
	if e, ok := r.cached(domain, r.now()); ok && !e.provisional {
		return e.result
	}
	r.lookups.Add(1)
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.lookupTimeout)
	defer cancel()

	// Rooted, so that no resolv.conf search list applies.
	name := domain + "."
	var (
		mxs []*net.MX
		ttl = UnknownTTL
		err error
	)
	if r.ttlLookup != nil {
		mxs, ttl, err = r.ttlLookup.LookupMXTTL(ctx, name)
	} else {
		mxs, err = r.lookup.LookupMX(ctx, name)
	}
	now := r.now()
	if err != nil {
		switch classify(err) {
		case outcomeNotFound:
			r.notFound.Add(1)
		case outcomeTimeout:
			r.timeouts.Add(1)
			r.errs.Add(1)
		default:
			r.errs.Add(1)
		}
		e := r.negativeEntry(domain, now)
		r.store(domain, e, true)
		return e.result
	}
	res := r.rollup(domain, mxs)
	if res.MXHosts == nil {
		// No MX, or only a null MX (RFC 7505) or unusable hosts.
		r.notFound.Add(1)
		e := r.negativeEntry(domain, now)
		r.store(domain, e, true)
		return e.result
	}
	r.store(domain, entry{result: res, stored: now, expires: now.Add(r.clampTTL(ttl))}, true)
	return res
}

func (r *Resolver) negativeEntry(domain string, now time.Time) entry {
	return entry{result: fallback(domain), stored: now, expires: now.Add(r.negativeTTL), negative: true}
}

// clampTTL bounds ttl to [minTTL, maxTTL]; a negative ttl counts as zero.
func (r *Resolver) clampTTL(ttl time.Duration) time.Duration {
	return min(max(ttl, r.minTTL), r.maxTTL)
}

// rollup derives the result of domain from its MX records (steps 2 to 4 of
// the package doc). MXHosts is nil when no record names a usable host.
func (r *Resolver) rollup(domain string, mxs []*net.MX) Result {
	type rec struct {
		host string
		pref uint16
	}
	recs := make([]rec, 0, len(mxs))
	for _, mx := range mxs {
		if mx == nil {
			continue
		}
		h, err := normalize.Domain(mx.Host)
		if err != nil {
			continue // a null MX ("."), or a name that is no host
		}
		recs = append(recs, rec{h, mx.Pref})
	}
	if len(recs) == 0 {
		return fallback(domain)
	}
	// By preference, then by name: stable across the shuffles of equal
	// preferences that resolvers do.
	slices.SortFunc(recs, func(a, b rec) int {
		return cmp.Or(cmp.Compare(a.pref, b.pref), strings.Compare(a.host, b.host))
	})
	hosts := make([]string, 0, len(recs))
	for _, rc := range recs {
		if !slices.Contains(hosts, rc.host) { // listed twice: keep the best
			hosts = append(hosts, rc.host)
		}
	}

	for _, h := range hosts {
		for _, p := range r.patterns {
			if p.match(h) {
				return Result{Provider: p.provider, Via: ViaMX, MXHosts: hosts}
			}
		}
	}
	reg, err := publicsuffix.EffectiveTLDPlusOne(hosts[0])
	if err != nil {
		// The primary MX is a public suffix or a single label: it names
		// no operator.
		return Result{Provider: domain, Via: ViaDomain, MXHosts: hosts}
	}
	if p, ok := r.domains[reg]; ok {
		return Result{Provider: p, Via: ViaMX, MXHosts: hosts}
	}
	return Result{Provider: reg, Via: ViaMX, MXHosts: hosts}
}

// cached returns the fresh cache entry of domain.
func (r *Resolver) cached(domain string, now time.Time) (entry, bool) {
	r.mu.RLock()
	e, ok := r.cache[domain]
	r.mu.RUnlock()
	if !ok || !e.fresh(now) {
		return entry{}, false
	}
	return e, true
}

// store caches e for domain. Unless replace, a fresh entry already there is
// kept.
func (r *Resolver) store(domain string, e entry, replace bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if old, ok := r.cache[domain]; ok {
		if !replace && old.fresh(e.stored) {
			return
		}
	} else if len(r.cache) >= r.maxEntries {
		r.evictLocked(e.stored)
	}
	r.cache[domain] = e
}

// evictSample is how many entries evictLocked looks at.
const evictSample = 8

// evictLocked removes at least one entry: the expired ones among a sample
// (map iteration starts at a random place), or else the sampled entry that
// expires first. r.mu must be held for writing.
func (r *Resolver) evictLocked(now time.Time) {
	var (
		victim    string
		victimExp time.Time
		found     bool
		n         int
	)
	removed := uint64(0)
	for k, e := range r.cache {
		if !e.fresh(now) {
			delete(r.cache, k)
			removed++
		} else if !found || e.expires.Before(victimExp) {
			victim, victimExp, found = k, e.expires, true
		}
		if n++; n == evictSample {
			break
		}
	}
	if removed == 0 && found {
		delete(r.cache, victim)
		removed++
	}
	r.evictions.Add(removed)
}

// Stats returns the counters.
func (r *Resolver) Stats() Stats {
	r.mu.RLock()
	n := len(r.cache)
	r.mu.RUnlock()
	return Stats{
		TableHits:    r.tableHits.Load(),
		CacheHits:    r.cacheHits.Load(),
		NegativeHits: r.negativeHits.Load(),
		Lookups:      r.lookups.Load(),
		NotFound:     r.notFound.Load(),
		Errors:       r.errs.Load(),
		Timeouts:     r.timeouts.Load(),
		WaitTimeouts: r.waitTimeouts.Load(),
		Evictions:    r.evictions.Load(),
		Entries:      n,
	}
}

type outcome int

const (
	outcomeError    outcome = iota // any other failure
	outcomeNotFound                // NXDOMAIN or no MX
	outcomeTimeout                 // the lookup timed out
)

// classify sorts a lookup error from *net.Resolver, *DNSClient or another
// lookuper.
func classify(err error) outcome {
	var dnsErr *net.DNSError
	var netErr net.Error
	switch {
	case errors.Is(err, ErrNXDomain), errors.Is(err, ErrNoMX):
		return outcomeNotFound
	case errors.As(err, &dnsErr) && dnsErr.IsNotFound:
		return outcomeNotFound
	case errors.Is(err, ErrTimeout), errors.Is(err, context.DeadlineExceeded):
		return outcomeTimeout
	case errors.As(err, &dnsErr) && dnsErr.IsTimeout:
		return outcomeTimeout
	case errors.As(err, &netErr) && netErr.Timeout():
		return outcomeTimeout
	}
	return outcomeError
}
