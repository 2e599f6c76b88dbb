package limiter

import (
	"context"
	"errors"
	"time"
)

// Change tells a store what a step did to a record's Rep, and so how it must
// be written.
type Change uint8

const (
	// Unchanged: nothing to write.
	Unchanged Change = iota
	// Touched: Rep changed (counters), but no state transition; a durable
	// store may write it lazily.
	Touched
	// Transitioned: the state moved (or an operator acted); a durable store
	// writes Rep before the step returns.
	Transitioned
	// Cleared: a reset; the store forgets Use as well, and writes Rep before
	// the step returns.
	Cleared
)

// Store keeps the records of keys. Every method is atomic per key, and safe
// for concurrent use. A store runs this package's arithmetic ([Admit],
// [Refund] and the functions passed to Update) inside its own atomic step;
// it never decides anything itself. Every store passes the conformance suite
// in package storetest.
type Store interface {
	// Admit runs [Admit] on the key's record atomically and keeps the result.
	// A store with its own clock (Redis) may use that clock instead of now.
	Admit(ctx context.Context, key Key, p *Provider, count uint32, dryRun bool, now time.Time) (Decision, error)
	// Refund runs [Refund] on the key's record atomically.
	Refund(ctx context.Context, key Key, p *Provider, count uint32, now time.Time) error
	// Update runs fn on a copy of the key's record (a zero Record when the
	// store has none) and stores the result according to the Change fn
	// returns: Rep for Touched and Transitioned, Rep and a zero Use for
	// Cleared. fn must not write Use. A store may call fn more than once
	// (optimistic concurrency), so fn must have no other effects. Update
	// returns the record as stored.
	Update(ctx context.Context, key Key, fn func(rec *Record) Change) (Record, error)
	// Get returns a copy of the key's record; ok is false when there is none.
	Get(ctx context.Context, key Key) (rec Record, ok bool, err error)
	// List returns up to limit entries for which keep returns true, starting
	// at cursor ("" for the start), and the cursor of the next page ("" at
	// the end). keep may be nil.
	List(ctx context.Context, cursor string, limit int, keep func(Key, *Record) bool) (entries []Entry, next string, err error)
	// Close releases the store's resources, writing what it holds lazily.
	Close() error
}

// Entry is one key with its record.
type Entry struct {
	Key    Key
	Record Record
}

// ErrUnavailable wraps a store's failure to reach its backend.
var ErrUnavailable = errors.New("store unavailable")

// AdmitItem is one check of a batch.
type AdmitItem struct {
	Key      Key
	Provider *Provider
	Count    uint32
	DryRun   bool
	Now      time.Time
}

// BatchAdmitter is implemented by stores that decide many checks in fewer
// round trips than one per item (Redis pipelines them). Items of the same
// key are decided in order.
type BatchAdmitter interface {
	AdmitBatch(ctx context.Context, items []AdmitItem) ([]Decision, error)
}
