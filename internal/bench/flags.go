package bench

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"
)

// Flags are the command-line flags of `sendgate bench`. Bind them with
// AddFlags, parse the flag set, then call Config.
type Flags struct {
	addr       string
	callers    int
	conns      int
	keys       int
	duration   time.Duration
	batch      int
	rpcs       string
	noPaced    bool
	rate       float64
	domain     string
	memoryKeys int
	timeout    time.Duration
	// JSON prints the result as JSON instead of a table.
	JSON bool
	// Check makes the command fail when a target of issue 8 is missed.
	Check bool
}

// AddFlags defines the bench flags on fs and returns them.
func AddFlags(fs *flag.FlagSet) *Flags {
	f := &Flags{}
	fs.StringVar(&f.addr, "addr", "", "`address` of a running sendgate (default: start one in-process, memory store)")
	fs.IntVar(&f.callers, "callers", DefaultCallers, "concurrent callers at maximum load (N)")
	fs.IntVar(&f.conns, "conns", DefaultConns, "gRPC connections the callers share")
	fs.IntVar(&f.keys, "keys", DefaultKeys, "distinct (sender IP, provider) keys (K)")
	fs.DurationVar(&f.duration, "duration", DefaultDuration, "measured `duration` of each run (plus a warm-up of a fifth, at most 1s)")
	fs.IntVar(&f.batch, "batch", DefaultBatchSize, "checks per CanSendBatch (B)")
	fs.StringVar(&f.rpcs, "rpcs", "cansend,cansend-batch,report", "RPCs to measure besides the health Check baseline")
	fs.BoolVar(&f.noPaced, "no-paced", false, "skip the paced runs at half of each maximum")
	fs.Float64Var(&f.rate, "rate", 0, "pace every RPC at this many calls/s instead of at half of its maximum (0: half)")
	fs.StringVar(&f.domain, "domain", DefaultDomain, "recipient `domain` of every call (against a running server, use one its policy knows)")
	fs.IntVar(&f.memoryKeys, "memory-keys", 0, "also measure the memory store's bytes per active key with this many keys (1000000 for issue 8)")
	fs.DurationVar(&f.timeout, "timeout", 5*time.Second, "timeout of each call")
	fs.BoolVar(&f.JSON, "json", false, "print the result as JSON")
	fs.BoolVar(&f.Check, "check", false, "exit with an error when a target of issue 8 is missed")
	return f
}

// Config returns the benchmark the flags ask for. Errors name the flag.
func (f *Flags) Config() (Config, error) {
	rpcs, err := ParseRPCs(f.rpcs)
	if err != nil {
		return Config{}, fmt.Errorf("--rpcs: %w", err)
	}
	c := Config{
		Addr: f.addr, Callers: f.callers, Conns: f.conns, Keys: f.keys, Duration: f.duration,
		BatchSize: f.batch, RPCs: rpcs, NoPaced: f.noPaced, Rate: f.rate, Domain: f.domain, MemoryKeys: f.memoryKeys, Timeout: f.timeout,
	}
	if _, err := c.withDefaults(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// Print writes the result as a table, or as JSON with --json. With --check
// it returns an error naming the missed targets.
func (f *Flags) Print(w io.Writer, res Result) error {
	if f.JSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		if err := enc.Encode(res); err != nil {
			return fmt.Errorf("write json: %w", err)
		}
	} else {
		fmt.Fprint(w, res.Table())
	}
	if !f.Check {
		return nil
	}
	var missed []string
	for _, t := range res.Targets {
		if !t.OK {
			missed = append(missed, fmt.Sprintf("%s: want %s, got %s", t.Name, t.Want, t.Got))
		}
	}
	if len(missed) > 0 {
		return fmt.Errorf("targets missed:\n  %s", strings.Join(missed, "\n  "))
	}
	return nil
}
