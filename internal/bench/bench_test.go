package bench

import (
	"context"
	"encoding/json"
	"flag"
	"math"
	"runtime"
	"strings"
	"testing"
	"time"
)

func TestHistogramQuantiles(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		samples func(h *Histogram)
		q       float64
		want    time.Duration
	}{
		{"empty", func(h *Histogram) {}, 0.5, 0},
		{"exact below 128ns", func(h *Histogram) {
			for i := 1; i <= 100; i++ {
				h.Record(time.Duration(i))
			}
		}, 0.5, 50},
		{"uniform 1..10000µs, median", func(h *Histogram) {
			for i := 1; i <= 10000; i++ {
				h.Record(time.Duration(i) * time.Microsecond)
			}
		}, 0.5, 5000 * time.Microsecond},
		{"uniform 1..10000µs, p99", func(h *Histogram) {
			for i := 1; i <= 10000; i++ {
				h.Record(time.Duration(i) * time.Microsecond)
			}
		}, 0.99, 9900 * time.Microsecond},
		{"one outlier is the max and the p100", func(h *Histogram) {
			for i := 0; i < 999; i++ {
				h.Record(time.Millisecond)
			}
			h.Record(3 * time.Second)
		}, 1, 3 * time.Second},
		{"negative counts as zero", func(h *Histogram) { h.Record(-time.Second) }, 0.5, 0},
	}
	for _, tt := range tests {
		var h Histogram
		tt.samples(&h)
		got := h.Quantile(tt.q)
		// Within the histogram's resolution: 1/128 of the value, or 1ns.
		tol := math.Max(1, float64(tt.want)/128)
		if math.Abs(float64(got-tt.want)) > tol {
			t.Errorf("%s: Quantile(%v) = %v, want %v ± %v", tt.name, tt.q, got, tt.want, time.Duration(tol))
		}
	}
}

func TestHistogramMerge(t *testing.T) {
	t.Parallel()
	var a, b, all Histogram
	for i := 1; i <= 1000; i++ {
		d := time.Duration(i*i) * time.Nanosecond
		all.Record(d)
		if i%2 == 0 {
			a.Record(d)
		} else {
			b.Record(d)
		}
	}
	a.Merge(&b)
	if a.Count() != all.Count() || a.Max() != all.Max() || a.Mean() != all.Mean() {
		t.Fatalf("merged count/max/mean %d/%v/%v, want %d/%v/%v", a.Count(), a.Max(), a.Mean(), all.Count(), all.Max(), all.Mean())
	}
	for _, q := range []float64{0.1, 0.5, 0.9, 0.99, 0.999} {
		if a.Quantile(q) != all.Quantile(q) {
			t.Errorf("Quantile(%v): merged %v, direct %v", q, a.Quantile(q), all.Quantile(q))
		}
	}
}

func TestBucketsCoverEveryValue(t *testing.T) {
	t.Parallel()
	for _, v := range []uint64{0, 1, 127, 128, 129, 255, 256, 1000, 1 << 20, 1<<40 + 12345, math.MaxUint64} {
		i := bucketOf(v)
		if i < 0 || i >= numBuckets {
			t.Fatalf("bucketOf(%d) = %d, out of range", v, i)
		}
		low, w := bucketRange(i)
		if v < low || v-low >= w {
			t.Errorf("value %d in bucket %d = [%d, %d+%d)", v, i, low, low, w)
		}
	}
}

func TestParseRPCs(t *testing.T) {
	t.Parallel()
	got, err := ParseRPCs("cansend, report")
	if err != nil || len(got) != 3 || got[0] != Health || got[1] != CanSend || got[2] != Report {
		t.Errorf("ParseRPCs = %v, %v; want [health cansend report]", got, err)
	}
	if _, err := ParseRPCs("cansend,bogus"); err == nil {
		t.Error("ParseRPCs accepted an unknown rpc")
	}
}

// TestSmoke runs every mode for about a second (half a second measured after
// a warm-up) against an in-process server and checks that each run made
// calls without errors, that its percentiles are sane (positive, ordered,
// within the call timeout), that a paced run keeps near its rate, and that
// the memory figure and the output are there.
func TestSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("a few seconds of load")
	}
	ctx := context.Background()
	res, err := Run(ctx, Config{Callers: 4, Keys: 100, BatchSize: 10, Duration: 500 * time.Millisecond, MemoryKeys: 10_000}, nil)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if len(res.Runs) != len(AllRPCs()) || len(res.Paced) != len(AllRPCs()) {
		t.Fatalf("%d max runs and %d paced runs, want %d each", len(res.Runs), len(res.Paced), len(AllRPCs()))
	}
	for _, r := range append(append([]Measurement(nil), res.Runs...), res.Paced...) {
		name := string(r.RPC) + "/" + r.Mode
		if r.Calls == 0 || r.CallsPerSec <= 0 {
			t.Errorf("%s: no throughput: %+v", name, r)
		}
		if r.Errors > 0 {
			t.Errorf("%s: %d errors, first: %s", name, r.Errors, r.FirstError)
		}
		want := uint64(1)
		if r.RPC == CanSendBatch {
			want = 10
		}
		if r.Decisions != r.Calls*want {
			t.Errorf("%s: %d decisions for %d calls, want %d each", name, r.Decisions, r.Calls, want)
		}
		ps := []Seconds{r.P50, r.P90, r.P99, r.P999, r.Max}
		for i, p := range ps {
			// Sane, not fast: CI machines are shared and run with -race.
			// Every call is bounded by its 5s timeout.
			if p <= 0 || time.Duration(p) > 5*time.Second {
				t.Errorf("%s: percentile #%d = %v, want in (0, 5s]", name, i, time.Duration(p))
			}
			if i > 0 && p < ps[i-1] {
				t.Errorf("%s: percentiles not ordered: %v", name, ps)
			}
		}
	}
	for _, p := range res.Paced {
		// An open-loop generator keeps its rate, unless the machine cannot
		// (a loaded CI machine): never above it, and not far below.
		if got := float64(p.Calls) / time.Duration(p.Elapsed).Seconds(); got < 0.5*p.TargetRate || got > 1.05*p.TargetRate {
			t.Errorf("%s paced: %.0f calls/s, target %.0f", p.RPC, got, p.TargetRate)
		}
	}
	h, _ := find(res.Runs, Health)
	if h.VsHealth != 1 {
		t.Errorf("health vs itself = %v, want 1", h.VsHealth)
	}
	if res.Memory == nil || res.Memory.BytesPerKey <= 0 || res.Memory.BytesPerKey > 10_000 {
		t.Errorf("memory: %+v, want a positive per-key figure", res.Memory)
	}
	tab := res.Table()
	for _, s := range []string{"cansend-batch", "paced", "p99.9", "bytes per key", "targets"} {
		if !strings.Contains(tab, s) {
			t.Errorf("Table lacks %q:\n%s", s, tab)
		}
	}
	if _, err := json.Marshal(res); err != nil {
		t.Errorf("json: %v", err)
	}
	if runtime.GOOS == "linux" {
		for _, r := range append(append([]Measurement(nil), res.Runs...), res.Paced...) {
			// The process ran the server and the generator: busy, and at
			// most every CPU (a little slack for the measurement's edges).
			if r.CPU <= 0 || r.CPU > float64(runtime.NumCPU())*1.1 {
				t.Errorf("%s/%s: cpu %.2f, want in (0, %d]", r.RPC, r.Mode, r.CPU, runtime.NumCPU())
			}
		}
	}
	for _, r := range append(append([]Measurement(nil), res.Runs...), res.Paced...) {
		// The in-process server timed its handler: positive, and never
		// longer than the whole call's p99.9 (a call contains its handler).
		if r.HandlerP50 <= 0 || r.HandlerP99 < r.HandlerP50 || r.HandlerP99 > r.Max {
			t.Errorf("%s/%s: handler p50 %v, p99 %v (call max %v)", r.RPC, r.Mode, time.Duration(r.HandlerP50), time.Duration(r.HandlerP99), time.Duration(r.Max))
		}
	}
	if !strings.Contains(tab, "in handler p99") {
		t.Errorf("Table lacks the handler column:\n%s", tab)
	}
	t.Logf("\n%s", tab)
}

// TestRate paces at a rate asked for instead of at half of the maximum:
// the paced run keeps that rate, and the half-of-maximum p99 target is not
// checked against it.
func TestRate(t *testing.T) {
	if testing.Short() {
		t.Skip("a second of load")
	}
	res, err := Run(context.Background(), Config{Callers: 2, Keys: 10, RPCs: []RPC{CanSend}, Rate: 400, Duration: 500 * time.Millisecond}, nil)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if len(res.Paced) != 2 {
		t.Fatalf("%d paced runs, want 2 (health and cansend)", len(res.Paced))
	}
	for _, p := range res.Paced {
		got := float64(p.Calls) / time.Duration(p.Elapsed).Seconds()
		if p.TargetRate != 400 || p.HalfOfMax || got < 200 || got > 420 {
			t.Errorf("%s paced: target %.0f (half of max %v), %.0f calls/s; want 400, false, about 400", p.RPC, p.TargetRate, p.HalfOfMax, got)
		}
	}
	for _, tg := range res.Targets {
		if strings.Contains(tg.Name, "p99") {
			t.Errorf("target %q checked at a rate that is not half of the maximum", tg.Name)
		}
	}
}

func TestFlags(t *testing.T) {
	t.Parallel()
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	f := AddFlags(fs)
	if err := fs.Parse([]string{"--callers", "3", "--keys", "7", "--rpcs", "cansend", "--batch", "50", "--no-paced", "--check"}); err != nil {
		t.Fatalf("Parse: %v", err)
	}
	c, err := f.Config()
	if err != nil {
		t.Fatalf("Config: %v", err)
	}
	if c.Callers != 3 || c.Keys != 7 || c.BatchSize != 50 || !c.NoPaced || len(c.RPCs) != 2 || c.RPCs[1] != CanSend {
		t.Errorf("config %+v does not match the flags", c)
	}
	// --check fails on a missed target and names it.
	var out strings.Builder
	res := Result{Targets: []Target{{Name: "CanSend throughput vs health Check", Want: ">= 70%", Got: "50%"}}}
	if err := f.Print(&out, res); err == nil || !strings.Contains(err.Error(), "CanSend throughput") {
		t.Errorf("Print --check = %v, want the missed target", err)
	}
	for _, bad := range [][]string{{"--rpcs", "bogus"}, {"--callers", "-1"}, {"--batch", "5000"}, {"--rate", "-5"}} {
		fs := flag.NewFlagSet("bench", flag.ContinueOnError)
		f := AddFlags(fs)
		if err := fs.Parse(bad); err != nil {
			t.Fatalf("Parse(%v): %v", bad, err)
		}
		if _, err := f.Config(); err == nil {
			t.Errorf("Config accepted %v", bad)
		}
	}
}
