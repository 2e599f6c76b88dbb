// Package simulate runs a fleet of mailers against simulated providers in
// virtual time, with or without sendgate, and measures what the fleet
// delivered against what the providers' hidden limits allowed.
//
// Several mailers share several sender IPs (loopback addresses 127.0.0.2,
// 127.0.0.3 ...) and deliver a backlog to one or more [smtpsim] providers
// over real SMTP. Through sendgate, each mailer asks CanSend before every
// attempt (over real gRPC, to an in-process sendgate built from the
// configuration an operator would write for the scenario), waits the
// retry_after of a DEFER, and reports every SMTP reply with ReportResult.
// Without sendgate (Config.Direct), each mailer sends as fast as it can and
// retries a refused message after a fixed backoff.
//
// Time is virtual: one goroutine runs a discrete-event loop over a queue
// ordered by virtual time, sets the shared clock to each event's instant
// and performs the event's calls synchronously, so the sendgate server and
// the providers, which both read that clock, see a consistent time while a
// simulated day takes seconds. Runs are deterministic.
//
// Typical use:
//
//	res, err := simulate.Run(ctx, simulate.Config{Scenario: simulate.TooHigh}, os.Stderr)
//	fmt.Print(res.Table())
package simulate

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sendgate/sendgate/internal/config"
	"github.com/sendgate/sendgate/internal/resolve"
	"github.com/sendgate/sendgate/internal/smtpsim"
	"github.com/sendgate/sendgate/limiter"
	"github.com/sendgate/sendgate/limiter/memstore"
	sendgatev1 "github.com/sendgate/sendgate/proto/sendgate/v1"
	"github.com/sendgate/sendgate/server"
)

// Defaults of Config.
const (
	DefaultIPs           = 4
	DefaultMailers       = 4
	DefaultDuration      = 24 * time.Hour
	DefaultSendTime      = time.Second
	DefaultRetryBackoff  = time.Minute
	DefaultTooHighFactor = 2.5
)

// DefaultStart is where a simulation starts when Config.Start is zero: a
// Monday midnight in Beijing, so that simulated days are QQ's days.
func DefaultStart() time.Time {
	return time.Date(2026, 1, 5, 0, 0, 0, 0, smtpsim.Shanghai())
}

// Config describes one simulation. The zero value is the "correct" scenario
// through sendgate: 4 mailers and 4 sender IPs deliver an unlimited backlog
// to a QQ-like provider for one virtual day.
type Config struct {
	// Scenario says what sendgate is told about the limits; "" is Correct.
	Scenario Scenario
	// Direct runs the fleet without sendgate: each mailer sends as fast as
	// it can and retries a refused message after RetryBackoff.
	Direct bool
	// Providers are the simulated providers; empty means [smtpsim.QQ].
	Providers []smtpsim.Profile
	// IPs is the number of sender IPs (127.0.0.2 upwards, at most 250);
	// 0 means DefaultIPs.
	IPs int
	// Mailers is the number of mailers; each has one connection (lane)
	// per sender IP per provider. 0 means DefaultMailers.
	Mailers int
	// Duration is the virtual length of the run; 0 means DefaultDuration.
	Duration time.Duration
	// Start is the virtual instant the run starts; zero means DefaultStart.
	Start time.Time
	// Backlog is the number of messages to deliver per provider; 0 means
	// unlimited (the fleet always has more than the providers allow).
	Backlog int
	// SendTime is the virtual time one SMTP transaction keeps a lane busy;
	// 0 means DefaultSendTime.
	SendTime time.Duration
	// RetryBackoff is the wait of a direct-mode lane after a refusal; 0
	// means DefaultRetryBackoff.
	RetryBackoff time.Duration
	// TooHighFactor multiplies the hidden limits in the TooHigh scenario;
	// 0 means DefaultTooHighFactor.
	TooHighFactor float64
	// Tuning, when set, is a YAML flow mapping of state machine parameters
	// given to every simulated provider in the scenario's configuration
	// (e.g. "{probe_factor: 0.5}"), as an operator would write under
	// providers.NAME.machine.
	Tuning string
	// PolicyYAML, when set, is the configuration file sendgate runs with,
	// instead of the one the scenario generates (Tuning is then ignored).
	PolicyYAML string
}

// withDefaults returns c with every zero field filled in, or an error for
// a field out of range.
func (c Config) withDefaults() (Config, error) {
	if c.Scenario == "" {
		c.Scenario = Correct
	}
	if _, err := ParseScenario(string(c.Scenario)); err != nil {
		return c, err
	}
	if len(c.Providers) == 0 {
		c.Providers = []smtpsim.Profile{smtpsim.QQ()}
	}
	seen := map[string]bool{}
	for i := range c.Providers {
		p := &c.Providers[i]
		if err := p.Validate(); err != nil {
			return c, fmt.Errorf("providers[%d] (%s): %w", i, p.Name, err)
		}
		if p.Provider == "" {
			return c, fmt.Errorf("providers[%d] (%s): provider: empty", i, p.Name)
		}
		if seen[p.Provider] {
			return c, fmt.Errorf("providers[%d] (%s): provider %s listed twice", i, p.Name, p.Provider)
		}
		seen[p.Provider] = true
	}
	def := func(x *int, d int) {
		if *x == 0 {
			*x = d
		}
	}
	def(&c.IPs, DefaultIPs)
	def(&c.Mailers, DefaultMailers)
	if c.Duration == 0 {
		c.Duration = DefaultDuration
	}
	if c.Start.IsZero() {
		c.Start = DefaultStart()
	}
	if c.SendTime == 0 {
		c.SendTime = DefaultSendTime
	}
	if c.RetryBackoff == 0 {
		c.RetryBackoff = DefaultRetryBackoff
	}
	if c.TooHighFactor == 0 {
		c.TooHighFactor = DefaultTooHighFactor
	}
	switch {
	case c.IPs < 1 || c.IPs > 250:
		return c, fmt.Errorf("ips: %d is not between 1 and 250", c.IPs)
	case c.Mailers < 1 || c.Mailers > 1000:
		return c, fmt.Errorf("mailers: %d is not between 1 and 1000", c.Mailers)
	case c.Duration < 0:
		return c, fmt.Errorf("duration: %v is negative", c.Duration)
	case c.Backlog < 0:
		return c, fmt.Errorf("backlog: %d is negative", c.Backlog)
	case c.SendTime < 0 || c.RetryBackoff < 0:
		return c, errors.New("send_time and retry_backoff must not be negative")
	case c.TooHighFactor <= 1:
		return c, fmt.Errorf("too_high_factor: %v is not above 1", c.TooHighFactor)
	}
	return c, nil
}

// clock is the virtual clock every party reads. The event loop is its only
// writer.
type clock struct{ ns atomic.Int64 }

func (c *clock) Now() time.Time  { return time.Unix(0, c.ns.Load()) }
func (c *clock) set(t time.Time) { c.ns.Store(t.UnixNano()) }

// provider is one simulated provider in a run.
type provider struct {
	profile smtpsim.Profile
	srv     *smtpsim.Server
	backlog int64 // messages left; negative: unlimited
}

// key is one (sender IP, provider) pair: what the fleet did with it.
type key struct {
	ip        string
	prov      *provider
	delivered []time.Time // instants of delivered messages
	refusals  uint64
	attempts  uint64
	checks    uint64
}

// lane is one mailer's connection from one IP to one provider.
type lane struct {
	mailer int
	key    *key
	sender *smtpsim.Sender
	adm    sendgatev1.AdmissionServiceClient // nil in direct mode
	seq    uint64                            // messages sent, for recipient names
}

// event is a lane's next step at a virtual instant.
type event struct {
	at   int64
	seq  uint64 // tie-break: deterministic order of simultaneous events
	lane *lane
}

type eventQueue []event

func (q eventQueue) Len() int { return len(q) }
func (q eventQueue) Less(i, j int) bool {
	return q[i].at < q[j].at || q[i].at == q[j].at && q[i].seq < q[j].seq
}
func (q eventQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *eventQueue) Push(x any)   { *q = append(*q, x.(event)) }
func (q *eventQueue) Pop() any {
	old := *q
	e := old[len(old)-1]
	*q = old[:len(old)-1]
	return e
}

// run is the state of one simulation.
type run struct {
	cfg      Config
	clock    *clock
	provs    []*provider
	keys     []*key
	lanes    []*lane
	policy   string
	sgBlocks map[limiter.Key]uint64 // transitions to BLOCKED, from the limiter's hook
	mu       sync.Mutex             // guards sgBlocks (written on gRPC goroutines)
	admin    sendgatev1.AdminServiceClient
	closers  []func()
}

// Run runs the simulation cfg describes and returns its result. It writes a
// progress bar to progress (nil for none), at most ten times a second of
// wall time. It fails when a provider or the sendgate server cannot be
// started, when a gRPC call fails, or when ctx ends.
func Run(ctx context.Context, cfg Config, progress io.Writer) (Result, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return Result{}, fmt.Errorf("simulate: %w", err)
	}
	r := &run{cfg: cfg, clock: &clock{}, sgBlocks: map[limiter.Key]uint64{}}
	r.clock.set(cfg.Start)
	defer r.close()
	wall := time.Now()
	if err := r.setup(ctx); err != nil {
		return Result{}, fmt.Errorf("simulate: %w", err)
	}
	if err := r.loop(ctx, progress); err != nil {
		return Result{}, fmt.Errorf("simulate: %w", err)
	}
	res, err := r.result(ctx)
	if err != nil {
		return Result{}, fmt.Errorf("simulate: %w", err)
	}
	res.Wall = Seconds(time.Since(wall))
	return res, nil
}

func (r *run) close() {
	for i := len(r.closers) - 1; i >= 0; i-- {
		r.closers[i]()
	}
}

// setup starts the providers, sendgate (unless direct) and the lanes.
func (r *run) setup(ctx context.Context) error {
	for _, p := range r.cfg.Providers {
		srv, err := smtpsim.Listen("127.0.0.1:0", p, smtpsim.Options{Now: r.clock.Now})
		if err != nil {
			return err
		}
		r.closers = append(r.closers, func() { srv.Close() })
		backlog := int64(r.cfg.Backlog)
		if backlog == 0 {
			backlog = -1
		}
		prov := &provider{profile: p, srv: srv, backlog: backlog}
		r.provs = append(r.provs, prov)
		for i := 0; i < r.cfg.IPs; i++ {
			r.keys = append(r.keys, &key{ip: senderIP(i), prov: prov})
		}
	}
	var conns []*grpc.ClientConn
	if !r.cfg.Direct {
		addr, err := r.startSendgate()
		if err != nil {
			return err
		}
		for m := 0; m < r.cfg.Mailers; m++ {
			cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				return fmt.Errorf("grpc client: %w", err)
			}
			r.closers = append(r.closers, func() { cc.Close() })
			conns = append(conns, cc)
		}
		r.admin = sendgatev1.NewAdminServiceClient(conns[0])
	}
	for m := 0; m < r.cfg.Mailers; m++ {
		for _, k := range r.keys {
			snd, err := smtpsim.Dial(ctx, k.prov.srv.Addr(), k.ip)
			if err != nil {
				return err
			}
			r.closers = append(r.closers, func() { snd.Close() })
			ln := &lane{mailer: m, key: k, sender: snd}
			if conns != nil {
				ln.adm = sendgatev1.NewAdmissionServiceClient(conns[m])
			}
			r.lanes = append(r.lanes, ln)
		}
	}
	return nil
}

// senderIP returns the i-th sender IP: 127.0.0.2 upwards.
func senderIP(i int) string { return fmt.Sprintf("127.0.0.%d", i+2) }

// startSendgate builds the in-process sendgate of the scenario on a loopback
// listener and returns its address.
func (r *run) startSendgate() (string, error) {
	yml := r.cfg.PolicyYAML
	if yml == "" {
		var err error
		yml, err = scenarioYAML(r.cfg.Scenario, r.cfg.Providers, r.cfg.TooHighFactor, r.cfg.Tuning)
		if err != nil {
			return "", err
		}
	}
	r.policy = yml
	cfg, err := config.Parse("scenario "+string(r.cfg.Scenario), []byte(yml))
	if err != nil {
		return "", fmt.Errorf("policy: %w", err)
	}
	res, err := resolve.New(cfg.Providers, nil, resolve.Options{})
	if err != nil {
		return "", fmt.Errorf("resolver: %w", err)
	}
	cls, err := cfg.Classifier()
	if err != nil {
		return "", fmt.Errorf("classifier: %w", err)
	}
	store := memstore.New(memstore.Options{SweepInterval: -1, Policy: cfg.Policy.For})
	r.closers = append(r.closers, func() { store.Close() })
	lim := limiter.New(store, cfg.Policy, limiter.Options{OnTransition: func(k limiter.Key, tr limiter.Transition) {
		if tr.To == limiter.Blocked {
			r.mu.Lock()
			r.sgBlocks[k]++
			r.mu.Unlock()
		}
	}})
	srv, err := server.New(server.Options{Limiter: lim, Resolver: res, Classifier: cls, Now: r.clock.Now})
	if err != nil {
		return "", fmt.Errorf("server: %w", err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("listen: %w", err)
	}
	g := grpc.NewServer()
	srv.Register(g)
	go g.Serve(lis)
	r.closers = append(r.closers, g.Stop)
	return lis.Addr().String(), nil
}

// loop is the discrete-event loop: it pops the earliest event, moves the
// clock to it and runs the lane's step, until the run's end or until no
// lane has anything left to do.
func (r *run) loop(ctx context.Context, w io.Writer) error {
	start, end := r.cfg.Start.UnixNano(), r.cfg.Start.Add(r.cfg.Duration).UnixNano()
	q := &eventQueue{}
	var seq uint64
	for _, ln := range r.lanes {
		seq++
		*q = append(*q, event{at: start, seq: seq, lane: ln})
	}
	heap.Init(q)
	bar := newProgressBar(w, start, end)
	defer func() { bar.done(r.clock.Now().UnixNano(), r.delivered()) }()
	for q.Len() > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		ev := heap.Pop(q).(event)
		if ev.at >= end {
			break
		}
		r.clock.set(time.Unix(0, ev.at))
		next, more, err := r.step(ctx, ev.lane, ev.at)
		if err != nil {
			return err
		}
		if more {
			seq++
			heap.Push(q, event{at: next, seq: seq, lane: ev.lane})
		}
		bar.update(ev.at, r.delivered)
	}
	r.clock.set(time.Unix(0, end))
	return nil
}

// delivered counts the messages delivered so far.
func (r *run) delivered() uint64 {
	var n uint64
	for _, k := range r.keys {
		n += uint64(len(k.delivered))
	}
	return n
}

// step runs one lane's next step at virtual instant at (Unix nanoseconds)
// and returns the instant of its step after that; more is false when its
// provider's backlog is empty.
func (r *run) step(ctx context.Context, ln *lane, at int64) (next int64, more bool, err error) {
	k := ln.key
	if k.prov.backlog == 0 {
		return 0, false, nil
	}
	domain := k.prov.profile.Domain
	if ln.adm != nil {
		resp, err := ln.adm.CanSend(ctx, &sendgatev1.CanSendRequest{SenderIp: k.ip, RecipientDomain: domain})
		k.checks++
		if err != nil {
			return 0, false, fmt.Errorf("CanSend(%s, %s): %w", k.ip, domain, err)
		}
		if resp.GetVerdict() != sendgatev1.Verdict_VERDICT_ALLOW {
			wait := resp.GetRetryAfter().AsDuration()
			if wait < time.Millisecond {
				wait = time.Millisecond
			}
			return at + int64(wait), true, nil
		}
	}
	if k.prov.backlog > 0 {
		k.prov.backlog--
	}
	ln.seq++
	rcpt := fmt.Sprintf("user%d.%d@%s", ln.mailer, ln.seq, domain)
	body := []byte("From: news@sender.example\r\nTo: " + rcpt + "\r\nSubject: simulated\r\n\r\nhello\r\n")
	reply, sendErr := ln.sender.Send(ctx, "news@sender.example", rcpt, body)
	k.attempts++
	ok := sendErr == nil && reply.OK()
	if ok {
		k.delivered = append(k.delivered, time.Unix(0, at))
	} else {
		k.refusals++
		if k.prov.backlog >= 0 {
			k.prov.backlog++ // back in the queue
		}
	}
	if ln.adm != nil {
		req := &sendgatev1.ReportResultRequest{
			SenderIp: k.ip, RecipientDomain: domain,
			AttemptedAt: timestamppb.New(time.Unix(0, at)),
		}
		if sendErr != nil {
			req.Reply = sendErr.Error() // no reply: code 0
		} else {
			req.SmtpCode, req.EnhancedCode, req.Reply = uint32(reply.Code), reply.Enhanced, reply.String()
		}
		if _, err := ln.adm.ReportResult(ctx, req); err != nil {
			return 0, false, fmt.Errorf("ReportResult(%s, %s): %w", k.ip, domain, err)
		}
	}
	if !ok && ln.adm == nil {
		return at + int64(r.cfg.RetryBackoff), true, nil
	}
	return at + int64(r.cfg.SendTime), true, nil
}

// progressBar draws "[=====>    ]  42%  day 1 10:05  delivered 1234" with
// carriage returns, at most ten times a second of wall time.
type progressBar struct {
	w          io.Writer
	start, end int64
	last       time.Time
	loc        *time.Location
}

func newProgressBar(w io.Writer, start, end int64) *progressBar {
	return &progressBar{w: w, start: start, end: end, loc: smtpsim.Shanghai()}
}

func (b *progressBar) update(now int64, delivered func() uint64) {
	if b.w == nil || time.Since(b.last) < 100*time.Millisecond {
		return
	}
	b.last = time.Now()
	b.draw(now, delivered())
}

func (b *progressBar) draw(now int64, delivered uint64) {
	frac := 1.0
	if b.end > b.start {
		frac = float64(now-b.start) / float64(b.end-b.start)
	}
	frac = min(max(frac, 0), 1)
	const width = 30
	fill := int(frac * width)
	bar := strings.Repeat("=", fill)
	if fill < width {
		bar += ">" + strings.Repeat(" ", width-fill-1)
	}
	el := time.Duration(now - b.start)
	fmt.Fprintf(b.w, "\r[%s] %3.0f%%  virtual +%s  delivered %d ", bar, frac*100, fmtElapsed(el), delivered)
}

func (b *progressBar) done(now int64, delivered uint64) {
	if b.w == nil {
		return
	}
	b.draw(now, delivered)
	fmt.Fprintln(b.w)
}

// fmtElapsed formats a virtual elapsed time as "1d02:03:04".
func fmtElapsed(d time.Duration) string {
	days := int(d / (24 * time.Hour))
	d -= time.Duration(days) * 24 * time.Hour
	h, m, s := int(d/time.Hour), int(d%time.Hour/time.Minute), int(d%time.Minute/time.Second)
	return fmt.Sprintf("%dd%02d:%02d:%02d", days, h, m, s)
}
