package limiter

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"
)

// Options configures a [Limiter].
type Options struct {
	// OnTransition, when set, is called once for every transition a step
	// made, after the store has written it. It must be fast and must not
	// call back into the Limiter.
	OnTransition func(Key, Transition)
}

// Limiter makes the decisions of sendgate over a [Store]: it finds each
// key's provider policy, checks counts, and runs the arithmetic of this
// package inside the store's atomic steps. It is safe for concurrent use.
type Limiter struct {
	store  Store
	policy atomic.Pointer[Policy]
	opts   Options
}

// New returns a Limiter over store with the given policy, which must be
// valid (see [Policy.Validate]).
func New(store Store, policy *Policy, opts Options) *Limiter {
	l := &Limiter{store: store, opts: opts}
	l.policy.Store(policy)
	return l
}

// SetPolicy replaces the policy for every later call; calls in flight finish
// with the old one.
func (l *Limiter) SetPolicy(p *Policy) { l.policy.Store(p) }

// Policy returns the policy in force.
func (l *Limiter) Policy() *Policy { return l.policy.Load() }

// Store returns the store the Limiter decides over.
func (l *Limiter) Store() Store { return l.store }

// Check decides whether count messages (0 means 1) may be sent for key now,
// and takes them on ALLOW unless dryRun. A count above a tier's configured
// capacity is a *CountError; a DEFER is not an error.
func (l *Limiter) Check(ctx context.Context, key Key, count uint32, dryRun bool, now time.Time) (Decision, error) {
	p := l.policy.Load().For(key.Provider)
	if err := p.CheckCount(count); err != nil {
		return Decision{}, err
	}
	d, err := l.store.Admit(ctx, key, p, count, dryRun, now)
	if err != nil {
		return Decision{}, fmt.Errorf("admit %v: %w", key, err)
	}
	return d, nil
}

// CheckBatch decides many checks at once, in order, through the store's
// [BatchAdmitter] when it has one. Each item's Provider is filled in from
// the policy; a count above a tier's capacity fails the whole batch with the
// item's index, before anything is decided.
func (l *Limiter) CheckBatch(ctx context.Context, items []AdmitItem) ([]Decision, error) {
	pol := l.policy.Load()
	for i := range items {
		it := &items[i]
		it.Provider = pol.For(it.Key.Provider)
		if err := it.Provider.CheckCount(it.Count); err != nil {
			return nil, &ItemError{Index: i, Err: err}
		}
	}
	if b, ok := l.store.(BatchAdmitter); ok {
		ds, err := b.AdmitBatch(ctx, items)
		if err != nil {
			return nil, fmt.Errorf("admit batch: %w", err)
		}
		return ds, nil
	}
	ds := make([]Decision, len(items))
	for i, it := range items {
		d, err := l.store.Admit(ctx, it.Key, it.Provider, it.Count, it.DryRun, it.Now)
		if err != nil {
			return nil, fmt.Errorf("admit %v: %w", it.Key, err)
		}
		ds[i] = d
	}
	return ds, nil
}

// ItemError is the failure of one item of a batch.
type ItemError struct {
	Index int
	Err   error
}

func (e *ItemError) Error() string { return fmt.Sprintf("item %d: %v", e.Index, e.Err) }
func (e *ItemError) Unwrap() error { return e.Err }

// Report runs a classified report through key's state machine. A report of
// class NotAttempted refunds the tokens instead.
func (l *Limiter) Report(ctx context.Context, key Key, r Report, now time.Time) (Outcome, error) {
	p := l.policy.Load().For(key.Provider)
	if r.Class == NotAttempted {
		if err := l.store.Refund(ctx, key, p, r.Count, now); err != nil {
			return Outcome{}, fmt.Errorf("refund %v: %w", key, err)
		}
	}
	var out Outcome
	_, err := l.store.Update(ctx, key, func(rec *Record) Change {
		var ch Change
		out, ch = Apply(rec, p, r, now)
		return ch
	})
	if err != nil {
		return Outcome{}, fmt.Errorf("report %v: %w", key, err)
	}
	l.notify(key, out.Transitions)
	return out, nil
}

// Hold stops every send of key until until (zero: until released), on
// behalf of actor, with note recorded in the history.
func (l *Limiter) Hold(ctx context.Context, key Key, until time.Time, note, actor string, now time.Time) (KeyView, error) {
	if !until.IsZero() && !until.After(now) {
		return KeyView{}, errors.New("until: not in the future")
	}
	return l.operate(ctx, key, now, func(rec *Record, p *Provider) Change {
		return Hold(rec, p, until, note, actor, now)
	})
}

// Release returns key to HEALTHY now.
func (l *Limiter) Release(ctx context.Context, key Key, note, actor string, now time.Time) (KeyView, error) {
	return l.operate(ctx, key, now, func(rec *Record, p *Provider) Change {
		return Release(rec, p, note, actor, now)
	})
}

// Reset forgets everything about key but the reset itself.
func (l *Limiter) Reset(ctx context.Context, key Key, note, actor string, now time.Time) (KeyView, error) {
	return l.operate(ctx, key, now, func(rec *Record, p *Provider) Change {
		return Reset(rec, p, note, actor, now)
	})
}

func (l *Limiter) operate(ctx context.Context, key Key, now time.Time, fn func(*Record, *Provider) Change) (KeyView, error) {
	p := l.policy.Load().For(key.Provider)
	rec, err := l.store.Update(ctx, key, func(rec *Record) Change { return fn(rec, p) })
	if err != nil {
		return KeyView{}, fmt.Errorf("update %v: %w", key, err)
	}
	if len(rec.Rep.History) > 0 {
		l.notify(key, rec.Rep.History[:1]) // the operator's own transition
	}
	return View(key, &rec, p, now), nil
}

// Get returns everything known about key at now. A key the store has never
// seen is HEALTHY with full tiers.
func (l *Limiter) Get(ctx context.Context, key Key, now time.Time) (KeyView, error) {
	rec, _, err := l.store.Get(ctx, key)
	if err != nil {
		return KeyView{}, fmt.Errorf("get %v: %w", key, err)
	}
	return View(key, &rec, l.policy.Load().For(key.Provider), now), nil
}

// Filter selects keys for [Limiter.List]. Empty fields match everything;
// State unspecified matches every state but HEALTHY.
type Filter struct {
	Provider string
	IP       string
	State    State
}

// List returns up to limit keys matching f, from cursor ("" for the start),
// and the cursor of the next page ("" at the end).
func (l *Limiter) List(ctx context.Context, f Filter, cursor string, limit int, now time.Time) ([]KeyView, string, error) {
	pol := l.policy.Load()
	keep := func(k Key, rec *Record) bool {
		if f.Provider != "" && k.Provider != f.Provider || f.IP != "" && k.IP != f.IP {
			return false
		}
		st := derive(rec, pol.For(k.Provider), now).state
		if f.State == StateUnspecified {
			return st != Healthy
		}
		return st == f.State
	}
	entries, next, err := l.store.List(ctx, cursor, limit, keep)
	if err != nil {
		return nil, "", fmt.Errorf("list: %w", err)
	}
	views := make([]KeyView, len(entries))
	for i := range entries {
		e := &entries[i]
		views[i] = View(e.Key, &e.Record, pol.For(e.Key.Provider), now)
	}
	return views, next, nil
}

func (l *Limiter) notify(key Key, trs []Transition) {
	if l.opts.OnTransition == nil {
		return
	}
	for _, tr := range trs {
		l.opts.OnTransition(key, tr)
	}
}
