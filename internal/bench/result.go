package bench

import (
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/sendgate/sendgate/internal/jsontime"
)

// Seconds is a duration that JSON shows as a number of seconds.
type Seconds = jsontime.Seconds

// Result is what a benchmark measured.
type Result struct {
	Addr       string  `json:"addr"`
	InProcess  bool    `json:"in_process"`
	Callers    int     `json:"callers"`
	Conns      int     `json:"conns"`
	Keys       int     `json:"keys"`
	BatchSize  int     `json:"batch_size"`
	Duration   Seconds `json:"duration_s"`
	GOMAXPROCS int     `json:"gomaxprocs"`
	NumCPU     int     `json:"num_cpu"`
	// GCHeapFloor is the heap floor of this process's garbage collector
	// (the generator's, and the in-process server's: as `sendgate serve
	// --gc-heap-floor`), 0 when it is off.
	GCHeapFloor uint64 `json:"gc_heap_floor_bytes,omitempty"`
	// TimerLateness is the median overshoot of a 100µs sleep here: the
	// paced generator cannot send more evenly than this, so it sends in
	// bursts of rate x TimerLateness calls.
	TimerLateness Seconds `json:"timer_lateness_s"`
	// Runs are the closed-loop runs at maximum load, health first.
	Runs []Measurement `json:"runs"`
	// Paced are the open-loop runs at half of each maximum.
	Paced []Measurement `json:"paced,omitempty"`
	// Memory is the memory store's footprint, when measured.
	Memory *Memory `json:"memory,omitempty"`
	// Targets are issue 8's performance targets, checked.
	Targets []Target `json:"targets,omitempty"`
}

// Measurement is one measured run of one RPC.
type Measurement struct {
	RPC  RPC    `json:"rpc"`
	Mode string `json:"mode"` // "max" (closed loop) or "paced" (open loop)
	// Concurrency is the number of callers (max) or workers (paced).
	Concurrency int `json:"concurrency"`
	// TargetRate is the paced rate in calls per second, and HalfOfMax
	// whether it is half of the RPC's maximum (not a rate asked for).
	TargetRate float64 `json:"target_rate,omitempty"`
	HalfOfMax  bool    `json:"half_of_max,omitempty"`
	// CPU is the CPUs this process used on average during the run (warm-up
	// included): the server and the generator in-process, the generator
	// alone against --addr. 0 where it is not measured.
	CPU     float64 `json:"cpu,omitempty"`
	Elapsed Seconds `json:"elapsed_s"`
	// Calls counts successful calls, Decisions the admission decisions
	// they carried (a batch carries BatchSize), Errors failed calls.
	Calls           uint64  `json:"calls"`
	Decisions       uint64  `json:"decisions"`
	Errors          uint64  `json:"errors"`
	FirstError      string  `json:"first_error,omitempty"`
	CallsPerSec     float64 `json:"calls_per_s"`
	DecisionsPerSec float64 `json:"decisions_per_s"`
	// VsHealth is CallsPerSec over the health Check's, and
	// DecisionsVsHealth DecisionsPerSec over it (max runs only).
	VsHealth          float64 `json:"vs_health,omitempty"`
	DecisionsVsHealth float64 `json:"decisions_vs_health,omitempty"`
	// Latency percentiles, measured per call (paced: from its due instant).
	P50  Seconds `json:"p50_s"`
	P90  Seconds `json:"p90_s"`
	P99  Seconds `json:"p99_s"`
	P999 Seconds `json:"p999_s"`
	Max  Seconds `json:"max_s"`
	Mean Seconds `json:"mean_s"`
	// HandlerP50 and HandlerP99 are the times the calls spent in the
	// server's handler (in-process server only): the rest of a call's
	// latency is the transport, the scheduling and the machine.
	HandlerP50 Seconds `json:"handler_p50_s,omitempty"`
	HandlerP99 Seconds `json:"handler_p99_s,omitempty"`
}

// Memory is the memory store's footprint.
type Memory struct {
	Keys        int     `json:"keys"`
	HeapBytes   int64   `json:"heap_bytes"`
	BytesPerKey float64 `json:"bytes_per_key"`
}

// Target is one of issue 8's performance targets, checked.
type Target struct {
	Name string `json:"name"`
	Want string `json:"want"`
	Got  string `json:"got"`
	OK   bool   `json:"ok"`
}

// finish fills the rates and percentiles of r from h; a run in which every
// call failed is an error.
func (r Measurement) finish(h *Histogram, firstErr any) (Measurement, error) {
	if err, ok := firstErr.(error); ok && err != nil {
		r.FirstError = err.Error()
	}
	if r.Calls == 0 {
		if r.FirstError != "" {
			return r, fmt.Errorf("every call failed: %s", r.FirstError)
		}
		return r, fmt.Errorf("no call completed")
	}
	secs := time.Duration(r.Elapsed).Seconds()
	r.CallsPerSec = float64(r.Calls) / secs
	r.DecisionsPerSec = float64(r.Decisions) / secs
	r.P50, r.P90, r.P99, r.P999 = Seconds(h.Quantile(0.5)), Seconds(h.Quantile(0.9)), Seconds(h.Quantile(0.99)), Seconds(h.Quantile(0.999))
	r.Max, r.Mean = Seconds(h.Max()), Seconds(h.Mean())
	return r, nil
}

// find returns the run of rpc in runs.
func find(runs []Measurement, rpc RPC) (Measurement, bool) {
	for _, r := range runs {
		if r.RPC == rpc {
			return r, true
		}
	}
	return Measurement{}, false
}

// ratios fills VsHealth and checks the targets:
//
//   - CanSend's calls/s at least 70% of the health Check's;
//   - CanSendBatch's decisions/s at least 10 times CanSend's;
//   - every paced run's p99 under 2ms (at half of the maximum load).
func (res *Result) ratios() {
	h, ok := find(res.Runs, Health)
	if !ok || h.CallsPerSec == 0 {
		return
	}
	for i := range res.Runs {
		r := &res.Runs[i]
		r.VsHealth = r.CallsPerSec / h.CallsPerSec
		r.DecisionsVsHealth = r.DecisionsPerSec / h.CallsPerSec
	}
	res.Targets = nil
	cs, okCS := find(res.Runs, CanSend)
	if okCS {
		res.Targets = append(res.Targets, Target{Name: "CanSend throughput vs health Check", Want: ">= 70%",
			Got: fmt.Sprintf("%.0f%%", cs.VsHealth*100), OK: cs.VsHealth >= 0.7})
	}
	if b, ok := find(res.Runs, CanSendBatch); ok && okCS && cs.DecisionsPerSec > 0 {
		x := b.DecisionsPerSec / cs.DecisionsPerSec
		res.Targets = append(res.Targets, Target{Name: fmt.Sprintf("CanSendBatch (%d) decisions/s vs CanSend", res.BatchSize),
			Want: ">= 10x", Got: fmt.Sprintf("%.1fx", x), OK: x >= 10})
	}
	hp, okHP := find(res.Paced, Health)
	for _, p := range res.Paced {
		if p.RPC == Health || !p.HalfOfMax {
			continue
		}
		// Beside the p99: the p99 of the time in sendgate's handler, and the
		// baseline's own p99, paced at half of its own maximum in the same
		// run: what this machine allows any gRPC call.
		var notes []string
		if p.HandlerP99 > 0 {
			notes = append(notes, "in sendgate's handler: "+fmtLatency(p.HandlerP99))
		}
		if okHP {
			notes = append(notes, "health Check paced: "+fmtLatency(hp.P99))
		}
		got := fmtLatency(p.P99)
		if len(notes) > 0 {
			got += " (" + strings.Join(notes, "; ") + ")"
		}
		res.Targets = append(res.Targets, Target{Name: fmt.Sprintf("%s p99 at %.0f calls/s (half of max)", p.RPC, p.TargetRate),
			Want: "< 2ms", Got: got, OK: time.Duration(p.P99) < 2*time.Millisecond})
	}
}

func fmtLatency(s Seconds) string {
	d := time.Duration(s)
	switch {
	case d < time.Millisecond:
		return fmt.Sprintf("%.0fµs", float64(d)/float64(time.Microsecond))
	case d < time.Second:
		return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond))
	}
	return fmt.Sprintf("%.2fs", d.Seconds())
}

// Table returns the result as text: the setup, a line per run, the memory
// figure and the targets.
func (res Result) Table() string {
	var b strings.Builder
	where := "server at " + res.Addr
	if res.InProcess {
		where = "in-process server (memory store) at " + res.Addr + ", sharing the CPUs with the load generator"
	}
	if res.GCHeapFloor > 0 {
		where += fmt.Sprintf(", gc heap floor %d MiB", res.GCHeapFloor>>20)
	}
	fmt.Fprintf(&b, "sendgate bench: %s\n%d callers over %d connections, %d keys, batch %d, %v per run, GOMAXPROCS %d of %d CPUs, timer lateness %s\n\n",
		where, res.Callers, res.Conns, res.Keys, res.BatchSize, time.Duration(res.Duration), res.GOMAXPROCS, res.NumCPU, fmtLatency(res.TimerLateness))
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "rpc\tmode\tcalls/s\tdecisions/s\tvs health\tp50\tp90\tp99\tp99.9\tmax\terrors\tcpu\tin handler p99\t")
	for _, runs := range [][]Measurement{res.Runs, res.Paced} {
		for _, r := range runs {
			mode, vs := r.Mode, "-"
			if r.Mode == "paced" {
				mode = fmt.Sprintf("paced %.0f/s", r.TargetRate)
			} else if r.VsHealth > 0 {
				vs = fmt.Sprintf("%.2f", r.VsHealth)
				if r.Decisions != r.Calls {
					vs += fmt.Sprintf(" (%.1f per decision)", r.DecisionsVsHealth)
				}
			}
			cpu := "-"
			if r.CPU > 0 {
				cpu = fmt.Sprintf("%.2f", r.CPU)
			}
			inHandler := "-"
			if r.HandlerP99 > 0 {
				inHandler = fmtLatency(r.HandlerP99)
			}
			fmt.Fprintf(tw, "%s\t%s\t%.0f\t%.0f\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t\n", r.RPC, mode, r.CallsPerSec, r.DecisionsPerSec, vs,
				fmtLatency(r.P50), fmtLatency(r.P90), fmtLatency(r.P99), fmtLatency(r.P999), fmtLatency(r.Max), r.Errors, cpu, inHandler)
		}
	}
	tw.Flush()
	if m := res.Memory; m != nil {
		fmt.Fprintf(&b, "\nmemory: %d active keys in the memory store: %.0f bytes per key (%.1f MB of heap)\n",
			m.Keys, m.BytesPerKey, float64(m.HeapBytes)/1e6)
	}
	if len(res.Targets) > 0 {
		b.WriteString("\ntargets (issue 8):\n")
		for _, t := range res.Targets {
			mark := "PASS"
			if !t.OK {
				mark = "FAIL"
			}
			fmt.Fprintf(&b, "  %s  %s: want %s, got %s\n", mark, t.Name, t.Want, t.Got)
		}
	}
	return b.String()
}
