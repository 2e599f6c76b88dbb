package redisstore

import (
	"context"
	"testing"
	"time"

	"github.com/sendgate/sendgate/limiter"
)

// TestIdleKeysExpire: every write restarts a key's idle TTL, a HELD key and
// a key that needs remediation never expire, and a key left alone for the
// TTL is gone (and reads back as a new key).
func TestIdleKeysExpire(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, addrs []string) {
		const ttl = 2 * time.Second
		s := open(t, addrs, Options{IdleTTL: ttl})
		ctx := context.Background()
		p := &limiter.Provider{Name: "ttl", Limits: limiter.Limits{limiter.Minute: 1000}, Machine: limiter.DefaultMachine()}
		pttl := func(key limiter.Key) time.Duration {
			t.Helper()
			d, err := s.client.PTTL(ctx, hashKey(s.prefix, key)).Result()
			if err != nil {
				t.Fatalf("PTTL %v: %v", key, err)
			}
			return d
		}
		update := func(key limiter.Key, fn func(rec *limiter.Record) limiter.Change) {
			t.Helper()
			if _, err := s.Update(ctx, key, fn); err != nil {
				t.Fatalf("update %v: %v", key, err)
			}
		}

		a := limiter.Key{IP: "192.0.2.10", Provider: "ttl"}
		if _, err := s.Admit(ctx, a, p, 1, false, time.Now()); err != nil {
			t.Fatal(err)
		}
		if d := pttl(a); d <= 0 || d > ttl {
			t.Fatalf("after an admission the key's TTL is %v, want in (0, %v]", d, ttl)
		}
		// A hold persists the key, and so do admissions while it is held.
		update(a, func(rec *limiter.Record) limiter.Change {
			return limiter.Hold(rec, p, time.Time{}, "incident", "alice", time.Now())
		})
		if d := pttl(a); d != -1 {
			t.Fatalf("a HELD key has a TTL of %v, want none (-1)", d)
		}
		if _, err := s.Admit(ctx, a, p, 1, false, time.Now()); err != nil {
			t.Fatal(err)
		}
		if d := pttl(a); d != -1 {
			t.Fatalf("a HELD key has a TTL of %v after a check, want none (-1)", d)
		}
		// Released, it expires again.
		update(a, func(rec *limiter.Record) limiter.Change {
			return limiter.Release(rec, p, "resolved", "alice", time.Now())
		})
		if d := pttl(a); d <= 0 || d > ttl {
			t.Fatalf("after a release the key's TTL is %v, want in (0, %v]", d, ttl)
		}

		// A key that needs remediation waits for an operator too.
		r := limiter.Key{IP: "192.0.2.11", Provider: "ttl"}
		if _, err := s.Admit(ctx, r, p, 1, false, time.Now()); err != nil {
			t.Fatal(err)
		}
		update(r, func(rec *limiter.Record) limiter.Change {
			_, ch := limiter.Apply(rec, p, limiter.Report{Class: limiter.IPBlocked, Rule: "x"}, time.Now())
			return ch
		})
		if rec, _, err := s.get(ctx, hashKey(s.prefix, r)); err != nil || !rec.Rep.Remediation {
			t.Fatalf("a block after one message is not a remediation case: %+v, %v", rec.Rep, err)
		}
		if d := pttl(r); d != -1 {
			t.Fatalf("a key needing remediation has a TTL of %v, want none (-1)", d)
		}

		// Left alone, a key is deleted by Redis after the TTL.
		if d := pttl(a); d <= 0 {
			t.Fatalf("TTL %v", d)
		}
		time.Sleep(ttl + 500*time.Millisecond)
		if n, err := s.client.Exists(ctx, hashKey(s.prefix, a)).Result(); err != nil || n != 0 {
			t.Fatalf("an idle key still exists after its TTL: %d, %v", n, err)
		}
		rec, _, err := s.get(ctx, hashKey(s.prefix, a))
		if err != nil || rec.Rep.State != limiter.StateUnspecified || len(rec.Rep.History) != 0 {
			t.Fatalf("an expired key reads back as %+v, %v; want a new key", rec.Rep, err)
		}
		if d := pttl(r); d != -1 {
			t.Fatalf("the remediation key expired: TTL %v", d)
		}

		// A negative IdleTTL keeps keys forever.
		forever := open(t, addrs, Options{IdleTTL: -1})
		f := limiter.Key{IP: "192.0.2.12", Provider: "ttl"}
		if _, err := forever.Admit(ctx, f, p, 1, false, time.Now()); err != nil {
			t.Fatal(err)
		}
		if d, err := forever.client.PTTL(ctx, hashKey(forever.prefix, f)).Result(); err != nil || d != -1 {
			t.Fatalf("IdleTTL -1: the key's TTL is %v (%v), want none", d, err)
		}
	})
}
