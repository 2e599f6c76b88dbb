package failover

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/sendgate/sendgate/limiter"
	"github.com/sendgate/sendgate/limiter/memstore"
)

// flaky is a store that is unreachable while down is set.
type flaky struct {
	limiter.Store
	down bool
}

func (f *flaky) err() error {
	if f.down {
		return fmt.Errorf("dial tcp 127.0.0.1:6379: connection refused: %w", limiter.ErrUnavailable)
	}
	return nil
}

func (f *flaky) Admit(ctx context.Context, k limiter.Key, p *limiter.Provider, c uint32, dry bool, now time.Time) (limiter.Decision, error) {
	if err := f.err(); err != nil {
		return limiter.Decision{}, err
	}
	return f.Store.Admit(ctx, k, p, c, dry, now)
}

func (f *flaky) Update(ctx context.Context, k limiter.Key, fn func(*limiter.Record) limiter.Change) (limiter.Record, error) {
	if err := f.err(); err != nil {
		return limiter.Record{}, err
	}
	return f.Store.Update(ctx, k, fn)
}

func (f *flaky) Ping(context.Context) error { return f.err() }

var (
	t0  = time.Date(2026, 11, 27, 8, 0, 0, 0, time.UTC)
	key = limiter.Key{IP: "192.0.2.1", Provider: "tencent"}
)

func provider() *limiter.Provider {
	return &limiter.Provider{Name: "tencent", Limits: limiter.Limits{limiter.Minute: 10}, Machine: limiter.DefaultMachine()}
}

func TestFailClosed(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	prim := &flaky{Store: memstore.New(memstore.Options{SweepInterval: -1})}
	s, err := New(prim, Options{})
	if err != nil {
		t.Fatal(err)
	}
	p := provider()
	if d, err := s.Admit(ctx, key, p, 1, false, t0); err != nil || d.Verdict != limiter.Allow {
		t.Fatalf("up: %v %v", d.Verdict, err)
	}
	prim.down = true
	d, err := s.Admit(ctx, key, p, 1, false, t0)
	if err != nil || d.Verdict != limiter.Defer || d.Reason != limiter.ReasonUnavailable || d.RetryAfter != 5*time.Second {
		t.Fatalf("down, closed: %+v %v", d, err)
	}
	if !s.Degraded() || s.Failures() != 1 || s.Ping(ctx) == nil {
		t.Fatal("degradation not visible")
	}
	ds, err := s.AdmitBatch(ctx, []limiter.AdmitItem{{Key: key, Provider: p, Count: 1, Now: t0}, {Key: key, Provider: p, Count: 1, Now: t0}})
	if err != nil || len(ds) != 2 || ds[1].Reason != limiter.ReasonUnavailable {
		t.Fatalf("batch down: %+v %v", ds, err)
	}
	if _, err := s.Update(ctx, key, func(*limiter.Record) limiter.Change { return limiter.Touched }); !errors.Is(err, limiter.ErrUnavailable) {
		t.Fatalf("update while down: %v", err)
	}
	// Back without a restart.
	prim.down = false
	if d, err := s.Admit(ctx, key, p, 1, false, t0); err != nil || d.Verdict != limiter.Allow || s.Degraded() {
		t.Fatalf("recovered: %v %v", d.Verdict, err)
	}
}

func TestFailOpenIsConservative(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	prim := &flaky{Store: memstore.New(memstore.Options{SweepInterval: -1}), down: true}
	s, err := New(prim, Options{Mode: Open, Fallback: memstore.New(memstore.Options{SweepInterval: -1}), Share: 0.3})
	if err != nil {
		t.Fatal(err)
	}
	p := provider()
	allowed := 0
	for i := 0; i < 10; i++ {
		d, err := s.Admit(ctx, key, p, 1, false, t0)
		if err != nil {
			t.Fatal(err)
		}
		if d.Verdict == limiter.Allow {
			allowed++
		}
	}
	if allowed != 3 {
		t.Fatalf("fail-open allowed %d of a 10/minute tier at share 0.3, want 3", allowed)
	}
	if s.FallbackDecisions() != 10 {
		t.Fatalf("fallback decisions %d", s.FallbackDecisions())
	}
	if _, err := New(prim, Options{Mode: Open}); err == nil {
		t.Fatal("fail-open without a fallback accepted")
	}
}
