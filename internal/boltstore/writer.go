package boltstore

import (
	"context"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/sendgate/sendgate/limiter"
)

// op is one write to the records bucket: a put, or a delete when val is nil.
type op struct {
	key limiter.Key
	val []byte
}

// run is the writer goroutine, the only one that writes the file: it
// commits transitions as soon as they are handed over (every transition
// handed over while a commit runs shares the next one), flushes the rest
// every interval, and flushes everything when stopped. Keys whose write
// failed are kept in retry and written again at every flush.
func (s *Store) run(interval time.Duration) {
	defer close(s.done)
	tk := time.NewTicker(interval)
	defer tk.Stop()
	retry := make(map[limiter.Key]struct{})
	for {
		select {
		case <-s.stop:
			s.flush(retry)
			return
		case <-s.kick:
			s.commitSync(retry)
		case <-tk.C:
			s.flush(retry)
		case done := <-s.flushReq:
			s.flush(retry)
			close(done)
		}
	}
}

// take hands the keys waiting for the writer over to it, with the channel
// to close when they are written. touched is taken only when all is set.
func (s *Store) take(all bool) (sync, touched map[limiter.Key]struct{}, done chan struct{}) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	sync, done = s.sync, s.batch
	s.sync, s.batch = make(map[limiter.Key]struct{}), make(chan struct{})
	if all {
		touched = s.touched
		s.touched = make(map[limiter.Key]struct{})
	}
	return sync, touched, done
}

// commitSync writes the transitions handed over since the last commit.
func (s *Store) commitSync(retry map[limiter.Key]struct{}) {
	keys, _, done := s.take(false)
	defer close(done)
	if len(keys) == 0 {
		return
	}
	now := s.now()
	ops := make([]op, 0, len(keys))
	for k := range keys {
		ops = append(ops, s.current(k, now))
	}
	s.write(ops, retry)
}

// flush writes every key whose record changed since the last flush: the
// bucket levels the memory store marked dirty (and its evictions), the
// touched and transitioned keys, and the keys of failed writes.
func (s *Store) flush(retry map[limiter.Key]struct{}) {
	keys, touched, done := s.take(true)
	defer close(done)
	now := s.now()
	pf := s.policy.Load()
	var ops []op
	seen := make(map[limiter.Key]struct{})
	s.mem.DrainDirty(func(k limiter.Key, rec *limiter.Record) {
		seen[k] = struct{}{}
		ops = append(ops, s.encodeOp(k, rec, pf, now))
	})
	for _, set := range []map[limiter.Key]struct{}{keys, touched, retry} {
		for k := range set {
			if _, ok := seen[k]; ok {
				continue
			}
			seen[k] = struct{}{}
			ops = append(ops, s.current(k, now))
		}
	}
	clear(retry)
	for len(ops) > 0 {
		n := min(len(ops), flushChunk)
		if !s.write(ops[:n], retry) {
			for _, o := range ops[n:] {
				retry[o.key] = struct{}{}
			}
			return
		}
		ops = ops[n:]
	}
}

// current returns the write that brings key's record on disk to its
// state in memory now.
func (s *Store) current(k limiter.Key, now time.Time) op {
	rec, ok, _ := s.mem.Get(context.Background(), k)
	if !ok {
		return op{key: k}
	}
	return s.encodeOp(k, &rec, s.policy.Load(), now)
}

// encodeOp returns the write for rec: a delete when it is gone (nil) or
// idle, a put of its encoding otherwise.
func (s *Store) encodeOp(k limiter.Key, rec *limiter.Record, pf *func(string) *limiter.Provider, now time.Time) op {
	if rec == nil {
		return op{key: k}
	}
	if pf != nil {
		if p := (*pf)(k.Provider); p != nil && limiter.Idle(rec, p, now) {
			return op{key: k}
		}
	}
	return op{key: k, val: encode(nil, rec)}
}

// write commits ops in one transaction (with fsync) and reports whether
// it succeeded; on failure it adds their keys to retry, counts the error
// and marks the store unhealthy.
func (s *Store) write(ops []op, retry map[limiter.Key]struct{}) bool {
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(recordsBucket)
		var kb []byte
		for i := range ops {
			kb = appendKey(kb[:0], ops[i].key)
			var err error
			if ops[i].val == nil {
				err = b.Delete(kb)
			} else {
				// bbolt keeps the key slice until the commit: give it
				// its own.
				err = b.Put(append([]byte(nil), kb...), ops[i].val)
			}
			if err != nil {
				return fmt.Errorf("key %v: %w", ops[i].key, err)
			}
		}
		if h := s.writeHook.Load(); h != nil {
			return (*h)(tx)
		}
		return nil
	})
	if err != nil {
		for i := range ops {
			retry[ops[i].key] = struct{}{}
		}
		s.writeErrs.Add(1)
		s.setErr(fmt.Errorf("write state file %s: %w", s.path, err), len(ops))
		return false
	}
	s.setErr(nil, 0)
	return true
}

// setErr records the outcome of a write, logging a change of health.
func (s *Store) setErr(err error, keys int) {
	s.errMu.Lock()
	was := s.lastErr
	s.lastErr = err
	s.errMu.Unlock()
	switch {
	case err != nil && was == nil:
		s.log.Error("state file write failed; answering from memory and retrying at every flush", "file", s.path, "keys", keys, "err", err)
	case err == nil && was != nil:
		s.log.Info("state file writable again", "file", s.path, "failed_writes", s.writeErrs.Load())
	}
}
