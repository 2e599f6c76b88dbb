package gctune_test

import (
	"runtime"
	"runtime/metrics"
	"testing"
	"time"

	"github.com/sendgate/sendgate/internal/gctune"
)

func TestPercent(t *testing.T) {
	const mib = 1 << 20
	tests := []struct {
		live, floor uint64
		want        int
	}{
		{10 * mib, 0, 100},          // no floor: GOGC's default
		{10 * mib, 128 * mib, 1180}, // goal 10 MiB x 12.8 = 128 MiB
		{64 * mib, 128 * mib, 100},  // goal 128 MiB at the default already
		{700 * mib, 128 * mib, 100}, // a million keys: the default
		{0, 128 * mib, 10_000},      // empty: counted as 1 MiB, capped
		{2 * mib, 128 * mib, 6300},  // 2 MiB x 64 = 128 MiB
		{1 * mib, 1 << 40, 10_000},  // capped at MaxPercent
		{100 * mib, 150 * mib, 100}, // 50% would be below the default
		{50 * mib, 150 * mib, 200},  // 50 MiB x 3
		{40 * mib, 150 * mib, 275},  // 40 MiB x 3.75
		{3 * mib, gctune.DefaultFloor, 4166},
	}
	for _, tt := range tests {
		if got := gctune.Percent(tt.live, tt.floor); got != tt.want {
			t.Errorf("Percent(%d MiB, %d MiB) = %d, want %d", tt.live/mib, tt.floor/mib, got, tt.want)
		}
		// Whatever it returns, the heap goal reaches the floor unless capped.
		if p := gctune.Percent(tt.live, tt.floor); tt.floor > 0 && p < gctune.MaxPercent {
			live := max(tt.live, mib)
			if goal := float64(live) * (1 + float64(p+1)/100); goal < float64(tt.floor) {
				t.Errorf("Percent(%d, %d) = %d: heap goal %.0f below the floor", tt.live, tt.floor, p, goal)
			}
		}
	}
}

func gogc() uint64 {
	s := []metrics.Sample{{Name: "/gc/gogc:percent"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// TestStart runs the tuner in this process (not parallel: GOGC is global)
// and reads the GOGC the runtime uses.
func TestStart(t *testing.T) {
	t.Setenv("GOGC", "")
	t.Setenv("GOMEMLIMIT", "")
	runtime.GC()
	stop := gctune.Start(64<<20, 10*time.Millisecond)
	if got := gogc(); got <= 100 {
		t.Errorf("GOGC %d with a 64 MiB floor over a small test heap, want above 100", got)
	}
	// A live heap far above the floor brings GOGC back to 100 at the next
	// look (the live heap is measured by the last collection).
	big := make([][]byte, 0, 16)
	for range 16 {
		big = append(big, make([]byte, 8<<20))
	}
	runtime.GC()
	deadline := time.Now().Add(5 * time.Second)
	for gogc() != 100 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := gogc(); got != 100 {
		t.Errorf("GOGC %d with a 128 MiB live heap over a 64 MiB floor, want 100", got)
	}
	runtime.KeepAlive(big)
	stop()
	if got := gogc(); got != 100 {
		t.Errorf("GOGC %d after stop, want 100", got)
	}
}

// TestOperatorWins: GOGC or GOMEMLIMIT in the environment turn the tuner
// off.
func TestOperatorWins(t *testing.T) {
	for _, v := range []string{"GOGC", "GOMEMLIMIT"} {
		t.Run(v, func(t *testing.T) {
			t.Setenv("GOGC", "")
			t.Setenv("GOMEMLIMIT", "")
			t.Setenv(v, "150")
			if got := gctune.Overridden(); got != v {
				t.Fatalf("Overridden() = %q, want %q", got, v)
			}
			before := gogc()
			stop := gctune.Start(1<<30, time.Millisecond)
			time.Sleep(20 * time.Millisecond)
			if got := gogc(); got != before {
				t.Errorf("GOGC moved from %d to %d although %s is set", before, got, v)
			}
			stop()
		})
	}
}
