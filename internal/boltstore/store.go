// Package boltstore is the embedded durable [limiter.Store]: the records live
// in memory (a [memstore.Store] answers every call) and are persisted to one
// bbolt file.
//
// What is durable, and when:
//   - A reputation transition (an Update whose step returns
//     [limiter.Transitioned] or [limiter.Cleared]: a block, a throttle change,
//     a probe result, a hold, a release, a reset) is committed to the file,
//     with fsync, before Update returns. Concurrent transitions share one
//     commit (group commit).
//   - Everything else (report counters, [limiter.Touched], and the bucket
//     levels that Admit and Refund change) is written in batches every
//     [Options.FlushInterval] and by Close, so a crash loses at most one
//     interval of consumption.
//   - A key whose record carries no information ([limiter.Idle]) is not
//     written, and is deleted from the file when it becomes idle and the
//     memory store evicts it.
//
// Availability over durability: when a write fails (read-only or full
// disk), every call keeps succeeding from memory, [Store.Healthy] reports the
// failure and [Store.WriteErrors] counts it, and the writes are retried at
// every flush until one succeeds. bbolt rolls a failed transaction back, so
// what is on disk stays as it was.
//
// The file holds a bucket "records" (key "ip|provider", value a versioned
// binary record) and a bucket "meta" with "schema_version". [Open] refuses,
// naming the file, one written by a newer or unknown schema, a corrupt one,
// and one locked by another process; it never replaces a file.
package boltstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/sendgate/sendgate/limiter"
	"github.com/sendgate/sendgate/limiter/memstore"
)

// SchemaVersion is the layout of the file this package writes.
const SchemaVersion = 1

// FileName is the conventional name of the state file in a data directory.
const FileName = "sendgate.db"

// DefaultFlushInterval is the flush interval when Options.FlushInterval is
// zero.
const DefaultFlushInterval = time.Second

// DefaultLockTimeout is how long Open waits for another process's lock on
// the file when Options.LockTimeout is zero.
const DefaultLockTimeout = time.Second

// flushChunk bounds the keys written by one transaction of a flush.
const flushChunk = 10000

var (
	recordsBucket = []byte("records")
	metaBucket    = []byte("meta")
	schemaKey     = []byte("schema_version")
)

// migrations upgrade a file from the schema version they are indexed by to
// the next one, inside one transaction. Schema 1 is the first; there is
// nothing to migrate yet.
var migrations = map[uint64]func(tx *bolt.Tx) error{}

// Options configures a [Store]. The zero value is usable.
type Options struct {
	// FlushInterval is how often bucket levels and counters are written;
	// zero means [DefaultFlushInterval]. A crash loses at most this much
	// consumption.
	FlushInterval time.Duration
	// LockTimeout is how long Open waits for the file lock held by another
	// process before it fails; zero means [DefaultLockTimeout].
	LockTimeout time.Duration
	// Policy returns a provider's policy, by which idle keys are recognised
	// (not written, deleted, evicted). nil means every key is kept. See
	// [Store.SetPolicy].
	Policy func(provider string) *limiter.Provider
	// SweepInterval is how often the memory store evicts idle keys (see
	// memstore.Options.SweepInterval); zero means a minute, negative never.
	SweepInterval time.Duration
	// Now is the clock of the flusher and the sweeper; nil means time.Now.
	Now func() time.Time
	// Logger receives the start-up summary and write failures; nil
	// discards them.
	Logger *slog.Logger
}

// Store is the embedded durable store. It is safe for concurrent use.
// Create it with [Open]; call [Store.Close] on shutdown to write what is
// pending.
type Store struct {
	path   string
	db     *bolt.DB
	mem    *memstore.Store
	log    *slog.Logger
	now    func() time.Time
	policy atomic.Pointer[func(string) *limiter.Provider]

	// The writer goroutine owns the file. Callers hand it keys under wmu.
	wmu     sync.Mutex
	sync    map[limiter.Key]struct{} // transitions waiting for a commit
	touched map[limiter.Key]struct{} // Rep changes to write at the next flush
	batch   chan struct{}            // closed when the commit that will take sync is done
	closed  bool

	kick      chan struct{} // cap 1: a transition is waiting
	flushReq  chan chan struct{}
	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
	closeErr  error

	errMu     sync.Mutex
	lastErr   error
	writeErrs atomic.Uint64

	// writeHook, when set (by tests), runs inside every write transaction
	// before it commits; an error fails the transaction as a failed disk
	// write would.
	writeHook atomic.Pointer[func(*bolt.Tx) error]
}

var _ limiter.Store = (*Store)(nil)

// Open opens (creating it if needed) the state file at path, loads every
// key into memory, logs how many and how long it took, and starts the
// flusher. It fails, naming the file, when another process holds the file
// (after opts.LockTimeout), when the file is not a valid bbolt file or a
// record in it cannot be read, and when its schema is newer than
// [SchemaVersion] or unknown. The directory of path must exist.
func Open(path string, opts Options) (*Store, error) {
	start := time.Now()
	if opts.FlushInterval <= 0 {
		opts.FlushInterval = DefaultFlushInterval
	}
	if opts.LockTimeout <= 0 {
		opts.LockTimeout = DefaultLockTimeout
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		return nil, fmt.Errorf("open state file %s: is a directory", path)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout:      opts.LockTimeout,
		FreelistType: bolt.FreelistMapType,
	})
	if err != nil {
		return nil, openError(path, err)
	}
	s := &Store{
		path:     path,
		db:       db,
		log:      log,
		now:      opts.Now,
		sync:     make(map[limiter.Key]struct{}),
		touched:  make(map[limiter.Key]struct{}),
		batch:    make(chan struct{}),
		kick:     make(chan struct{}, 1),
		flushReq: make(chan chan struct{}),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	if opts.Policy != nil {
		s.policy.Store(&opts.Policy)
	}
	if err := s.prepare(); err != nil {
		db.Close()
		return nil, err
	}
	s.mem = memstore.New(memstore.Options{
		SweepInterval: opts.SweepInterval,
		Now:           opts.Now,
		Policy:        opts.Policy,
		OnChange:      s.onChange,
		TrackDirty:    true,
	})
	opened := time.Now()
	n, err := s.load()
	if err != nil {
		s.mem.Close()
		db.Close()
		return nil, err
	}
	took := time.Since(start)
	log.Info("state loaded", "file", path, "keys", n, "took", took, "open", opened.Sub(start), "load", time.Since(opened))
	go s.run(opts.FlushInterval)
	return s, nil
}

// openError explains a failure of bolt.Open.
func openError(path string, err error) error {
	switch {
	case errors.Is(err, bolterrors.ErrTimeout):
		return fmt.Errorf("open state file %s: locked by another process (is another sendgate using this data directory?): %w", path, err)
	case errors.Is(err, bolterrors.ErrInvalid), errors.Is(err, bolterrors.ErrVersionMismatch),
		errors.Is(err, bolterrors.ErrChecksum), errors.Is(err, bolterrors.ErrInvalidMapping):
		return fmt.Errorf("open state file %s: not a valid state file, or corrupt (move it aside to start empty, or restore a backup): %w", path, err)
	}
	return fmt.Errorf("open state file %s: %w", path, err)
}

// prepare checks the schema of the file, creates the buckets of a new file
// and migrates an older one.
func (s *Store) prepare() (err error) {
	defer s.recoverCorrupt(&err)
	var have uint64
	fresh := false
	err = s.db.View(func(tx *bolt.Tx) error {
		meta := tx.Bucket(metaBucket)
		if meta == nil {
			empty := true
			_ = tx.ForEach(func([]byte, *bolt.Bucket) error { empty = false; return nil })
			if !empty {
				return fmt.Errorf("state file %s: not a sendgate state file (no meta bucket)", s.path)
			}
			fresh = true
			return nil
		}
		raw := meta.Get(schemaKey)
		v, err := strconv.ParseUint(string(raw), 10, 64)
		if err != nil || v == 0 {
			return fmt.Errorf("state file %s: unknown schema version %q", s.path, raw)
		}
		if v > SchemaVersion {
			return fmt.Errorf("state file %s: written by a newer sendgate (schema version %d; this build reads up to %d): upgrade sendgate or restore a backup", s.path, v, SchemaVersion)
		}
		if tx.Bucket(recordsBucket) == nil {
			return fmt.Errorf("state file %s: corrupt: no records bucket", s.path)
		}
		have = v
		return nil
	})
	if err != nil {
		return err
	}
	if !fresh && have == SchemaVersion {
		return nil
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		if fresh {
			if _, err := tx.CreateBucket(recordsBucket); err != nil {
				return fmt.Errorf("state file %s: create records: %w", s.path, err)
			}
			meta, err := tx.CreateBucket(metaBucket)
			if err != nil {
				return fmt.Errorf("state file %s: create meta: %w", s.path, err)
			}
			return meta.Put(schemaKey, []byte(strconv.Itoa(SchemaVersion)))
		}
		for v := have; v < SchemaVersion; v++ {
			m, ok := migrations[v]
			if !ok {
				return fmt.Errorf("state file %s: schema version %d cannot be migrated to %d", s.path, v, SchemaVersion)
			}
			if err := m(tx); err != nil {
				return fmt.Errorf("state file %s: migrate schema %d to %d: %w", s.path, v, v+1, err)
			}
		}
		s.log.Info("state file migrated", "file", s.path, "from", have, "to", SchemaVersion)
		return tx.Bucket(metaBucket).Put(schemaKey, []byte(strconv.Itoa(SchemaVersion)))
	})
}

// recoverCorrupt turns a panic of bbolt on damaged pages into an error
// naming the file.
func (s *Store) recoverCorrupt(err *error) {
	if r := recover(); r != nil {
		*err = fmt.Errorf("state file %s: corrupt (move it aside to start empty, or restore a backup): %v", s.path, r)
	}
}

// load reads every record into the memory store: one goroutine walks the
// file and hands batches of raw records to GOMAXPROCS workers that decode
// them and store them in memory, all inside one read transaction (the raw
// slices point into bbolt's memory map, valid until it ends).
func (s *Store) load() (n int, err error) {
	defer s.recoverCorrupt(&err)
	type kv struct{ k, v []byte }
	const batchSize = 1024
	workers := runtime.GOMAXPROCS(0)
	var (
		mu       sync.Mutex
		firstErr error
		loaded   atomic.Int64
		wg       sync.WaitGroup
	)
	fail := func(err error) {
		mu.Lock()
		if firstErr == nil {
			firstErr = err
		}
		mu.Unlock()
	}
	failed := func() bool {
		mu.Lock()
		defer mu.Unlock()
		return firstErr != nil
	}
	err = s.db.View(func(tx *bolt.Tx) error {
		batches := make(chan []kv, workers)
		for range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for b := range batches {
					for _, e := range b {
						key, ok := parseKey(e.k)
						if !ok {
							fail(fmt.Errorf("state file %s: corrupt: bad key %q", s.path, e.k))
							continue
						}
						rec, err := decode(e.v)
						if err != nil {
							fail(fmt.Errorf("state file %s: corrupt record %q: %w", s.path, e.k, err))
							continue
						}
						s.mem.Put(key, rec)
						loaded.Add(1)
					}
				}
			}()
		}
		// The workers are done before the transaction ends, even when
		// bbolt panics on a damaged page.
		defer wg.Wait()
		defer close(batches)
		batch := make([]kv, 0, batchSize)
		c := tx.Bucket(recordsBucket).Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			if v == nil {
				fail(fmt.Errorf("state file %s: corrupt: unexpected bucket %q in records", s.path, k))
				break
			}
			batch = append(batch, kv{k, v})
			if len(batch) == batchSize {
				if failed() {
					break
				}
				batches <- batch
				batch = make([]kv, 0, batchSize)
			}
		}
		batches <- batch
		return nil
	})
	if err == nil {
		err = firstErr
	}
	return int(loaded.Load()), err
}

// parseKey splits "ip|provider" (an IP never holds '|') into one string
// allocation.
func parseKey(k []byte) (limiter.Key, bool) {
	for i, c := range k {
		if c == '|' {
			if i == 0 {
				return limiter.Key{}, false
			}
			str := string(k)
			return limiter.Key{IP: str[:i], Provider: str[i+1:]}, true
		}
	}
	return limiter.Key{}, false
}

func appendKey(b []byte, k limiter.Key) []byte {
	b = append(b, k.IP...)
	b = append(b, '|')
	return append(b, k.Provider...)
}

// Path returns the file's path.
func (s *Store) Path() string { return s.path }

// DefaultPath returns the state file's path in dataDir.
func DefaultPath(dataDir string) string { return filepath.Join(dataDir, FileName) }

// SetPolicy replaces the provider lookup by which idle keys are recognised,
// e.g. s.SetPolicy(policy.For) after a policy reload.
func (s *Store) SetPolicy(fn func(provider string) *limiter.Provider) {
	if fn == nil {
		s.policy.Store(nil)
	} else {
		s.policy.Store(&fn)
	}
	s.mem.SetPolicy(fn)
}

// Admit runs [limiter.Admit] in memory; the bucket levels reach the file
// at the next flush. It never fails.
func (s *Store) Admit(ctx context.Context, key limiter.Key, p *limiter.Provider, count uint32, dryRun bool, now time.Time) (limiter.Decision, error) {
	return s.mem.Admit(ctx, key, p, count, dryRun, now)
}

// Refund runs [limiter.Refund] in memory; the bucket levels reach the file
// at the next flush. It never fails.
func (s *Store) Refund(ctx context.Context, key limiter.Key, p *limiter.Provider, count uint32, now time.Time) error {
	return s.mem.Refund(ctx, key, p, count, now)
}

// Update runs fn in memory (see memstore.Store.Update). When fn returns
// [limiter.Transitioned] or [limiter.Cleared], Update returns only after the
// record is committed to the file, or after the commit failed, or ctx is
// done: a failed commit does not fail Update (the record is kept in memory
// and retried at every flush, and [Store.Healthy] reports it), because
// answering matters more than the file. Other changes are written at the
// next flush.
func (s *Store) Update(ctx context.Context, key limiter.Key, fn func(rec *limiter.Record) limiter.Change) (limiter.Record, error) {
	var c limiter.Change
	rec, err := s.mem.Update(ctx, key, func(r *limiter.Record) limiter.Change {
		c = fn(r)
		return c
	})
	if err != nil || (c != limiter.Transitioned && c != limiter.Cleared) {
		return rec, err
	}
	s.wmu.Lock()
	if s.closed {
		s.wmu.Unlock()
		return rec, nil
	}
	// onChange put key in s.sync before mem.Update returned, so it is in
	// this batch or in one that committed before it.
	done := s.batch
	s.wmu.Unlock()
	select {
	case s.kick <- struct{}{}:
	default:
	}
	select {
	case <-done:
	case <-ctx.Done():
	}
	return rec, nil
}

// onChange runs inside memstore's step, under the key's shard lock.
func (s *Store) onChange(key limiter.Key, _ *limiter.Record, c limiter.Change) {
	s.wmu.Lock()
	if c == limiter.Transitioned || c == limiter.Cleared {
		s.sync[key] = struct{}{}
	} else {
		s.touched[key] = struct{}{}
	}
	s.wmu.Unlock()
}

// Get returns a copy of key's record from memory. It never fails.
func (s *Store) Get(ctx context.Context, key limiter.Key) (limiter.Record, bool, error) {
	return s.mem.Get(ctx, key)
}

// List lists the records in memory (see memstore.Store.List).
func (s *Store) List(ctx context.Context, cursor string, limit int, keep func(limiter.Key, *limiter.Record) bool) ([]limiter.Entry, string, error) {
	return s.mem.List(ctx, cursor, limit, keep)
}

// Flush writes everything pending now, as the flusher does every
// interval, and returns [Store.Healthy] afterwards. After Close it does
// nothing.
func (s *Store) Flush() error {
	done := make(chan struct{})
	select {
	case s.flushReq <- done:
		<-done
		return s.Healthy()
	case <-s.done:
		return s.Healthy()
	}
}

// Healthy returns nil when the last write to the file succeeded, and the
// error of the last write otherwise; for readiness checks.
func (s *Store) Healthy() error {
	s.errMu.Lock()
	defer s.errMu.Unlock()
	return s.lastErr
}

// WriteErrors returns how many writes to the file have failed since Open.
func (s *Store) WriteErrors() uint64 { return s.writeErrs.Load() }

// Len returns the number of keys in memory.
func (s *Store) Len() int { return s.mem.Len() }

// Close stops the sweeper, writes everything pending, and closes the file.
// Later calls keep answering from memory but write nothing. It returns the
// error of the final write, if any; it may be called more than once.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.mem.Close()
		s.wmu.Lock()
		s.closed = true
		s.wmu.Unlock()
		close(s.stop)
		<-s.done
		s.closeErr = s.Healthy()
		if err := s.db.Close(); err != nil && s.closeErr == nil {
			s.closeErr = fmt.Errorf("close state file %s: %w", s.path, err)
		}
	})
	return s.closeErr
}
