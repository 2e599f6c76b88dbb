// Package failover decides what sendgate does when its shared state store
// (Redis) cannot be reached: fail closed, answering every check with a DEFER
// and a short retry_after, or fail open, deciding from a local memory store
// with conservative limits until the shared store is back. Either way every
// call answers within its deadline, and the first call that reaches the
// shared store again uses it: nothing needs a restart.
package failover

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sendgate/sendgate/limiter"
)

// Mode is what a check does while the shared store is unreachable.
type Mode uint8

const (
	// Closed answers DEFER with reason UNAVAILABLE and Options.RetryAfter.
	Closed Mode = iota
	// Open decides from the fallback store with limits scaled by
	// Options.Share.
	Open
)

// String returns "closed" or "open".
func (m Mode) String() string {
	if m == Open {
		return "open"
	}
	return "closed"
}

// Options configures a Store.
type Options struct {
	Mode Mode
	// RetryAfter of a fail-closed DEFER; default 5s.
	RetryAfter time.Duration
	// Fallback decides while failing open (a memory store); required for
	// Open.
	Fallback limiter.Store
	// Share scales every tier limit of the fallback (each replica decides
	// alone, so it must leave room for the others); default 0.5.
	Share float64
}

// Store wraps a shared store. It implements [limiter.Store] and
// [limiter.BatchAdmitter], and is safe for concurrent use.
type Store struct {
	primary  limiter.Store
	opts     Options
	scaled   sync.Map // *limiter.Provider -> *limiter.Provider
	failures atomic.Uint64
	fallback atomic.Uint64
	down     atomic.Bool
}

var (
	_ limiter.Store         = (*Store)(nil)
	_ limiter.BatchAdmitter = (*Store)(nil)
)

// New wraps primary.
func New(primary limiter.Store, opts Options) (*Store, error) {
	if opts.RetryAfter <= 0 {
		opts.RetryAfter = 5 * time.Second
	}
	if opts.Share <= 0 || opts.Share > 1 {
		opts.Share = 0.5
	}
	if opts.Mode == Open && opts.Fallback == nil {
		return nil, errors.New("failover: fail-open needs a fallback store")
	}
	return &Store{primary: primary, opts: opts}, nil
}

// Mode returns the configured mode.
func (s *Store) Mode() Mode { return s.opts.Mode }

// Failures counts calls that found the shared store unreachable.
func (s *Store) Failures() uint64 { return s.failures.Load() }

// FallbackDecisions counts checks decided by the fallback (fail-open) or
// deferred for unavailability (fail-closed).
func (s *Store) FallbackDecisions() uint64 { return s.fallback.Load() }

// Degraded reports whether the last call to the shared store failed.
func (s *Store) Degraded() bool { return s.down.Load() }

// Ping checks the shared store when it can be pinged.
func (s *Store) Ping(ctx context.Context) error {
	if p, ok := s.primary.(interface{ Ping(context.Context) error }); ok {
		err := p.Ping(ctx)
		s.down.Store(err != nil)
		return err
	}
	return nil
}

// failed reports whether err means the shared store is unreachable, and
// counts it.
func (s *Store) failed(err error) bool {
	if err == nil {
		s.down.Store(false)
		return false
	}
	if !errors.Is(err, limiter.ErrUnavailable) {
		return false
	}
	s.failures.Add(1)
	s.down.Store(true)
	return true
}

// Admit implements limiter.Store.
func (s *Store) Admit(ctx context.Context, key limiter.Key, p *limiter.Provider, count uint32, dryRun bool, now time.Time) (limiter.Decision, error) {
	d, err := s.primary.Admit(ctx, key, p, count, dryRun, now)
	if !s.failed(err) {
		return d, err
	}
	return s.degraded(ctx, key, p, count, dryRun, now)
}

func (s *Store) degraded(ctx context.Context, key limiter.Key, p *limiter.Provider, count uint32, dryRun bool, now time.Time) (limiter.Decision, error) {
	s.fallback.Add(1)
	if s.opts.Mode == Closed {
		return limiter.Decision{Verdict: limiter.Defer, Reason: limiter.ReasonUnavailable, RetryAfter: s.opts.RetryAfter}, nil
	}
	return s.opts.Fallback.Admit(ctx, key, s.scale(p), count, dryRun, now)
}

// AdmitBatch implements limiter.BatchAdmitter.
func (s *Store) AdmitBatch(ctx context.Context, items []limiter.AdmitItem) ([]limiter.Decision, error) {
	var ds []limiter.Decision
	var err error
	if b, ok := s.primary.(limiter.BatchAdmitter); ok {
		ds, err = b.AdmitBatch(ctx, items)
	} else {
		ds = make([]limiter.Decision, len(items))
		for i, it := range items {
			if ds[i], err = s.primary.Admit(ctx, it.Key, it.Provider, it.Count, it.DryRun, it.Now); err != nil {
				break
			}
		}
	}
	if !s.failed(err) {
		return ds, err
	}
	ds = make([]limiter.Decision, len(items))
	for i, it := range items {
		if ds[i], err = s.degraded(ctx, it.Key, it.Provider, it.Count, it.DryRun, it.Now); err != nil {
			return nil, err
		}
	}
	return ds, nil
}

// Refund implements limiter.Store. Failing open, the fallback gets the
// refund when the shared store cannot.
func (s *Store) Refund(ctx context.Context, key limiter.Key, p *limiter.Provider, count uint32, now time.Time) error {
	err := s.primary.Refund(ctx, key, p, count, now)
	if s.failed(err) && s.opts.Mode == Open {
		return s.opts.Fallback.Refund(ctx, key, s.scale(p), count, now)
	}
	return err
}

// Update implements limiter.Store. Reports and operator actions need the
// shared truth: while it is unreachable they fail (gRPC UNAVAILABLE), so a
// mailer retries them rather than have one replica believe something the
// others do not.
func (s *Store) Update(ctx context.Context, key limiter.Key, fn func(*limiter.Record) limiter.Change) (limiter.Record, error) {
	rec, err := s.primary.Update(ctx, key, fn)
	s.failed(err)
	return rec, err
}

// Get implements limiter.Store.
func (s *Store) Get(ctx context.Context, key limiter.Key) (limiter.Record, bool, error) {
	rec, ok, err := s.primary.Get(ctx, key)
	s.failed(err)
	return rec, ok, err
}

// List implements limiter.Store.
func (s *Store) List(ctx context.Context, cursor string, limit int, keep func(limiter.Key, *limiter.Record) bool) ([]limiter.Entry, string, error) {
	es, next, err := s.primary.List(ctx, cursor, limit, keep)
	s.failed(err)
	return es, next, err
}

// Close closes both stores.
func (s *Store) Close() error {
	err := s.primary.Close()
	if s.opts.Fallback != nil {
		err = errors.Join(err, s.opts.Fallback.Close())
	}
	return err
}

// scale returns p with every tier limit scaled by Share (at least 1).
func (s *Store) scale(p *limiter.Provider) *limiter.Provider {
	if v, ok := s.scaled.Load(p); ok {
		return v.(*limiter.Provider)
	}
	c := *p
	for t, l := range c.Limits {
		if l == 0 {
			continue
		}
		v := uint64(float64(l) * s.opts.Share)
		if v < 1 {
			v = 1
		}
		c.Limits[t] = v
	}
	v, _ := s.scaled.LoadOrStore(p, &c)
	return v.(*limiter.Provider)
}
