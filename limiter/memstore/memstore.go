// Package memstore is the in-memory [limiter.Store]: records in a sharded
// map, each key's step atomic under its shard's lock.
//
// It is the store of tests and throwaway runs, and the hot half of the
// embedded store, which keeps its records here and persists them through the
// hooks of [Options] (OnChange, TrackDirty with [Store.DrainDirty]) and
// [Store.Range] and [Store.Put].
//
// Keys that carry no information ([limiter.Idle]: HEALTHY, no strikes, no
// learned ceilings, buckets full) are evicted by a background sweeper, so
// memory follows the active key count, not history.
package memstore

import (
	"context"
	"fmt"
	"hash/maphash"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/sendgate/sendgate/limiter"
)

// numShards is the number of shards; a power of two.
const numShards = 256

// DefaultSweepInterval is the sweeper's interval when Options.SweepInterval
// is zero.
const DefaultSweepInterval = time.Minute

// Options configures a [Store]. The zero value is a store whose sweeper runs
// every minute but evicts nothing until a policy is set.
type Options struct {
	// SweepInterval is how often the background sweeper looks for idle
	// keys; zero means [DefaultSweepInterval], negative means no background
	// sweeper (call [Store.Sweep] yourself).
	SweepInterval time.Duration
	// Now is the sweeper's clock; nil means time.Now.
	Now func() time.Time
	// Policy returns the provider policy of a key's provider, which eviction
	// needs to judge [limiter.Idle]. nil, or a nil result for a provider,
	// means nothing is evicted (for that provider). See [Store.SetPolicy].
	Policy func(provider string) *limiter.Provider
	// OnChange, when set, is called inside Update's atomic step, under the
	// key's shard lock, after the store wrote a change other than
	// [limiter.Unchanged], with the record as stored. A durable store writes
	// Rep here for [limiter.Transitioned] and [limiter.Cleared] before the
	// step returns. It must not retain rec, modify it, or call the Store.
	OnChange func(key limiter.Key, rec *limiter.Record, c limiter.Change)
	// TrackDirty keeps the set of keys whose Use changed (an ALLOW that was
	// not a dry run, a Refund, a Cleared update, an eviction) since the last
	// [Store.DrainDirty]. Off, it costs nothing.
	TrackDirty bool
}

// Store is the in-memory store. It is safe for concurrent use; Admit
// allocates nothing for an existing key. Create it with [New] and stop its
// sweeper with [Store.Close].
type Store struct {
	seed       maphash.Seed
	shards     [numShards]shard
	policy     atomic.Pointer[func(string) *limiter.Provider]
	onChange   func(limiter.Key, *limiter.Record, limiter.Change)
	trackDirty bool
	now        func() time.Time

	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

var _ limiter.Store = (*Store)(nil)

// entry is a stored record with its dirty mark, so that marking a key dirty
// again costs a flag test, not a map write.
type entry struct {
	rec   limiter.Record
	dirty bool
}

type shardData struct {
	mu    sync.Mutex
	m     map[limiter.Key]*entry
	dirty map[limiter.Key]struct{} // nil unless tracking; guarded by mu
}

// shard pads shardData to a multiple of 128 bytes, so that the locks of two
// shards never share a cache line (or an adjacent-line prefetch pair).
type shard struct {
	shardData
	_ [128 - unsafe.Sizeof(shardData{})%128]byte
}

// New returns an empty store and, unless opts.SweepInterval is negative,
// starts its sweeper.
func New(opts Options) *Store {
	s := &Store{
		seed:       maphash.MakeSeed(),
		onChange:   opts.OnChange,
		trackDirty: opts.TrackDirty,
		now:        opts.Now,
	}
	if s.now == nil {
		s.now = time.Now
	}
	for i := range s.shards {
		s.shards[i].m = make(map[limiter.Key]*entry)
		if s.trackDirty {
			s.shards[i].dirty = make(map[limiter.Key]struct{})
		}
	}
	if opts.Policy != nil {
		s.SetPolicy(opts.Policy)
	}
	if opts.SweepInterval >= 0 {
		iv := opts.SweepInterval
		if iv == 0 {
			iv = DefaultSweepInterval
		}
		s.stop, s.done = make(chan struct{}), make(chan struct{})
		go s.sweeper(iv)
	}
	return s
}

// SetPolicy replaces the provider lookup that eviction judges idleness by,
// e.g. s.SetPolicy(policy.For) after a reload. nil stops eviction.
func (s *Store) SetPolicy(fn func(provider string) *limiter.Provider) {
	if fn == nil {
		s.policy.Store(nil)
		return
	}
	s.policy.Store(&fn)
}

func (s *Store) shard(k limiter.Key) *shard {
	h := maphash.String(s.seed, k.IP)
	h ^= maphash.String(s.seed, k.Provider) + 0x9e3779b97f4a7c15 + h<<6 + h>>2
	return &s.shards[h&(numShards-1)]
}

// markDirty records that key's Use changed. The caller holds sh.mu.
func (s *Store) markDirty(sh *shard, key limiter.Key, e *entry) {
	if !s.trackDirty || e.dirty {
		return
	}
	e.dirty = true
	sh.dirty[key] = struct{}{}
}

// Admit runs [limiter.Admit] on key's record under its shard lock. A key
// without a record is judged from a zero record, which is stored only when
// the ALLOW took something, so that dry runs and deferrals of unknown keys
// leave nothing behind. It never fails and allocates nothing for an
// existing key.
func (s *Store) Admit(_ context.Context, key limiter.Key, p *limiter.Provider, count uint32, dryRun bool, now time.Time) (limiter.Decision, error) {
	sh := s.shard(key)
	sh.mu.Lock()
	if e, ok := sh.m[key]; ok {
		d := limiter.Admit(&e.rec, p, count, dryRun, now)
		if !dryRun && d.Verdict == limiter.Allow {
			s.markDirty(sh, key, e)
		}
		sh.mu.Unlock()
		return d, nil
	}
	var rec limiter.Record
	d := limiter.Admit(&rec, p, count, dryRun, now)
	if !dryRun && d.Verdict == limiter.Allow {
		e := &entry{rec: rec}
		sh.m[key] = e
		s.markDirty(sh, key, e)
	}
	sh.mu.Unlock()
	return d, nil
}

// Refund runs [limiter.Refund] on key's record under its shard lock. A key
// without a record has full buckets already, so nothing is stored for it.
// It never fails.
func (s *Store) Refund(_ context.Context, key limiter.Key, p *limiter.Provider, count uint32, now time.Time) error {
	sh := s.shard(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if e, ok := sh.m[key]; ok {
		limiter.Refund(&e.rec, p, count, now)
		s.markDirty(sh, key, e)
	}
	return nil
}

// Update runs fn once, under key's shard lock, on a deep copy of its record
// (a zero Record when there is none), and stores the result by the Change
// fn returns: nothing for Unchanged; Rep for Touched and Transitioned; Rep
// and a zero Use for Cleared. Use as fn left it is ignored. Every write sets
// Rep.Version to one more than the stored version, whatever fn left there.
// fn must not call the Store. Update returns a copy of the record as stored
// (a zero Record when fn left an unknown key Unchanged); it fails only for a
// Change value it does not know.
func (s *Store) Update(_ context.Context, key limiter.Key, fn func(rec *limiter.Record) limiter.Change) (limiter.Record, error) {
	sh := s.shard(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e := sh.m[key]
	var work limiter.Record
	if e != nil {
		work = clone(&e.rec)
	}
	c := fn(&work)
	switch c {
	case limiter.Unchanged:
		if e == nil {
			return limiter.Record{}, nil
		}
		return clone(&e.rec), nil
	case limiter.Touched, limiter.Transitioned, limiter.Cleared:
	default:
		return limiter.Record{}, fmt.Errorf("update %v: unknown change %d", key, c)
	}
	if e == nil {
		e = &entry{}
		sh.m[key] = e
	}
	work.Rep.Version = e.rec.Rep.Version + 1
	e.rec.Rep = work.Rep // work's slices are its own: clone copied them
	if c == limiter.Cleared {
		e.rec.Use = limiter.Usage{}
		s.markDirty(sh, key, e)
	}
	if s.onChange != nil {
		s.onChange(key, &e.rec, c)
	}
	return clone(&e.rec), nil
}

// Get returns a copy of key's record that shares nothing with the store;
// ok is false when there is none. It never fails.
func (s *Store) Get(_ context.Context, key limiter.Key) (limiter.Record, bool, error) {
	sh := s.shard(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e, ok := sh.m[key]
	if !ok {
		return limiter.Record{}, false, nil
	}
	return clone(&e.rec), true, nil
}

// List returns up to limit entries (every one when limit <= 0) for which
// keep returns true, in the byte order of Key.String() ("ip|provider"),
// starting after cursor, and the cursor of the next page: the String() of
// the page's last key, or "" when no key is left. keep, which may be nil,
// runs under a shard lock: it must not retain the record or call the Store.
// It scans and sorts every matching key for each page, which is fine for
// admin use. It fails only when ctx is done.
func (s *Store) List(ctx context.Context, cursor string, limit int, keep func(limiter.Key, *limiter.Record) bool) ([]limiter.Entry, string, error) {
	var keys []limiter.Key
	for i := range s.shards {
		if err := ctx.Err(); err != nil {
			return nil, "", fmt.Errorf("list: %w", err)
		}
		sh := &s.shards[i]
		sh.mu.Lock()
		for k, e := range sh.m {
			if cursor != "" && compareKey(k, cursor) <= 0 {
				continue
			}
			if keep == nil || keep(k, &e.rec) {
				keys = append(keys, k)
			}
		}
		sh.mu.Unlock()
	}
	slices.SortFunc(keys, compareKeys)
	next := ""
	if limit > 0 && len(keys) > limit {
		keys = keys[:limit]
		next = keys[limit-1].String()
	}
	entries := make([]limiter.Entry, 0, len(keys))
	for _, k := range keys {
		sh := s.shard(k)
		sh.mu.Lock()
		// The key may have gone or changed since the scan: list it as it
		// is now, if it still qualifies.
		if e, ok := sh.m[k]; ok && (keep == nil || keep(k, &e.rec)) {
			entries = append(entries, limiter.Entry{Key: k, Record: clone(&e.rec)})
		}
		sh.mu.Unlock()
	}
	return entries, next, nil
}

// Close stops the sweeper and waits for it. The store stays usable; Close
// may be called more than once and always returns nil.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		if s.stop != nil {
			close(s.stop)
			<-s.done
		}
	})
	return nil
}

// Len returns the number of keys stored.
func (s *Store) Len() int {
	n := 0
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		n += len(sh.m)
		sh.mu.Unlock()
	}
	return n
}

// Sweep evicts every key whose record is [limiter.Idle] at now under the
// policy set, one shard at a time, and returns how many it evicted. With
// no policy it evicts nothing. The background sweeper calls it; tests call
// it directly.
func (s *Store) Sweep(now time.Time) int {
	pf := s.policy.Load()
	if pf == nil {
		return 0
	}
	policy := *pf
	n := 0
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		for k, e := range sh.m {
			p := policy(k.Provider)
			if p == nil || !limiter.Idle(&e.rec, p, now) {
				continue
			}
			delete(sh.m, k)
			if s.trackDirty {
				sh.dirty[k] = struct{}{}
			}
			n++
		}
		sh.mu.Unlock()
	}
	return n
}

func (s *Store) sweeper(interval time.Duration) {
	defer close(s.done)
	tk := time.NewTicker(interval)
	defer tk.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-tk.C:
			s.Sweep(s.now())
		}
	}
}

// Range calls fn for every key and its record, shard by shard, until fn
// returns false. It holds the lock of the shard being visited (and no other)
// while fn runs, so each record is consistent, and keys of other shards
// keep moving; fn must be quick, must not retain or modify rec, and must not
// call the Store. Keys stored or removed during Range may or may not be
// visited.
func (s *Store) Range(fn func(key limiter.Key, rec *limiter.Record) bool) {
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		for k, e := range sh.m {
			if !fn(k, &e.rec) {
				sh.mu.Unlock()
				return
			}
		}
		sh.mu.Unlock()
	}
}

// Put stores a deep copy of rec for key as it is, replacing any record, for
// loading a snapshot. It calls no hook and marks nothing dirty.
func (s *Store) Put(key limiter.Key, rec limiter.Record) {
	sh := s.shard(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	sh.m[key] = &entry{rec: clone(&rec)}
}

// DrainDirty calls fn for every key whose Use changed since the last call
// (only with Options.TrackDirty; otherwise it does nothing), with the record
// as it is now, or nil when the key has since been evicted, and empties the
// set. It holds the visited shard's lock while fn runs: fn must copy what it
// needs, return quickly, and not call the Store.
func (s *Store) DrainDirty(fn func(key limiter.Key, rec *limiter.Record)) {
	if !s.trackDirty {
		return
	}
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		for k := range sh.dirty {
			if e, ok := sh.m[k]; ok {
				e.dirty = false
				fn(k, &e.rec)
			} else {
				fn(k, nil)
			}
		}
		clear(sh.dirty)
		sh.mu.Unlock()
	}
}

// clone returns a copy of r that shares no memory with it.
func clone(r *limiter.Record) limiter.Record {
	c := *r
	c.Rep.Triggers = slices.Clone(r.Rep.Triggers)
	c.Rep.History = slices.Clone(r.Rep.History)
	return c
}

// compareKey compares k.String() with s without building the string.
func compareKey(k limiter.Key, s string) int {
	n := len(k.IP)
	if len(s) <= n || s[:n] != k.IP {
		// The difference is within the IP part of k (or s ends there).
		m := min(n, len(s))
		if c := strings.Compare(k.IP[:m], s[:m]); c != 0 {
			return c
		}
		return 1 // s is a proper prefix of k.IP
	}
	if c := strings.Compare("|", s[n:n+1]); c != 0 {
		return c
	}
	return strings.Compare(k.Provider, s[n+1:])
}

// compareKeys orders keys by the byte order of their String() forms.
func compareKeys(a, b limiter.Key) int {
	if a.IP == b.IP {
		return strings.Compare(a.Provider, b.Provider)
	}
	// The first difference lies in the IP parts, or one IP is a prefix of
	// the other and the '|' after it is compared with the longer IP's byte.
	m := min(len(a.IP), len(b.IP))
	if c := strings.Compare(a.IP[:m], b.IP[:m]); c != 0 {
		return c
	}
	if len(a.IP) < len(b.IP) {
		return compareByte('|', b.IP[m], a.Provider, b.IP[m+1:]+"|"+b.Provider)
	}
	return -compareByte('|', a.IP[m], b.Provider, a.IP[m+1:]+"|"+a.Provider)
}

// compareByte compares x+restX with y+restY.
func compareByte(x, y byte, restX, restY string) int {
	switch {
	case x < y:
		return -1
	case x > y:
		return 1
	}
	return strings.Compare(restX, restY)
}
