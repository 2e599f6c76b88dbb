package redisstore

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	_ "time/tzdata" // the providers' zones, wherever the test runs

	"github.com/sendgate/sendgate/limiter"
)

// TestScriptMatchesGo runs thousands of random sequences of admissions,
// refunds, reports and operator actions on the script (through the store,
// with the caller's clock) and on the pure Go functions, and requires the
// same decision after every step and the same record after every step.
func TestScriptMatchesGo(t *testing.T) {
	addr := needStandalone(t)
	s := open(t, []string{addr}, Options{UseCallerClock: true, NoBlockCache: true})
	sequences, steps := 1000, 40
	if testing.Short() {
		sequences = 200
	}
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	var seen [5]atomic.Int64 // decisions by reason
	work := make(chan int)
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for seq := range work {
				if err := diffSequence(s, uint64(seq), steps, &seen); err != nil {
					select {
					case errs <- fmt.Errorf("sequence %d: %w", seq, err):
					default:
					}
				}
			}
		}()
	}
	for seq := 0; seq < sequences; seq++ {
		work <- seq
	}
	close(work)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for r := range seen {
		if seen[r].Load() == 0 {
			t.Errorf("no sequence produced a decision with reason %q", limiter.Reason(r))
		}
	}
}

func randomProvider(r *rand.Rand, name string) *limiter.Provider {
	p := &limiter.Provider{Name: name, Machine: limiter.DefaultMachine()}
	for p.Limits == (limiter.Limits{}) {
		if r.IntN(2) == 0 {
			p.Limits[limiter.Second] = uint64(1 + r.IntN(5))
		}
		if r.IntN(2) == 0 {
			p.Limits[limiter.Minute] = uint64(1 + r.IntN(40))
		}
		if r.IntN(2) == 0 {
			p.Limits[limiter.Hour] = uint64(1 + r.IntN(300))
		}
		if r.IntN(2) == 0 {
			p.Limits[limiter.Day] = uint64(1 + r.IntN(2000))
		}
	}
	if p.Limits[limiter.Day] > 0 && r.IntN(2) == 0 {
		p.CalendarDay = true
		zones := []string{"UTC", "Asia/Shanghai", "America/New_York", "Australia/Lord_Howe"}
		loc, err := time.LoadLocation(zones[r.IntN(len(zones))])
		if err != nil {
			panic(err)
		}
		p.Location = loc
	}
	m := &p.Machine
	m.Burst = []int{0, 0, 1, 2, 5}[r.IntN(5)] // plain buckets and windowed pacing
	if r.IntN(2) == 0 {                       // short enough for a sequence to see them end
		m.Cooldowns = []limiter.Cooldown{{Duration: time.Minute}, {Duration: 10 * time.Minute}, {DayEnd: true, Duration: time.Hour}}
		m.ProbeInterval = 5 * time.Second
		m.RampInterval = time.Minute
		m.RampStep = []float64{0.1, 0.3, 0.25}[r.IntN(3)]
		m.CeilingRiseInterval = 10 * time.Minute
		m.ProbeSuccesses = 1 + r.IntN(3)
		m.ProbeFactor = []float64{0.25, 0.5, 1}[r.IntN(3)]
		m.RemediationShare = []float64{0.05, 0.5, 0}[r.IntN(3)]
		m.RemediationProbeInterval = time.Minute
	}
	if err := p.Validate(); err != nil {
		panic(err)
	}
	return p
}

func randomStep(r *rand.Rand) time.Duration {
	switch r.IntN(10) {
	case 0:
		return 0
	case 1:
		return time.Duration(r.IntN(1000)) // nanoseconds
	case 2, 3:
		return time.Duration(r.Int64N(int64(time.Second)))
	case 4, 5:
		return time.Duration(r.Int64N(int64(time.Minute)))
	case 6:
		return time.Duration(r.Int64N(int64(time.Hour)))
	case 7:
		return time.Duration(r.Int64N(int64(30 * time.Hour)))
	case 8:
		return -time.Duration(r.Int64N(int64(time.Second))) // a clock that went back
	}
	return time.Duration(r.Int64N(int64(10 * time.Minute)))
}

func diffSequence(s *Store, seed uint64, steps int, seen *[5]atomic.Int64) error {
	ctx := context.Background()
	r := rand.New(rand.NewPCG(seed, 0x5e9d6a7e))
	p := randomProvider(r, fmt.Sprintf("diff%d", seed))
	key := limiter.Key{IP: fmt.Sprintf("10.0.%d.%d", seed/256, seed%256), Provider: p.Name}
	// A random instant in 2026, to the nanosecond, near a midnight now and then.
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(r.Int64N(int64(365 * 24 * time.Hour))))
	if r.IntN(4) == 0 {
		now = now.Truncate(24 * time.Hour).Add(-time.Duration(r.Int64N(int64(time.Minute))))
	}
	var rec limiter.Record
	var log []string
	for i := 0; i < steps; i++ {
		now = now.Add(randomStep(r))
		count := uint32(r.IntN(4))
		var what string
		switch op := r.IntN(20); {
		case op < 11:
			dry := r.IntN(5) == 0
			what = fmt.Sprintf("admit %d dry=%v at %v", count, dry, now)
			want := limiter.Admit(&rec, p, count, dry, now)
			got, err := s.Admit(ctx, key, p, count, dry, now)
			if err != nil {
				return err
			}
			seen[got.Reason].Add(1)
			if !sameValue(got, want) {
				return fmt.Errorf("step %d %s: decision differs:\n%s\nafter %v", i, what, diffFields(got, want), log)
			}
		case op < 13:
			what = fmt.Sprintf("refund %d at %v", count, now)
			limiter.Refund(&rec, p, count, now)
			if err := s.Refund(ctx, key, p, count, now); err != nil {
				return err
			}
		default:
			fn := randomUpdate(r, p, now)
			what = fmt.Sprintf("update at %v", now)
			want := rec
			ch := fn(&want)
			if _, err := s.Update(ctx, key, fn); err != nil {
				return err
			}
			if ch != limiter.Unchanged {
				want.Rep.Version++
				if ch == limiter.Cleared {
					want.Use = limiter.Usage{}
				}
				rec = want
			}
		}
		log = append(log, what)
		got, _, err := s.Get(ctx, key)
		if err != nil {
			return err
		}
		if !sameValue(got, rec) {
			return fmt.Errorf("step %d %s: record differs:\n%s", i, what, diffFields(got, rec))
		}
	}
	return nil
}

// randomUpdate returns a random report or operator action as an Update fn.
func randomUpdate(r *rand.Rand, p *limiter.Provider, now time.Time) func(*limiter.Record) limiter.Change {
	switch r.IntN(12) {
	case 0:
		until := time.Time{}
		if r.IntN(2) == 0 {
			until = now.Add(time.Duration(1 + r.Int64N(int64(time.Hour))))
		}
		return func(rec *limiter.Record) limiter.Change { return limiter.Hold(rec, p, until, "hold", "op", now) }
	case 1:
		return func(rec *limiter.Record) limiter.Change { return limiter.Release(rec, p, "", "op", now) }
	case 2:
		return func(rec *limiter.Record) limiter.Change { return limiter.Reset(rec, p, "", "op", now) }
	}
	classes := []limiter.Class{limiter.Delivered, limiter.Delivered, limiter.RateLimited, limiter.IPBlocked,
		limiter.ConnectionLimited, limiter.Transient, limiter.RecipientFailed}
	rep := limiter.Report{Class: classes[r.IntN(len(classes))], Rule: "r1", Reply: "421 slow down", Count: uint32(r.IntN(3))}
	if r.IntN(4) == 0 {
		rep.AttemptedAt = now.Add(-time.Duration(r.Int64N(int64(time.Hour))))
	}
	if r.IntN(5) == 0 {
		rep.Trigger = &limiter.Trigger{Count: 2, Window: time.Hour}
	}
	return func(rec *limiter.Record) limiter.Change {
		_, ch := limiter.Apply(rec, p, rep, now)
		return ch
	}
}
