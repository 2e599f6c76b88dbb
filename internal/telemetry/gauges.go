package telemetry

import (
	"context"
	"fmt"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/sendgate/sendgate/internal/resolve"
	"github.com/sendgate/sendgate/limiter"
)

// DefaultScanInterval is how often, at most, the keys of the store are
// counted for sendgate_keys and sendgate_remediation_keys.
const DefaultScanInterval = 10 * time.Second

// scanTimeout bounds one count of the store's keys.
const scanTimeout = 5 * time.Second

// GaugeOptions configure [RegisterGauges].
type GaugeOptions struct {
	// Limiter is counted for sendgate_keys{state} and
	// sendgate_remediation_keys{provider}; nil leaves both out.
	Limiter *limiter.Limiter
	// Store is the store as opened (not instrumented): when it has
	// WriteErrors() uint64 (the embedded store), it is reported as
	// sendgate_store_write_errors_total. nil leaves it out.
	Store limiter.Store
	// DNS returns the resolver's counters (resolve.Resolver.Stats); nil
	// leaves the DNS metrics out.
	DNS func() resolve.Stats
	// Known bounds the provider label, as in [ObserverOptions].
	Known func(name string) bool
	// ScanInterval is how often, at most, the store's keys are counted:
	// a scrape in between reports the last count. 0 means
	// [DefaultScanInterval].
	ScanInterval time.Duration
	// Now is the clock of the count; nil means time.Now.
	Now func() time.Time
}

// keyCounts is one count of the store's keys.
type keyCounts struct {
	at          time.Time
	byState     [limiter.Held + 1]int64
	remediation map[string]int64
}

// keyCounter counts the store's keys at most once per interval.
type keyCounter struct {
	lim      *limiter.Limiter
	known    func(string) bool
	now      func() time.Time
	interval time.Duration

	mu   sync.Mutex // held during a count, so scrapes do not pile up scans
	last *keyCounts
}

// counts returns the last count when it is recent, or counts again. A
// failed count keeps the previous one.
func (c *keyCounter) counts(ctx context.Context) *keyCounts {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	if c.last != nil && now.Sub(c.last.at) < c.interval && now.Sub(c.last.at) >= 0 {
		return c.last
	}
	ctx, cancel := context.WithTimeout(ctx, scanTimeout)
	defer cancel()
	kc := &keyCounts{at: now, remediation: make(map[string]int64)}
	pol := c.lim.Policy()
	// keep counts and returns false, so the store copies no entry out.
	keep := func(k limiter.Key, rec *limiter.Record) bool {
		v := limiter.View(k, rec, pol.For(k.Provider), now)
		if int(v.State) < len(kc.byState) {
			kc.byState[v.State]++
		}
		if v.Remediation {
			p := OtherProvider
			if c.known != nil && c.known(k.Provider) {
				p = k.Provider
			}
			kc.remediation[p]++
		}
		return false
	}
	cursor := ""
	for {
		_, next, err := c.lim.Store().List(ctx, cursor, 1000, keep)
		if err != nil {
			if c.last == nil {
				c.last = &keyCounts{at: now, remediation: map[string]int64{}}
			}
			return c.last
		}
		if next == "" {
			break
		}
		cursor = next
	}
	c.last = kc
	return kc
}

// RegisterGauges registers the observable instruments: sendgate_keys{state},
// sendgate_remediation_keys{provider}, sendgate_store_write_errors_total,
// and the resolver's sendgate_dns_lookups_total{result} and
// sendgate_dns_answers_total{source}, each as opts allows.
func RegisterGauges(meter metric.Meter, opts GaugeOptions) error {
	var insts []metric.Observable
	var cbs []func(context.Context, metric.Observer)

	if opts.Limiter != nil {
		kc := &keyCounter{lim: opts.Limiter, known: opts.Known, now: opts.Now, interval: opts.ScanInterval}
		if kc.now == nil {
			kc.now = time.Now
		}
		if kc.interval <= 0 {
			kc.interval = DefaultScanInterval
		}
		keys, err := meter.Int64ObservableGauge("sendgate_keys",
			metric.WithDescription("keys in the store by reputation state, counted at most every 10s"))
		if err != nil {
			return fmt.Errorf("keys gauge: %w", err)
		}
		rem, err := meter.Int64ObservableGauge("sendgate_remediation_keys",
			metric.WithDescription("keys whose state needs a postmaster's remediation, by provider"))
		if err != nil {
			return fmt.Errorf("remediation gauge: %w", err)
		}
		var states [limiter.Held + 1]metric.ObserveOption
		for s := limiter.Healthy; s <= limiter.Held; s++ {
			states[s] = metric.WithAttributes(attribute.String("state", s.String()))
		}
		insts = append(insts, keys, rem)
		cbs = append(cbs, func(ctx context.Context, o metric.Observer) {
			c := kc.counts(ctx)
			for s := limiter.Healthy; s <= limiter.Held; s++ {
				o.ObserveInt64(keys, c.byState[s], states[s])
			}
			for p, n := range c.remediation {
				o.ObserveInt64(rem, n, metric.WithAttributes(attribute.String("provider", p)))
			}
		})
	}

	if we, ok := opts.Store.(interface{ WriteErrors() uint64 }); ok {
		c, err := meter.Int64ObservableCounter("sendgate_store_write_errors",
			metric.WithDescription("writes of the embedded store's file that failed (retried later)"))
		if err != nil {
			return fmt.Errorf("store write errors counter: %w", err)
		}
		insts = append(insts, c)
		cbs = append(cbs, func(_ context.Context, o metric.Observer) { o.ObserveInt64(c, int64(we.WriteErrors())) })
	}

	if opts.DNS != nil {
		lookups, err := meter.Int64ObservableCounter("sendgate_dns_lookups",
			metric.WithDescription("MX lookups made by provider resolution, by result (ok, not_found, error, timeout)"))
		if err != nil {
			return fmt.Errorf("dns lookups counter: %w", err)
		}
		answers, err := meter.Int64ObservableCounter("sendgate_dns_answers",
			metric.WithDescription("provider resolutions by where the answer came from (table, cache, negative_cache, lookup, wait_timeout)"))
		if err != nil {
			return fmt.Errorf("dns answers counter: %w", err)
		}
		entries, err := meter.Int64ObservableGauge("sendgate_dns_cache_entries",
			metric.WithDescription("entries in the MX cache, expired ones included"))
		if err != nil {
			return fmt.Errorf("dns cache gauge: %w", err)
		}
		evictions, err := meter.Int64ObservableCounter("sendgate_dns_cache_evictions",
			metric.WithDescription("MX cache entries evicted by the size bound"))
		if err != nil {
			return fmt.Errorf("dns evictions counter: %w", err)
		}
		attr := func(k, v string) metric.ObserveOption { return metric.WithAttributes(attribute.String(k, v)) }
		ok, nf, er, to := attr("result", "ok"), attr("result", "not_found"), attr("result", "error"), attr("result", "timeout")
		tb, ch, ng, lk, wt := attr("source", "table"), attr("source", "cache"), attr("source", "negative_cache"), attr("source", "lookup"), attr("source", "wait_timeout")
		insts = append(insts, lookups, answers, entries, evictions)
		cbs = append(cbs, func(_ context.Context, o metric.Observer) {
			st := opts.DNS()
			// Errors includes Timeouts: report them apart.
			// The counters are read one by one: keep the difference >= 0.
			okN := int64(st.Lookups) - int64(st.NotFound) - int64(st.Errors)
			o.ObserveInt64(lookups, max(okN, 0), ok)
			o.ObserveInt64(lookups, int64(st.NotFound), nf)
			o.ObserveInt64(lookups, max(int64(st.Errors)-int64(st.Timeouts), 0), er)
			o.ObserveInt64(lookups, int64(st.Timeouts), to)
			o.ObserveInt64(answers, int64(st.TableHits), tb)
			o.ObserveInt64(answers, int64(st.CacheHits), ch)
			o.ObserveInt64(answers, int64(st.NegativeHits), ng)
			o.ObserveInt64(answers, int64(st.Lookups), lk)
			o.ObserveInt64(answers, int64(st.WaitTimeouts), wt)
			o.ObserveInt64(entries, int64(st.Entries))
			o.ObserveInt64(evictions, int64(st.Evictions))
		})
	}

	if len(insts) == 0 {
		return nil
	}
	_, err := meter.RegisterCallback(func(ctx context.Context, o metric.Observer) error {
		for _, cb := range cbs {
			cb(ctx, o)
		}
		return nil
	}, insts...)
	if err != nil {
		return fmt.Errorf("register gauges: %w", err)
	}
	return nil
}
