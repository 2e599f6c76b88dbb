package client_test

import (
	"context"
	"errors"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/sendgate/sendgate/client"
	"github.com/sendgate/sendgate/internal/fakeclock"
	"github.com/sendgate/sendgate/internal/resolve"
	"github.com/sendgate/sendgate/limiter"
	"github.com/sendgate/sendgate/limiter/memstore"
	"github.com/sendgate/sendgate/limiter/smtpreply"
	sendgatev1 "github.com/sendgate/sendgate/proto/sendgate/v1"
	"github.com/sendgate/sendgate/server"
)

var t0 = time.Date(2026, 11, 27, 8, 0, 0, 0, time.UTC)

const ip = "203.0.113.7"

// codeClassifier classifies by the basic code alone.
type codeClassifier struct{}

func (codeClassifier) Classify(_ string, code uint32, _, _ string) smtpreply.Result {
	switch {
	case code >= 200 && code < 300:
		return smtpreply.Result{Class: limiter.Delivered}
	case code >= 500:
		return smtpreply.Result{Class: limiter.RecipientFailed}
	}
	return smtpreply.Result{Class: limiter.Transient}
}

// fixture is a real sendgate server on loopback TCP that counts the RPCs
// it receives and can be made to stall.
type fixture struct {
	clock *fakeclock.Clock
	addr  string
	calls atomic.Int64  // CanSend and ReportResult calls received
	stall chan struct{} // non-nil: calls wait until it is closed or their ctx ends
	md    chan metadata.MD
}

func newFixture(t *testing.T, stall bool) *fixture {
	t.Helper()
	f := &fixture{clock: fakeclock.New(t0), md: make(chan metadata.MD, 100)}
	if stall {
		f.stall = make(chan struct{})
		t.Cleanup(func() { close(f.stall) })
	}
	m := limiter.DefaultMachine()
	pol := &limiter.Policy{
		Providers: map[string]*limiter.Provider{"tencent": {Name: "tencent", Limits: limiter.Limits{limiter.Minute: 3}, Machine: m}},
		Default:   &limiter.Provider{Name: "default", Limits: limiter.Limits{limiter.Minute: 60}, Machine: m},
	}
	ms := memstore.New(memstore.Options{SweepInterval: -1, Policy: pol.For})
	t.Cleanup(func() { ms.Close() })
	res, err := resolve.New([]resolve.Provider{{Name: "tencent", Domains: []string{"qq.com", "foxmail.com"}}}, nil, resolve.Options{})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(server.Options{Limiter: limiter.New(ms, pol, limiter.Options{}), Resolver: res, Classifier: codeClassifier{}, Now: f.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	count := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		f.calls.Add(1)
		if md, ok := metadata.FromIncomingContext(ctx); ok {
			select {
			case f.md <- md:
			default:
			}
		}
		if f.stall != nil {
			select {
			case <-f.stall:
			case <-ctx.Done():
				return nil, status.FromContextError(ctx.Err()).Err()
			}
		}
		return h(ctx, req)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer(grpc.UnaryInterceptor(count))
	srv.Register(g)
	go g.Serve(lis)
	t.Cleanup(g.Stop)
	f.addr = lis.Addr().String()
	return f
}

func (f *fixture) client(t *testing.T, opts ...client.Option) *client.Client {
	t.Helper()
	c, err := client.New(context.Background(), f.addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	client.SetClock(c, f.clock.Now)
	t.Cleanup(func() { c.Close() })
	return c
}

// deadAddr is a loopback address where nothing listens.
func deadAddr(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	return addr
}

// TestRememberedDefer: a DEFER is answered locally until its retry_after,
// for every spelling of the same pair, and not for an ask it does not cover.
func TestRememberedDefer(t *testing.T) {
	t.Parallel()
	f := newFixture(t, false)
	c := f.client(t)
	ctx := context.Background()
	steps := []struct {
		name      string
		advance   time.Duration
		ip        string
		domain    string
		count     uint32
		allowed   bool
		cached    bool
		retry     time.Duration
		roundTrip int64 // calls the server has seen after the step
		forget    bool  // Forget the pair first
	}{
		{name: "1", ip: ip, domain: "qq.com", allowed: true, roundTrip: 1},
		{name: "2", ip: ip, domain: "qq.com", allowed: true, roundTrip: 2},
		{name: "3", ip: ip, domain: "qq.com", allowed: true, roundTrip: 3},
		{name: "deferred by the server", ip: ip, domain: "qq.com", retry: 20 * time.Second, roundTrip: 4},
		{name: "remembered", ip: ip, domain: "qq.com", cached: true, retry: 20 * time.Second, roundTrip: 4},
		{name: "counts down", advance: 5 * time.Second, ip: "::ffff:" + ip, domain: "User@QQ.COM.", cached: true, retry: 15 * time.Second, roundTrip: 4},
		{name: "covers a larger ask", ip: ip, domain: "qq.com", count: 2, cached: true, retry: 15 * time.Second, roundTrip: 4},
		{name: "other domain of the provider asks", ip: ip, domain: "foxmail.com", retry: 15 * time.Second, roundTrip: 5},
		{name: "forgotten, asks for two", forget: true, ip: ip, domain: "qq.com", count: 2, retry: 35 * time.Second, roundTrip: 6},
		{name: "larger ask remembered", ip: ip, domain: "qq.com", count: 3, cached: true, retry: 35 * time.Second, roundTrip: 6},
		{name: "does not cover a smaller ask", ip: ip, domain: "qq.com", count: 1, retry: 15 * time.Second, roundTrip: 7},
		{name: "expired", advance: 15 * time.Second, ip: ip, domain: "qq.com", count: 1, allowed: true, roundTrip: 8},
	}
	for _, s := range steps {
		f.clock.Advance(s.advance)
		if s.forget {
			c.Forget(s.ip, s.domain)
		}
		d, err := c.CanSend(ctx, s.ip, s.domain, s.count)
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if d.Allowed() != s.allowed || d.Cached != s.cached || d.RetryAfter != s.retry || d.Unavailable {
			t.Errorf("%s: %+v, want allowed %v cached %v retry %v", s.name, d, s.allowed, s.cached, s.retry)
		}
		if !s.allowed && (d.Reason != sendgatev1.DeferReason_DEFER_REASON_RATE_LIMITED || d.Provider != "tencent" || d.Detail == "") {
			t.Errorf("%s: %+v, want a RATE_LIMITED deferral for tencent with a detail", s.name, d)
		}
		if got := f.calls.Load(); got != s.roundTrip {
			t.Errorf("%s: server saw %d calls, want %d", s.name, got, s.roundTrip)
		}
	}
}

// TestForget: a DELIVERED report, or Forget, drops the memory.
func TestForget(t *testing.T) {
	t.Parallel()
	f := newFixture(t, false)
	c := f.client(t)
	ctx := context.Background()
	deferNow := func() {
		t.Helper()
		for i := 0; i < 4; i++ {
			if _, err := c.CanSend(ctx, ip, "qq.com", 1); err != nil {
				t.Fatal(err)
			}
		}
		if d, _ := c.CanSend(ctx, ip, "qq.com", 1); !d.Cached {
			t.Fatalf("not remembered: %+v", d)
		}
	}
	deferNow()
	out, err := c.ReportResult(ctx, client.Result{IP: ip, Domain: "qq.com", Code: 550, Reply: "550 no such user"})
	if err != nil || out.Classification != sendgatev1.Classification_CLASSIFICATION_RECIPIENT_FAILED {
		t.Fatalf("report 550: %+v %v", out, err)
	}
	if d, _ := c.CanSend(ctx, ip, "qq.com", 1); !d.Cached {
		t.Errorf("a failed delivery forgot the deferral: %+v", d)
	}
	out, err = c.ReportResult(ctx, client.Result{IP: ip, Domain: "QQ.com", Code: 250, Reply: "250 ok"})
	if err != nil || out.Classification != sendgatev1.Classification_CLASSIFICATION_DELIVERED || out.Provider != "tencent" {
		t.Fatalf("report 250: %+v %v", out, err)
	}
	before := f.calls.Load()
	if d, _ := c.CanSend(ctx, ip, "qq.com", 1); d.Cached || f.calls.Load() != before+1 {
		t.Errorf("after DELIVERED: %+v, want a round trip", d)
	}
	if client.Remembered(c) != 1 {
		t.Errorf("remembered %d, want 1 (the new DEFER)", client.Remembered(c))
	}
	c.Forget(ip, "qq.com")
	if client.Remembered(c) != 0 {
		t.Errorf("remembered %d after Forget, want 0", client.Remembered(c))
	}
	// NotAttempted refunds: the tokens come back.
	f.clock.Advance(time.Minute)
	if d, _ := c.CanSend(ctx, ip, "foxmail.com", 3); !d.Allowed() {
		t.Fatalf("CanSend 3: %+v", d)
	}
	if _, err := c.ReportResult(ctx, client.Result{IP: ip, Domain: "foxmail.com", Count: 3, NotAttempted: true}); err != nil {
		t.Fatal(err)
	}
	if d, _ := c.CanSend(ctx, ip, "foxmail.com", 3); !d.Allowed() {
		t.Errorf("CanSend 3 after refund: %+v", d)
	}
}

func TestDeferCacheBounded(t *testing.T) {
	t.Parallel()
	f := newFixture(t, false)
	c := f.client(t, client.WithDeferCache(2))
	ctx := context.Background()
	for _, sender := range []string{"192.0.2.1", "192.0.2.2", "192.0.2.3"} {
		for i := 0; i < 4; i++ {
			if _, err := c.CanSend(ctx, sender, "qq.com", 1); err != nil {
				t.Fatal(err)
			}
		}
	}
	if n := client.Remembered(c); n != 2 {
		t.Errorf("remembered %d, want 2", n)
	}
	off := f.client(t, client.WithDeferCache(-1))
	for i := 0; i < 5; i++ {
		d, err := off.CanSend(ctx, "192.0.2.9", "qq.com", 1)
		if err != nil || d.Cached {
			t.Fatalf("without memory: %+v %v", d, err)
		}
	}
}

// TestUnreachable: fail-closed (the default) and fail-open answers when no
// server listens, and errors that no fallback hides.
func TestUnreachable(t *testing.T) {
	t.Parallel()
	addr := deadAddr(t)
	ctx := context.Background()
	cases := []struct {
		name    string
		opts    []client.Option
		allowed bool
		retry   time.Duration
	}{
		{"default fails closed", nil, false, client.DefaultFailRetry},
		{"fail closed with 30s", []client.Option{client.WithFailClosed(30 * time.Second)}, false, 30 * time.Second},
		{"fail open", []client.Option{client.WithFailOpen()}, true, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c, err := client.New(ctx, addr, tc.opts...)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			d, err := c.CanSend(ctx, ip, "qq.com", 1)
			if err != nil {
				t.Fatalf("CanSend: %v", err)
			}
			if !d.Unavailable || d.Allowed() != tc.allowed || d.RetryAfter != tc.retry || d.Detail == "" || (!tc.allowed && d.Reason != sendgatev1.DeferReason_DEFER_REASON_UNAVAILABLE) {
				t.Errorf("%+v, want unavailable, allowed %v, retry %v", d, tc.allowed, tc.retry)
			}
			if d, _ := c.CanSend(ctx, ip, "qq.com", 1); d.Cached {
				t.Errorf("a local answer was remembered: %+v", d)
			}
			if _, err := c.ReportResult(ctx, client.Result{IP: ip, Domain: "qq.com", Code: 250}); status.Code(err) != codes.Unavailable {
				t.Errorf("ReportResult: %v, want UNAVAILABLE", err)
			}
		})
	}
	t.Run("dial fails", func(t *testing.T) {
		t.Parallel()
		dctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		defer cancel()
		if c, err := client.Dial(dctx, addr); err == nil {
			c.Close()
			t.Error("Dial to a dead address succeeded")
		}
	})
	t.Run("caller's context", func(t *testing.T) {
		t.Parallel()
		c, err := client.New(ctx, addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if _, err := c.CanSend(cctx, ip, "qq.com", 1); !errors.Is(err, context.Canceled) && status.Code(err) != codes.Canceled {
			t.Errorf("CanSend with a cancelled context: %v, want the context's error", err)
		}
	})
}

// TestTimeout: a server slower than the per-call timeout counts as
// unreachable.
func TestTimeout(t *testing.T) {
	t.Parallel()
	f := newFixture(t, true)
	ctx := context.Background()
	for _, tc := range []struct {
		name    string
		opts    []client.Option
		allowed bool
	}{
		{"closed", []client.Option{client.WithTimeout(100 * time.Millisecond)}, false},
		{"open", []client.Option{client.WithTimeout(100 * time.Millisecond), client.WithFailOpen()}, true},
	} {
		c := f.client(t, tc.opts...)
		start := time.Now()
		d, err := c.CanSend(ctx, ip, "qq.com", 1)
		took := time.Since(start)
		if err != nil || !d.Unavailable || d.Allowed() != tc.allowed {
			t.Errorf("%s: %+v %v", tc.name, d, err)
		}
		if took < 100*time.Millisecond || took > 5*time.Second {
			t.Errorf("%s: took %v, want about the 100ms timeout", tc.name, took)
		}
	}
}

func TestErrorsAreErrors(t *testing.T) {
	t.Parallel()
	f := newFixture(t, false)
	c := f.client(t, client.WithFailOpen())
	ctx := context.Background()
	_, err := c.CanSend(ctx, "999.1.1.1", "qq.com", 1)
	if status.Code(err) != codes.InvalidArgument {
		t.Errorf("bad IP: %v, want INVALID_ARGUMENT", err)
	}
	_, err = c.CanSend(ctx, ip, "qq.com", 10)
	if status.Code(err) != codes.InvalidArgument {
		t.Errorf("count above capacity: %v, want INVALID_ARGUMENT", err)
	}
	_, err = c.ReportResult(ctx, client.Result{IP: ip, Domain: "qq.com", Code: 42})
	if status.Code(err) != codes.InvalidArgument {
		t.Errorf("bad code: %v, want INVALID_ARGUMENT", err)
	}
}

func TestTokenAndStubs(t *testing.T) {
	t.Parallel()
	f := newFixture(t, false)
	c := f.client(t, client.WithToken("s3cret"))
	ctx := context.Background()
	if _, err := c.CanSend(ctx, ip, "qq.com", 1); err != nil {
		t.Fatal(err)
	}
	md := <-f.md
	if got := md.Get("authorization"); len(got) != 1 || got[0] != "Bearer s3cret" {
		t.Errorf("authorization metadata %q", got)
	}
	r, err := c.Admin().GetState(ctx, &sendgatev1.GetStateRequest{SenderIp: ip, RecipientDomainOrProvider: "tencent"})
	if err != nil || r.GetState().GetProvider() != "tencent" {
		t.Errorf("Admin().GetState: %v %v", r, err)
	}
	if _, err := c.Admission().CanSend(ctx, &sendgatev1.CanSendRequest{SenderIp: ip, RecipientDomain: "qq.com", DryRun: true}); err != nil {
		t.Errorf("Admission().CanSend: %v", err)
	}
	dc, err := client.Dial(ctx, f.addr)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	dc.Close()
}
