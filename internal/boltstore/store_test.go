package boltstore

import (
	"context"
	"errors"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/sendgate/sendgate/limiter"
)

var t0 = time.Date(2025, 3, 4, 9, 0, 0, 0, time.UTC)

// testPolicy has a default provider with minute, hour and calendar-day
// tiers and a 10-minute first cooldown.
func testPolicy(t testing.TB) *limiter.Policy {
	t.Helper()
	m := limiter.DefaultMachine()
	m.Cooldowns = []limiter.Cooldown{{Duration: 10 * time.Minute}, {Duration: 2 * time.Hour}}
	pol := &limiter.Policy{Default: &limiter.Provider{
		Name:        "default",
		Limits:      limiter.Limits{limiter.Minute: 1000, limiter.Hour: 100000, limiter.Day: 1 << 30},
		CalendarDay: true,
		Machine:     m,
	}}
	if err := pol.Validate(); err != nil {
		t.Fatal(err)
	}
	return pol
}

func openTest(t testing.TB, path string, pol *limiter.Policy, opts Options) *Store {
	t.Helper()
	if opts.Policy == nil && pol != nil {
		opts.Policy = pol.For
	}
	if opts.SweepInterval == 0 {
		opts.SweepInterval = -1
	}
	if opts.Now == nil {
		// The flusher judges idleness at this instant: the tests' stories
		// happen around t0.
		opts.Now = func() time.Time { return t0.Add(time.Minute) }
	}
	if opts.FlushInterval == 0 {
		opts.FlushInterval = time.Hour // tests flush explicitly
	}
	s, err := Open(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// onDisk reads key's record from the file, bypassing memory.
func onDisk(t testing.TB, s *Store, k limiter.Key) (limiter.Record, bool) {
	t.Helper()
	var rec limiter.Record
	var ok bool
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(recordsBucket).Get(appendKey(nil, k))
		if v == nil {
			return nil
		}
		ok = true
		var err error
		rec, err = decode(v)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return rec, ok
}

func fullRecord() limiter.Record {
	var r limiter.Record
	r.Rep = limiter.Reputation{
		State: limiter.Blocked, Since: t0, Until: t0.Add(time.Hour), Reason: "qq-block", LastReply: "550 blocked",
		Strikes: 3, StrikeAt: t0.Add(-time.Minute), Factor: 0.25, FactorAt: t0, DecreasedAt: t0.Add(time.Nanosecond),
		ProbeOK: 2, Remediation: true, Ceilings: limiter.Limits{1, 2, 3, 1 << 40}, CeilingAt: t0,
		Triggers: []limiter.TriggerCount{{Rule: "r1", Start: t0, Hits: 4, Attempts: 9}},
		History: []limiter.Transition{
			{At: t0, From: limiter.Healthy, To: limiter.Blocked, Reason: "qq-block", Reply: "550 blocked", Actor: "report"},
			{At: t0.Add(-time.Hour), From: limiter.Held, To: limiter.Healthy, Reason: "ok", Actor: "alice"},
		},
		Version: 17,
	}
	for i := range r.Rep.Counts {
		r.Rep.Counts[i] = uint64(i * 1000)
	}
	for i := range r.Use.Buckets {
		r.Use.Buckets[i] = limiter.Bucket{TAT: t0.UnixNano() + int64(i), Used: uint64(i)}
		r.Use.Sent[i] = limiter.Window{Start: t0.UnixNano(), Cur: 1.5 * float64(i), Prev: math.Pi}
	}
	r.Use.ProbeNext = t0.Add(time.Minute)
	return r
}

func TestCodecRoundTrip(t *testing.T) {
	t.Parallel()
	farUntil := fullRecord()
	farUntil.Rep.Until = time.Date(9999, 12, 31, 0, 0, 0, 5, time.UTC)
	farUntil.Rep.Since = time.Date(1, 1, 1, 0, 0, 1, 0, time.UTC)
	tests := []struct {
		name string
		rec  limiter.Record
	}{
		{"zero", limiter.Record{}},
		{"full", fullRecord()},
		{"far instants", farUntil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := encode(nil, &tt.rec)
			got, err := decode(b)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.rec) {
				t.Fatalf("round trip:\n got %+v\nwant %+v", got, tt.rec)
			}
		})
	}
}

func TestDecodeRefusesDamage(t *testing.T) {
	t.Parallel()
	rec := fullRecord()
	b := encode(nil, &rec)
	for n := 0; n < len(b); n++ {
		if _, err := decode(b[:n]); err == nil {
			t.Fatalf("decode of the first %d of %d bytes succeeded", n, len(b))
		}
	}
	if _, err := decode(append(append([]byte(nil), b...), 0)); err == nil {
		t.Fatal("decode with a trailing byte succeeded")
	}
	bad := append([]byte(nil), b...)
	bad[0] = 99
	if _, err := decode(bad); err == nil || !strings.Contains(err.Error(), "unknown record format 99") {
		t.Fatalf("unknown format: %v", err)
	}
}

// drive runs a story on l: consumption on three keys, a block, a hold.
func drive(t testing.TB, l *limiter.Limiter, now time.Time) {
	t.Helper()
	ctx := context.Background()
	for i, ip := range []string{"192.0.2.1", "192.0.2.2", "192.0.2.3"} {
		k := limiter.Key{IP: ip, Provider: "qq"}
		for j := 0; j <= i*10; j++ {
			if d, err := l.Check(ctx, k, 1, false, now); err != nil || d.Verdict != limiter.Allow {
				t.Fatalf("check %v: %v %v", k, d.Verdict, err)
			}
		}
	}
	blocked := limiter.Key{IP: "192.0.2.1", Provider: "qq"}
	if out, err := l.Report(ctx, blocked, limiter.Report{Class: limiter.IPBlocked, Rule: "qq-550", Reply: "550 ip blocked"}, now); err != nil || out.State != limiter.Blocked {
		t.Fatalf("report: %+v %v", out, err)
	}
	held := limiter.Key{IP: "192.0.2.2", Provider: "qq"}
	if _, err := l.Hold(ctx, held, time.Time{}, "abuse desk", "alice", now); err != nil {
		t.Fatal(err)
	}
}

func snapshot(t testing.TB, s limiter.Store) map[limiter.Key]limiter.Record {
	t.Helper()
	entries, _, err := s.List(context.Background(), "", 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	m := make(map[limiter.Key]limiter.Record, len(entries))
	for _, e := range entries {
		m[e.Key] = e.Record
	}
	return m
}

func TestReopenKeepsEveryRecord(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), FileName)
	pol := testPolicy(t)
	s := openTest(t, path, pol, Options{})
	drive(t, limiter.New(s, pol, limiter.Options{}), t0)
	before := snapshot(t, s)
	if len(before) != 3 {
		t.Fatalf("%d keys in memory, want 3", len(before))
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openTest(t, path, pol, Options{})
	defer s.Close()
	if after := snapshot(t, s); !reflect.DeepEqual(after, before) {
		t.Fatalf("after reopen:\n got %+v\nwant %+v", after, before)
	}
}

func TestTransitionOnDiskBeforeReturn(t *testing.T) {
	t.Parallel()
	pol := testPolicy(t)
	s := openTest(t, filepath.Join(t.TempDir(), FileName), pol, Options{FlushInterval: time.Hour})
	defer s.Close()
	l := limiter.New(s, pol, limiter.Options{})
	ctx := context.Background()
	k := limiter.Key{IP: "198.51.100.7", Provider: "qq"}
	if _, err := l.Check(ctx, k, 5, false, t0); err != nil {
		t.Fatal(err)
	}
	if _, ok := onDisk(t, s, k); ok {
		t.Fatal("consumption alone was written before the flush")
	}
	steps := []struct {
		name string
		do   func() error
		want limiter.State
	}{
		{"block", func() error {
			_, err := l.Report(ctx, k, limiter.Report{Class: limiter.IPBlocked, Rule: "r"}, t0)
			return err
		}, limiter.Blocked},
		{"hold", func() error { _, err := l.Hold(ctx, k, time.Time{}, "", "bob", t0.Add(time.Second)); return err }, limiter.Held},
		{"release", func() error { _, err := l.Release(ctx, k, "", "bob", t0.Add(2*time.Second)); return err }, limiter.Healthy},
	}
	for i, st := range steps {
		if err := st.do(); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		rec, ok := onDisk(t, s, k)
		if !ok || rec.Rep.State != st.want || len(rec.Rep.History) != i+1 {
			t.Fatalf("%s: on disk %v state %v history %d, want %v and %d", st.name, ok, rec.Rep.State, len(rec.Rep.History), st.want, i+1)
		}
	}
}

func TestCooldownEndedWhileDownIsProbing(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), FileName)
	pol := testPolicy(t)
	ctx := context.Background()
	k := limiter.Key{IP: "203.0.113.7", Provider: "qq"}
	s := openTest(t, path, pol, Options{})
	l := limiter.New(s, pol, limiter.Options{})
	out, err := l.Report(ctx, k, limiter.Report{Class: limiter.IPBlocked, Rule: "qq-550"}, t0)
	if err != nil || out.State != limiter.Blocked || out.Until.IsZero() {
		t.Fatalf("block: %+v %v", out, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// Down until a minute after the cooldown ended.
	t1 := out.Until.Add(time.Minute)
	s = openTest(t, path, pol, Options{})
	defer s.Close()
	l = limiter.New(s, pol, limiter.Options{})
	v, err := l.Get(ctx, k, t1)
	if err != nil || v.State != limiter.Probing {
		t.Fatalf("view after restart: %v %v, want PROBING", v.State, err)
	}
	d, err := l.Check(ctx, k, 1, false, t1)
	if err != nil || d.Verdict != limiter.Allow || !d.Probe {
		t.Fatalf("check after restart: %+v %v, want a probe ALLOW", d, err)
	}
	if d, _ := l.Check(ctx, k, 1, false, t1); d.Verdict != limiter.Defer || d.Reason != limiter.ReasonProbing {
		t.Fatalf("second check: %v %v, want DEFER PROBING", d.Verdict, d.Reason)
	}
}

func TestIdleKeysAreNotKept(t *testing.T) {
	t.Parallel()
	pol := testPolicy(t)
	now := t0
	s := openTest(t, filepath.Join(t.TempDir(), FileName), pol, Options{Now: func() time.Time { return now }})
	defer s.Close()
	ctx := context.Background()
	k := limiter.Key{IP: "192.0.2.9", Provider: "qq"}
	p := pol.For(k.Provider)
	// A dry run stores nothing; an ALLOW is written at the flush.
	if _, err := s.Admit(ctx, k, p, 1, true, t0); err != nil {
		t.Fatal(err)
	}
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	if _, ok := onDisk(t, s, k); ok {
		t.Fatal("a dry run was written")
	}
	if _, err := s.Admit(ctx, k, p, 1, false, t0); err != nil {
		t.Fatal(err)
	}
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	if _, ok := onDisk(t, s, k); !ok {
		t.Fatal("consumption not written by the flush")
	}
	// The next day every bucket is full again: the key is idle, evicted
	// and deleted from the file.
	now = t0.Add(25 * time.Hour)
	if n := s.mem.Sweep(now); n != 1 {
		t.Fatalf("swept %d keys, want 1", n)
	}
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	if _, ok := onDisk(t, s, k); ok {
		t.Fatal("idle key still on disk")
	}
}

func TestOpenRefuses(t *testing.T) {
	t.Parallel()
	garbage := make([]byte, 64<<10)
	for i := range garbage {
		garbage[i] = byte(i*7 + i>>8)
	}
	withMeta := func(schema string, records bool) func(t *testing.T, path string) {
		return func(t *testing.T, path string) {
			db, err := bolt.Open(path, 0o600, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			err = db.Update(func(tx *bolt.Tx) error {
				if records {
					if _, err := tx.CreateBucket(recordsBucket); err != nil {
						return err
					}
				}
				if schema == "" {
					_, err := tx.CreateBucket([]byte("something-else"))
					return err
				}
				m, err := tx.CreateBucket(metaBucket)
				if err != nil {
					return err
				}
				return m.Put(schemaKey, []byte(schema))
			})
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	tests := []struct {
		name  string
		setup func(t *testing.T, path string)
		want  string
	}{
		{"newer schema", withMeta("2", true), "written by a newer sendgate (schema version 2; this build reads up to 1)"},
		{"unknown schema", withMeta("x1", true), `unknown schema version "x1"`},
		{"foreign bolt file", withMeta("", false), "not a sendgate state file"},
		{"no records bucket", withMeta("1", false), "corrupt: no records bucket"},
		{"garbage", func(t *testing.T, path string) {
			if err := os.WriteFile(path, garbage, 0o600); err != nil {
				t.Fatal(err)
			}
		}, "not a valid state file, or corrupt"},
		{"corrupt record", func(t *testing.T, path string) {
			withMeta("1", true)(t, path)
			db, err := bolt.Open(path, 0o600, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			if err := db.Update(func(tx *bolt.Tx) error {
				return tx.Bucket(recordsBucket).Put([]byte("192.0.2.1|qq"), []byte{1, 2, 3})
			}); err != nil {
				t.Fatal(err)
			}
		}, `corrupt record "192.0.2.1|qq"`},
		{"directory", func(t *testing.T, path string) {
			if err := os.Mkdir(path, 0o700); err != nil {
				t.Fatal(err)
			}
		}, "is a directory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(t.TempDir(), FileName)
			tt.setup(t, path)
			before, _ := os.ReadFile(path)
			s, err := Open(path, Options{})
			if err == nil {
				s.Close()
				t.Fatal("Open succeeded")
			}
			if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q does not name the file and say %q", err, tt.want)
			}
			if after, _ := os.ReadFile(path); string(after) != string(before) {
				t.Fatal("the refused file was modified")
			}
		})
	}
}

func TestOpenRefusesLockedFile(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), FileName)
	s := openTest(t, path, nil, Options{})
	defer s.Close()
	start := time.Now()
	s2, err := Open(path, Options{LockTimeout: 200 * time.Millisecond})
	if err == nil {
		s2.Close()
		t.Fatal("second Open of a locked file succeeded")
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("refusal took %v", took)
	}
	if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "locked by another process") {
		t.Fatalf("error %q does not name the file and the lock", err)
	}
}

func TestWriteFailureKeepsAnsweringAndRecovers(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), FileName)
	pol := testPolicy(t)
	s := openTest(t, path, pol, Options{})
	defer s.Close()
	l := limiter.New(s, pol, limiter.Options{})
	ctx := context.Background()
	a := limiter.Key{IP: "192.0.2.1", Provider: "qq"}
	b := limiter.Key{IP: "192.0.2.2", Provider: "qq"}
	if _, err := l.Check(ctx, a, 3, false, t0); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Hold(ctx, a, time.Time{}, "first", "alice", t0); err != nil {
		t.Fatal(err)
	}
	good, ok := onDisk(t, s, a)
	if !ok || s.Healthy() != nil {
		t.Fatalf("before the fault: on disk %v, healthy %v", ok, s.Healthy())
	}

	errFull := errors.New("no space left on device")
	fail := func(*bolt.Tx) error { return errFull }
	s.writeHook.Store(&fail)
	if _, err := l.Release(ctx, a, "", "alice", t0.Add(time.Minute)); err != nil {
		t.Fatalf("release during the fault: %v", err)
	}
	if _, err := l.Report(ctx, b, limiter.Report{Class: limiter.IPBlocked, Rule: "r"}, t0.Add(time.Minute)); err != nil {
		t.Fatalf("report during the fault: %v", err)
	}
	if err := s.Healthy(); !errors.Is(err, errFull) || !strings.Contains(err.Error(), path) {
		t.Fatalf("Healthy() = %v, want the write error naming the file", err)
	}
	if s.WriteErrors() == 0 {
		t.Fatal("WriteErrors() = 0")
	}
	if v, _ := l.Get(ctx, b, t0.Add(time.Minute)); v.State != limiter.Blocked {
		t.Fatalf("memory answers %v, want BLOCKED", v.State)
	}
	if d, _ := l.Check(ctx, b, 1, false, t0.Add(time.Minute)); d.Reason != limiter.ReasonBlocked {
		t.Fatalf("check answers %v", d.Reason)
	}
	if err := s.Flush(); err == nil {
		t.Fatal("flush during the fault succeeded")
	}
	if rec, _ := onDisk(t, s, a); !reflect.DeepEqual(rec, good) {
		t.Fatal("the record on disk changed during the fault")
	}
	if _, ok := onDisk(t, s, b); ok {
		t.Fatal("a failed write reached the disk")
	}

	s.writeHook.Store(nil)
	if err := s.Flush(); err != nil {
		t.Fatalf("flush after the fault: %v", err)
	}
	if s.Healthy() != nil {
		t.Fatal("still unhealthy after a successful flush")
	}
	if rec, _ := onDisk(t, s, a); rec.Rep.State != limiter.Healthy || len(rec.Rep.History) != 2 {
		t.Fatalf("after recovery a is %v with %d transitions", rec.Rep.State, len(rec.Rep.History))
	}
	if rec, _ := onDisk(t, s, b); rec.Rep.State != limiter.Blocked {
		t.Fatalf("after recovery b is %v", rec.Rep.State)
	}
}
