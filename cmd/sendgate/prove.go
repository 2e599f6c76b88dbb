package main

import (
	"flag"

	"github.com/sendgate/sendgate/internal/bench"
	"github.com/sendgate/sendgate/internal/simulate"
)

// simulateCommand runs the fleet simulation against simulated providers.
func simulateCommand() *command {
	return &command{
		name:    "simulate",
		summary: "simulate a mail fleet against QQ-, Gmail- and Yahoo-like providers, with and without sendgate",
		help: `Runs several mailers and several sender IPs (127.0.0.2 upwards) delivering a
backlog over real SMTP on loopback to simulated providers that enforce hidden
per-IP limits per minute, hour and day and answer like the real ones (QQ's
"550 Ip frequency limited" and minute / hour / rest-of-day blocks, Gmail's
421-4.7.28 throttling, Yahoo's TSS04 deferrals). Through sendgate the mailers
ask CanSend over real gRPC and report every reply; with --direct they send as
fast as they can and retry after --retry. Time is virtual: a simulated day
takes seconds.

Scenarios: correct (sendgate knows the true limits), too-high (configured
limits are --too-high-factor times the true ones: sendgate must learn from the
replies), unknown (only generous defaults), builtin (the built-in policy).

The summary reports, per provider and in total: delivered, refusals, blocks,
time blocked, and goodput as a share of the providers' true capacity.`,
		example: `  sendgate simulate --scenario correct --duration 24h
  sendgate simulate --scenario too-high --compare --providers qq,gmail
  sendgate simulate --scenario all --duration 1h --json --quiet`,
		maxArgs: 0,
		define: func(fs *flag.FlagSet) runner {
			f := simulate.AddFlags(fs)
			return func(inv *invocation) error {
				cfgs, err := f.Configs()
				if err != nil {
					return &usageError{cmd: "simulate", msg: "simulate: " + err.Error()}
				}
				results := make([]simulate.Result, 0, len(cfgs))
				for _, c := range cfgs {
					res, err := simulate.Run(inv.ctx, c, f.Progress(inv.stderr))
					if err != nil {
						return err
					}
					results = append(results, res)
				}
				return f.Print(inv.stdout, results)
			}
		},
	}
}

// benchCommand drives a sendgate server with load and reports throughput
// and latency against the health Check baseline.
func benchCommand() *command {
	return &command{
		name:    "bench",
		summary: "measure CanSend, CanSendBatch and ReportResult throughput and latency against the health Check",
		help: `Drives a running server (--addr) or one it starts in-process (memory store)
with --callers concurrent callers over --keys keys for --duration, for each
RPC of --rpcs, and reports calls and decisions per second and latency
percentiles (p50, p90, p99, p99.9, max). The standard health Check on the same
server in the same run is the baseline: each RPC's throughput is printed as a
ratio to it. Then each RPC runs paced at half of its measured maximum, to give
p99 under moderate load (--no-paced skips that).`,
		example: `  sendgate bench --duration 5s
  sendgate bench --addr 127.0.0.1:7878 --callers 64 --keys 10000 --rpcs cansend
  sendgate bench --memory-keys 1000000 --json`,
		maxArgs: 0,
		define: func(fs *flag.FlagSet) runner {
			f := bench.AddFlags(fs)
			return func(inv *invocation) error {
				cfg, err := f.Config()
				if err != nil {
					return &usageError{cmd: "bench", msg: "bench: " + err.Error()}
				}
				res, err := bench.Run(inv.ctx, cfg, inv.stderr)
				if err != nil {
					return err
				}
				return f.Print(inv.stdout, res)
			}
		},
	}
}
