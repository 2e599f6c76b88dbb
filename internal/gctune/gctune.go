// Package gctune keeps the Go garbage collector's heap goal at or above a
// floor. With the default GOGC of 100 the runtime collects whenever the heap
// has grown by its live size; a sendgate with a few thousand keys has a live
// heap of a few megabytes and allocates some kilobytes per gRPC call, so it
// would collect dozens of times a second under load, and each collection
// takes CPU and slows the calls running beside it. A floor of some tens of
// megabytes makes collections rare at the price of that much memory; once the
// live heap is large (a million keys), GOGC 100 applies as usual.
//
// The tuner reads the live heap (runtime/metrics) at an interval and sets
// GOGC to max(100, floor/live*100 - 100), at most MaxPercent. It steps aside
// when the operator set GOGC or GOMEMLIMIT: their choice wins.
package gctune

import (
	"os"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// Defaults.
const (
	// DefaultFloor is the heap goal the tuner keeps at least (bytes).
	DefaultFloor = 128 << 20
	// DefaultInterval is how often the tuner looks at the live heap.
	DefaultInterval = time.Second
	// MaxPercent bounds the GOGC the tuner sets, so a nearly empty heap
	// does not make the next collection wait for gigabytes.
	MaxPercent = 10_000
	// basePercent is GOGC's default, and the least the tuner sets.
	basePercent = 100
)

// Percent returns the GOGC that puts the heap goal of a heap with live
// bytes at floor at least: max(100, floor/live*100 - 100), at most
// MaxPercent. A zero floor is GOGC's default, 100.
func Percent(live, floor uint64) int {
	if floor == 0 {
		return basePercent
	}
	live = max(live, 1<<20) // an empty heap still has a runtime
	p := float64(floor)/float64(live)*100 - 100
	switch {
	case p <= basePercent:
		return basePercent
	case p >= MaxPercent:
		return MaxPercent
	}
	return int(p)
}

// Overridden returns the environment variable that makes the tuner step
// aside ("GOGC" or "GOMEMLIMIT"), or "" when neither is set.
func Overridden() string {
	for _, v := range []string{"GOGC", "GOMEMLIMIT"} {
		if os.Getenv(v) != "" {
			return v
		}
	}
	return ""
}

// Start runs the tuner until the returned function is called; that
// function restores GOGC to 100. floor 0 (or GOGC or GOMEMLIMIT set) starts
// nothing. The first setting is made before Start returns.
func Start(floor uint64, interval time.Duration) (stop func()) {
	if floor == 0 || Overridden() != "" {
		return func() {}
	}
	if interval <= 0 {
		interval = DefaultInterval
	}
	sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	last := -1
	tune := func() {
		metrics.Read(sample)
		var live uint64
		if sample[0].Value.Kind() == metrics.KindUint64 {
			live = sample[0].Value.Uint64()
		}
		// Set only changes of a tenth or more: each setting takes the
		// runtime's heap lock.
		if p := Percent(live, floor); last < 0 || p < last*9/10 || p > last*11/10 {
			debug.SetGCPercent(p)
			last = p
		}
	}
	tune()
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				tune()
			}
		}
	}()
	return func() {
		close(done)
		<-finished
		debug.SetGCPercent(basePercent)
	}
}
