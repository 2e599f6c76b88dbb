// Package bench is sendgate's load generator: it drives a sendgate gRPC
// server (a running one at an address, or one it starts in-process) with N
// concurrent callers over K keys, for CanSend, CanSendBatch and
// ReportResult, and reports throughput and latency percentiles. The standard
// health Check (grpc.health.v1.Health/Check) on the same server, in the same
// run, is the baseline: each RPC's throughput is also given as a ratio to
// it, the best a gRPC service can do on the same machine and connections.
//
// Each RPC is measured twice: closed-loop at maximum load (every caller
// sends its next call as soon as the last one returns), then open-loop at a
// fixed rate, half of that maximum, by a paced generator: a call whose
// sender was still busy when it fell due counts from the instant it was due,
// so a stall is not hidden by the callers waiting for it (no coordinated
// omission).
//
// The same numbers can be taken with ghz (https://ghz.sh) against a running
// server (sendgate serve), over the same connections and concurrency; run
// them one after the other and divide each RPC's requests/s by the health
// Check's:
//
//	ghz --insecure -c 16 --connections 2 -z 5s --call grpc.health.v1.Health/Check -d '{}' 127.0.0.1:7878
//	ghz --insecure -c 16 --connections 2 -z 5s --call sendgate.v1.AdmissionService/CanSend \
//	    -d '{"sender_ip":"10.0.{{randomInt 0 40}}.{{randomInt 0 250}}","recipient_domain":"qq.com"}' 127.0.0.1:7878
//	ghz --insecure -c 16 --connections 2 -z 5s --call sendgate.v1.AdmissionService/ReportResult \
//	    -d '{"sender_ip":"10.0.{{randomInt 0 40}}.{{randomInt 0 250}}","recipient_domain":"qq.com","smtp_code":250}' 127.0.0.1:7878
//
// and the paced measurement with a fixed rate of half the measured maximum
// (ghz paces with -r RPS and -c workers, and measures from each call's
// start, not from its due instant):
//
//	ghz --insecure -c 64 --connections 2 -r 20000 -z 5s --call sendgate.v1.AdmissionService/CanSend -d '...' 127.0.0.1:7878
//
// ghz reads the service definitions through server reflection, which
// sendgate serves. Against a running server, pass --domain a domain its
// policy knows; with qq.com most CanSends are DEFERs once each key's minute
// tier is spent, which is still one decision each.
//
// Typical use:
//
//	res, err := bench.Run(ctx, bench.Config{Duration: 5 * time.Second}, os.Stderr)
//	fmt.Print(res.Table())
package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/sendgate/sendgate/internal/config"
	"github.com/sendgate/sendgate/internal/gctune"
	"github.com/sendgate/sendgate/internal/resolve"
	"github.com/sendgate/sendgate/limiter"
	"github.com/sendgate/sendgate/limiter/memstore"
	sendgatev1 "github.com/sendgate/sendgate/proto/sendgate/v1"
	"github.com/sendgate/sendgate/server"
)

// RPC names a measured call.
type RPC string

// The measured calls.
const (
	Health       RPC = "health"        // grpc.health.v1.Health/Check: the baseline
	CanSend      RPC = "cansend"       // AdmissionService/CanSend
	CanSendBatch RPC = "cansend-batch" // AdmissionService/CanSendBatch with BatchSize items
	Report       RPC = "report"        // AdmissionService/ReportResult (a 250, DELIVERED)
)

// AllRPCs returns every RPC, in the order they are measured.
func AllRPCs() []RPC { return []RPC{Health, CanSend, CanSendBatch, Report} }

// ParseRPCs parses a comma-separated list ("cansend,report"); the health
// baseline is always measured, first.
func ParseRPCs(s string) ([]RPC, error) {
	out := []RPC{Health}
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(strings.ToLower(f))
		if f == "" || f == string(Health) {
			continue
		}
		ok := false
		for _, r := range AllRPCs() {
			if f == string(r) {
				out, ok = append(out, r), true
			}
		}
		if !ok {
			return nil, fmt.Errorf("unknown rpc %q (want cansend, cansend-batch or report)", f)
		}
	}
	return out, nil
}

// Defaults of Config.
const (
	DefaultCallers   = 16
	DefaultConns     = 2
	DefaultKeys      = 10_000
	DefaultDuration  = 5 * time.Second
	DefaultBatchSize = 100
	// DefaultDomain is the recipient domain of every call. The in-process
	// server routes it to a provider with limits high enough that every
	// CanSend is an ALLOW: the hot path.
	DefaultDomain = "bench.sendgate.test"
)

// Config describes a benchmark. The zero value measures every RPC against an
// in-process server, 16 callers over 2 connections and 10,000 keys, 5
// seconds per run.
type Config struct {
	// Addr is the address of a running sendgate; empty starts one
	// in-process (memory store, built-in policy plus a bench provider) on a
	// loopback port.
	Addr string
	// Callers is the number of concurrent callers of the closed-loop runs
	// (N); 0 means DefaultCallers.
	Callers int
	// Conns is the number of gRPC connections the callers share; 0 means
	// DefaultConns.
	Conns int
	// Keys is the number of distinct (sender IP, provider) keys (K): sender
	// IPs 10.0.0.0 upwards towards Domain. 0 means DefaultKeys.
	Keys int
	// Duration is the measured time of each run; 0 means DefaultDuration.
	// Each run is preceded by a warm-up of a fifth of it (at most a second).
	Duration time.Duration
	// BatchSize is the number of checks per CanSendBatch (B); 0 means
	// DefaultBatchSize.
	BatchSize int
	// RPCs are the RPCs to measure; empty means AllRPCs(). Health is always
	// measured, first.
	RPCs []RPC
	// NoPaced skips the paced runs at half of each maximum.
	NoPaced bool
	// Rate, when positive, paces every RPC at this many calls per second
	// instead of at half of its maximum (the p99 target is then not
	// checked: it is set at half of the maximum).
	Rate float64
	// Domain is the recipient domain of every call; "" means DefaultDomain.
	Domain string
	// MemoryKeys, when positive, also measures the memory store's heap
	// bytes per active key with that many keys (1,000,000 for issue 8's
	// figure), in this process, without gRPC.
	MemoryKeys int
	// Timeout bounds each call; 0 means 5s.
	Timeout time.Duration
}

func (c Config) withDefaults() (Config, error) {
	def := func(x *int, d int) {
		if *x == 0 {
			*x = d
		}
	}
	def(&c.Callers, DefaultCallers)
	def(&c.Conns, DefaultConns)
	def(&c.Keys, DefaultKeys)
	def(&c.BatchSize, DefaultBatchSize)
	if c.Duration == 0 {
		c.Duration = DefaultDuration
	}
	if c.Domain == "" {
		c.Domain = DefaultDomain
	}
	if c.Timeout == 0 {
		c.Timeout = 5 * time.Second
	}
	if len(c.RPCs) == 0 {
		c.RPCs = AllRPCs()
	}
	if c.RPCs[0] != Health {
		c.RPCs = append([]RPC{Health}, c.RPCs...)
	}
	switch {
	case c.Callers < 1 || c.Callers > 100_000:
		return c, fmt.Errorf("callers: %d is not between 1 and 100000", c.Callers)
	case c.Conns < 1 || c.Conns > 1000:
		return c, fmt.Errorf("conns: %d is not between 1 and 1000", c.Conns)
	case c.Keys < 1 || c.Keys > 1<<24:
		return c, fmt.Errorf("keys: %d is not between 1 and %d", c.Keys, 1<<24)
	case c.BatchSize < 1 || c.BatchSize > 1000:
		return c, fmt.Errorf("batch: %d is not between 1 and 1000", c.BatchSize)
	case c.Duration < 0 || c.MemoryKeys < 0:
		return c, errors.New("duration and memory keys must not be negative")
	case c.Rate < 0 || c.Rate > 10_000_000:
		return c, fmt.Errorf("rate: %v is not between 0 and 10000000", c.Rate)
	}
	return c, nil
}

// benchYAML adds the bench provider to the built-in policy: limits no run
// reaches, so that CanSend measures the ALLOW path.
func benchYAML(domain string) string {
	return "providers:\n  bench:\n    domains: [" + domain + "]\n    tiers: {minute: 1000000000}\n"
}

// startServer starts an in-process sendgate on a loopback port and returns
// its address and a function that stops it.
func startServer(domain string, ht *handlerTimes) (string, func(), error) {
	cfg, err := config.Parse("bench policy", []byte(benchYAML(domain)))
	if err != nil {
		return "", nil, fmt.Errorf("policy: %w", err)
	}
	res, err := resolve.New(cfg.Providers, nil, resolve.Options{})
	if err != nil {
		return "", nil, fmt.Errorf("resolver: %w", err)
	}
	cls, err := cfg.Classifier()
	if err != nil {
		return "", nil, fmt.Errorf("classifier: %w", err)
	}
	store := memstore.New(memstore.Options{Policy: cfg.Policy.For})
	srv, err := server.New(server.Options{Limiter: limiter.New(store, cfg.Policy, limiter.Options{}), Resolver: res, Classifier: cls})
	if err != nil {
		store.Close()
		return "", nil, fmt.Errorf("server: %w", err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		store.Close()
		return "", nil, fmt.Errorf("listen: %w", err)
	}
	g := grpc.NewServer(grpc.UnaryInterceptor(ht.intercept))
	srv.Register(g)
	go g.Serve(lis)
	return lis.Addr().String(), func() { g.Stop(); store.Close() }, nil
}

// caller is one sequence of calls of one RPC over one connection.
type caller struct {
	rpc    RPC
	health healthpb.HealthClient
	adm    sendgatev1.AdmissionServiceClient
	// Requests are built once, so the generator allocates as little as it
	// can; keys are taken in turn from a per-caller offset.
	cans    []*sendgatev1.CanSendRequest
	batches []*sendgatev1.CanSendBatchRequest
	reports []*sendgatev1.ReportResultRequest
	next    int
}

// call makes one call and returns the decisions it carried (1, or the batch
// size).
func (c *caller) call(ctx context.Context) (int, error) {
	i := c.next
	c.next++
	switch c.rpc {
	case Health:
		_, err := c.health.Check(ctx, &healthpb.HealthCheckRequest{})
		return 1, err
	case CanSend:
		_, err := c.adm.CanSend(ctx, c.cans[i%len(c.cans)])
		return 1, err
	case CanSendBatch:
		b := c.batches[i%len(c.batches)]
		_, err := c.adm.CanSendBatch(ctx, b)
		return len(b.GetRequests()), err
	case Report:
		_, err := c.adm.ReportResult(ctx, c.reports[i%len(c.reports)])
		return 1, err
	}
	return 0, fmt.Errorf("unknown rpc %q", c.rpc)
}

// keyIP returns the sender IP of key i: 10.0.0.0 upwards.
func keyIP(i int) string {
	return fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255)
}

// newCaller returns caller number idx of n for rpc over cc, its requests
// covering its share of the keys (each key is some caller's).
func (b *bencher) newCaller(rpc RPC, cc *grpc.ClientConn, idx, n int) *caller {
	c := &caller{rpc: rpc, health: healthpb.NewHealthClient(cc), adm: sendgatev1.NewAdmissionServiceClient(cc)}
	cfg := b.cfg
	var mine []int
	for k := idx % cfg.Keys; k < cfg.Keys; k += n {
		mine = append(mine, k)
	}
	if len(mine) == 0 {
		mine = []int{idx % cfg.Keys}
	}
	const maxReqs = 1024 // bounded memory with many keys: cycle through a sample
	switch rpc {
	case CanSend:
		for j := 0; j < len(mine) && j < maxReqs; j++ {
			c.cans = append(c.cans, &sendgatev1.CanSendRequest{SenderIp: keyIP(mine[j]), RecipientDomain: cfg.Domain})
		}
	case Report:
		for j := 0; j < len(mine) && j < maxReqs; j++ {
			c.reports = append(c.reports, &sendgatev1.ReportResultRequest{
				SenderIp: keyIP(mine[j]), RecipientDomain: cfg.Domain, SmtpCode: 250, EnhancedCode: "2.0.0", Reply: "250 2.0.0 OK",
			})
		}
	case CanSendBatch:
		for j := 0; j < 16; j++ {
			req := &sendgatev1.CanSendBatchRequest{}
			for x := 0; x < cfg.BatchSize; x++ {
				k := mine[(j*cfg.BatchSize+x)%len(mine)]
				req.Requests = append(req.Requests, &sendgatev1.CanSendRequest{SenderIp: keyIP(k), RecipientDomain: cfg.Domain})
			}
			c.batches = append(c.batches, req)
		}
	}
	return c
}

// bencher is one benchmark in progress.
type bencher struct {
	cfg   Config
	conns []*grpc.ClientConn
	log   io.Writer
	// handlers records handler times in an in-process server (nil against
	// a running one).
	handlers *handlerTimes
}

// Run runs the benchmark cfg describes and returns its result. It writes a
// line to progress (nil for none) as each run starts. It fails when the
// server cannot be reached or started, when every call of a run fails, or
// when ctx ends.
func Run(ctx context.Context, cfg Config, progress io.Writer) (Result, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return Result{}, fmt.Errorf("bench: %w", err)
	}
	if progress == nil {
		progress = io.Discard
	}
	res := Result{
		Addr: cfg.Addr, InProcess: cfg.Addr == "", Callers: cfg.Callers, Conns: cfg.Conns, Keys: cfg.Keys,
		BatchSize: cfg.BatchSize, Duration: Seconds(cfg.Duration), GOMAXPROCS: runtime.GOMAXPROCS(0), NumCPU: runtime.NumCPU(),
	}
	// The generator's garbage collector stalls its callers too, and an
	// in-process server runs as `sendgate serve` does: both with the heap
	// floor of serve's --gc-heap-floor (unless GOGC or GOMEMLIMIT is set).
	if gctune.Overridden() == "" {
		defer gctune.Start(gctune.DefaultFloor, gctune.DefaultInterval)()
		res.GCHeapFloor = gctune.DefaultFloor
	}
	b := &bencher{cfg: cfg, log: progress}
	if cfg.Addr == "" {
		b.handlers = newHandlerTimes()
		addr, stop, err := startServer(cfg.Domain, b.handlers)
		if err != nil {
			return Result{}, fmt.Errorf("bench: in-process server: %w", err)
		}
		defer stop()
		cfg.Addr, res.Addr = addr, addr
	}
	res.TimerLateness = Seconds(timerLateness(200))
	for i := 0; i < cfg.Conns; i++ {
		cc, err := dialConn(cfg.Addr)
		if err != nil {
			return Result{}, fmt.Errorf("bench: connect %s: %w", cfg.Addr, err)
		}
		defer cc.Close()
		b.conns = append(b.conns, cc)
	}
	for _, rpc := range cfg.RPCs {
		fmt.Fprintf(progress, "bench: %s at maximum load, %d callers, %v ...\n", rpc, cfg.Callers, cfg.Duration)
		cpu0, t0 := processCPU(), time.Now()
		r, err := b.closedLoop(ctx, rpc)
		if err != nil {
			return Result{}, fmt.Errorf("bench: %s: %w", rpc, err)
		}
		r.CPU = cpuShare(cpu0, time.Since(t0))
		res.Runs = append(res.Runs, r)
	}
	if !cfg.NoPaced {
		for _, m := range res.Runs {
			rate, what := m.CallsPerSec/2, "half of maximum"
			if cfg.Rate > 0 {
				rate, what = cfg.Rate, "--rate"
			}
			fmt.Fprintf(progress, "bench: %s paced at %.0f calls/s (%s), %v ...\n", m.RPC, rate, what, cfg.Duration)
			cpu0, t0 := processCPU(), time.Now()
			r, err := b.paced(ctx, m.RPC, rate)
			if err != nil {
				return Result{}, fmt.Errorf("bench: %s paced: %w", m.RPC, err)
			}
			r.CPU = cpuShare(cpu0, time.Since(t0))
			r.HalfOfMax = cfg.Rate == 0
			res.Paced = append(res.Paced, r)
		}
	}
	if cfg.MemoryKeys > 0 {
		fmt.Fprintf(progress, "bench: memory of %d active keys in the memory store ...\n", cfg.MemoryKeys)
		m, err := MeasureMemory(ctx, cfg.MemoryKeys)
		if err != nil {
			return Result{}, fmt.Errorf("bench: memory: %w", err)
		}
		res.Memory = &m
	}
	res.ratios()
	return res, nil
}

// cpuShare returns the CPUs this process used on average since it had used
// cpu0, d ago (0 where CPU time is not measured).
func cpuShare(cpu0, d time.Duration) float64 {
	if cpu0 == 0 || d <= 0 {
		return 0
	}
	return (processCPU() - cpu0).Seconds() / d.Seconds()
}

// dialConn returns a client connection to addr (plaintext).
func dialConn(addr string) (*grpc.ClientConn, error) {
	return grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
}

// warmup is the unmeasured time before each run.
func (b *bencher) warmup() time.Duration { return min(b.cfg.Duration/5, time.Second) }

// closedLoop measures rpc at maximum load: Callers goroutines, each calling
// as soon as its last call returned.
func (b *bencher) closedLoop(ctx context.Context, rpc RPC) (Measurement, error) {
	cfg := b.cfg
	callers := make([]*caller, cfg.Callers)
	for i := range callers {
		callers[i] = b.newCaller(rpc, b.conns[i%len(b.conns)], i, cfg.Callers)
	}
	hists := make([]Histogram, cfg.Callers)
	calls := make([]uint64, cfg.Callers)
	decisions := make([]uint64, cfg.Callers)
	errs := make([]uint64, cfg.Callers)
	var firstErr atomic.Value
	var measuring atomic.Bool
	var stop atomic.Bool
	var wg sync.WaitGroup
	for i, c := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h := &hists[i]
			for !stop.Load() && ctx.Err() == nil {
				cctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
				t0 := time.Now()
				n, err := c.call(cctx)
				d := time.Since(t0)
				cancel()
				if !measuring.Load() {
					continue
				}
				if err != nil {
					errs[i]++
					firstErr.CompareAndSwap(nil, err)
					continue
				}
				h.Record(d)
				calls[i]++
				decisions[i] += uint64(n)
			}
		}()
	}
	if err := sleep(ctx, b.warmup()); err != nil {
		stop.Store(true)
		wg.Wait()
		return Measurement{}, err
	}
	b.resetHandlers()
	measuring.Store(true)
	start := time.Now()
	err := sleep(ctx, cfg.Duration)
	measuring.Store(false)
	hp50, hp99 := b.handlerQuantiles(rpc)
	elapsed := time.Since(start)
	stop.Store(true)
	wg.Wait()
	if err != nil {
		return Measurement{}, err
	}
	run := Measurement{RPC: rpc, Mode: "max", Concurrency: cfg.Callers, Elapsed: Seconds(elapsed), HandlerP50: hp50, HandlerP99: hp99}
	var h Histogram
	for i := range callers {
		h.Merge(&hists[i])
		run.Calls += calls[i]
		run.Decisions += decisions[i]
		run.Errors += errs[i]
	}
	return run.finish(&h, firstErr.Load())
}

// paced measures rpc open-loop at rate calls per second. The due instants
// are begin + i/rate; worker w of M owns every M-th of them, sleeps until
// each and calls. A call whose worker was still busy at its due instant
// counts from the due instant, so the wait behind a slow predecessor is
// measured (no coordinated omission); there is no central scheduler to
// steal a CPU.
func (b *bencher) paced(ctx context.Context, rpc RPC, rate float64) (Measurement, error) {
	cfg := b.cfg
	if rate <= 0 {
		return Measurement{}, fmt.Errorf("rate %v is not positive", rate)
	}
	// Enough workers that each has many times the typical latency between
	// its due instants, at least 64.
	workers := max(4*cfg.Callers, 64, int(rate/500))
	interval := float64(time.Second) / rate
	begin := time.Now().Add(10 * time.Millisecond)
	from := begin.Add(b.warmup())
	end := from.Add(cfg.Duration)
	hists := make([]Histogram, workers)
	calls := make([]uint64, workers)
	decisions := make([]uint64, workers)
	errs := make([]uint64, workers)
	var firstErr atomic.Value
	var wg sync.WaitGroup
	if b.handlers != nil {
		wg.Add(1)
		go func() { // the handler times of the measured calls only
			defer wg.Done()
			if sleep(ctx, time.Until(from)) == nil {
				b.resetHandlers()
			}
		}()
	}
	for w := 0; w < workers; w++ {
		c := b.newCaller(rpc, b.conns[w%len(b.conns)], w, workers)
		wg.Add(1)
		go func() {
			defer wg.Done()
			h := &hists[w]
			for j := w; ctx.Err() == nil; j += workers {
				due := begin.Add(time.Duration(float64(j) * interval))
				if !due.Before(end) {
					return
				}
				// A worker still busy at the due instant (the server kept
				// its last call) counts this call from the due instant: the
				// wait is the server's. An idle worker sleeps, and counts
				// from when it actually sent: its timer waking late (up to a
				// millisecond here) is the generator's, not the server's.
				start := due
				if wait := time.Until(due); wait > 0 {
					time.Sleep(wait)
					start = time.Now()
				}
				cctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
				n, err := c.call(cctx)
				d := time.Since(start)
				cancel()
				if due.Before(from) {
					continue
				}
				if err != nil {
					errs[w]++
					firstErr.CompareAndSwap(nil, err)
					continue
				}
				h.Record(d)
				calls[w]++
				decisions[w] += uint64(n)
			}
		}()
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return Measurement{}, err
	}
	run := Measurement{RPC: rpc, Mode: "paced", Concurrency: workers, TargetRate: rate, Elapsed: Seconds(cfg.Duration)}
	run.HandlerP50, run.HandlerP99 = b.handlerQuantiles(rpc)
	var h Histogram
	for i := 0; i < workers; i++ {
		h.Merge(&hists[i])
		run.Calls += calls[i]
		run.Decisions += decisions[i]
		run.Errors += errs[i]
	}
	return run.finish(&h, firstErr.Load())
}

// resetHandlers starts a measurement of handler times (in-process only).
func (b *bencher) resetHandlers() {
	if b.handlers != nil {
		b.handlers.reset()
	}
}

// handlerQuantiles returns rpc's handler times since the last reset.
func (b *bencher) handlerQuantiles(rpc RPC) (p50, p99 Seconds) {
	if b.handlers == nil {
		return 0, 0
	}
	return b.handlers.quantiles(rpc)
}

// timerLateness returns the median overshoot of n sleeps of 100µs: the
// resolution of this process's timers, and so the granularity of the paced
// generator's bursts (about 1ms where the runtime's timers wait in whole
// milliseconds).
func timerLateness(n int) time.Duration {
	var h Histogram
	for i := 0; i < n; i++ {
		t := time.Now()
		time.Sleep(100 * time.Microsecond)
		h.Record(time.Since(t) - 100*time.Microsecond)
	}
	return h.Quantile(0.5)
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// MeasureMemory returns the heap bytes per active key of a memory store
// holding n keys, each admitted once (partly used tiers, so none is idle
// and evictable), under the built-in policy's tencent provider (minute,
// hour and calendar-day tiers). It runs in this process and takes about a
// second per million keys.
func MeasureMemory(ctx context.Context, n int) (Memory, error) {
	cfg, err := config.Builtin()
	if err != nil {
		return Memory{}, fmt.Errorf("built-in policy: %w", err)
	}
	p := cfg.Policy.For("tencent")
	now := time.Date(2026, 1, 5, 12, 0, 0, 0, time.UTC)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	store := memstore.New(memstore.Options{SweepInterval: -1, Policy: cfg.Policy.For})
	defer store.Close()
	for i := 0; i < n; i++ {
		if i%65536 == 0 && ctx.Err() != nil {
			return Memory{}, ctx.Err()
		}
		k := limiter.Key{IP: keyIP(i), Provider: "tencent"}
		if _, err := store.Admit(ctx, k, p, 1, false, now); err != nil {
			return Memory{}, fmt.Errorf("admit %v: %w", k, err)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	if got := store.Len(); got != n {
		return Memory{}, fmt.Errorf("store holds %d keys, want %d", got, n)
	}
	heap := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	runtime.KeepAlive(store)
	return Memory{Keys: n, HeapBytes: heap, BytesPerKey: float64(heap) / float64(n)}, nil
}
