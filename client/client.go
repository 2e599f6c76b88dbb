// Package client is the Go client mailers use to ask sendgate before every
// delivery attempt and to report what happened after it.
//
//	c, err := client.New(ctx, "127.0.0.1:7878")
//	...
//	d, err := c.CanSend(ctx, "203.0.113.7", "user@qq.com", 1)
//	if err != nil { ... }            // bad input, or a refused credential
//	if !d.Allowed() {
//		requeue(msg, d.RetryAfter)    // DEFER: try again after RetryAfter
//		return
//	}
//	code, ext, text := deliver(msg)
//	c.ReportResult(ctx, client.Result{IP: "203.0.113.7", Domain: "qq.com", Code: code, Enhanced: ext, Reply: text})
//
// # When sendgate cannot be reached
//
// CanSend does not return an error when sendgate is unreachable, overloaded
// or slower than the per-call timeout (codes UNAVAILABLE, DEADLINE_EXCEEDED,
// RESOURCE_EXHAUSTED, ABORTED, INTERNAL, UNKNOWN, or CANCELED by the
// transport). It returns a local decision with Unavailable set instead:
//
//   - fail-closed (the default, [WithFailClosed]): a DEFER with RetryAfter 5s
//     (or the duration given) and Reason DEFER_REASON_UNAVAILABLE, so the
//     mailer keeps the message and asks again shortly; no mail goes out
//     unchecked.
//   - fail-open ([WithFailOpen]): an ALLOW, so mail keeps flowing unchecked
//     while sendgate is down.
//
// When the caller's own context is done, CanSend returns its error instead.
// Bad input (INVALID_ARGUMENT) and refused credentials (UNAUTHENTICATED,
// PERMISSION_DENIED) are always errors: no fallback would fix them.
// ReportResult returns every failure as an error; a lost report only delays
// what sendgate learns.
//
// # Remembered deferrals
//
// A DEFER from the server is remembered until its RetryAfter for the pair
// (normalised sender IP, lower-cased recipient domain); asking again for
// that pair before then is answered locally, without a round trip, with
// Cached set and RetryAfter counting down. A remembered RATE_LIMITED
// deferral answers only asks for at least as many messages. A report that
// the server classifies DELIVERED for the pair, or [Client.Forget], drops the
// memory early. The memory is bounded ([WithDeferCache]); expired entries are
// dropped first.
//
// A Client is safe for concurrent use; create one per process and Close it
// at exit.
package client

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	sendgatev1 "github.com/sendgate/sendgate/proto/sendgate/v1"
)

// Defaults of the options.
const (
	// DefaultTimeout bounds each call when no [WithTimeout] is given.
	DefaultTimeout = 2 * time.Second
	// DefaultFailRetry is the RetryAfter of the local DEFER returned while
	// sendgate is unreachable, when failing closed.
	DefaultFailRetry = 5 * time.Second
	// DefaultDeferCache is how many deferrals are remembered at most.
	DefaultDeferCache = 10000
)

// Decision is CanSend's answer.
type Decision struct {
	// Verdict is VERDICT_ALLOW or VERDICT_DEFER.
	Verdict sendgatev1.Verdict
	// Reason says why deferred; DEFER_REASON_UNSPECIFIED for an ALLOW,
	// DEFER_REASON_UNAVAILABLE for a fail-closed local DEFER.
	Reason sendgatev1.DeferReason
	// RetryAfter is, for a DEFER, how long to wait before asking again
	// (always > 0); 0 for an ALLOW.
	RetryAfter time.Duration
	// Provider is the provider the domain resolved to ("" when local).
	Provider string
	// State is the key's reputation state (unspecified when local).
	State sendgatev1.ReputationState
	// Detail is the server's one human sentence, or why the answer is local.
	Detail string
	// Unavailable marks a local decision made because sendgate could not
	// be reached in time (see the package documentation).
	Unavailable bool
	// Cached marks a remembered DEFER answered without a round trip.
	Cached bool
}

// Allowed reports whether the attempt may start now.
func (d Decision) Allowed() bool { return d.Verdict == sendgatev1.Verdict_VERDICT_ALLOW }

// Result is what happened to one delivery attempt.
type Result struct {
	// IP is the sender IP, Domain the recipient domain or address.
	IP, Domain string
	// Code is the basic SMTP reply code; 0 when there was no reply.
	Code uint32
	// Enhanced is the enhanced status code ("4.7.28"); empty to let
	// sendgate parse it from Reply.
	Enhanced string
	// Reply is the whole reply text.
	Reply string
	// Count is the number of messages the result covers; 0 means 1.
	Count uint32
	// AttemptedAt is when the attempt was made; zero means now.
	AttemptedAt time.Time
	// NotAttempted reports that the attempt CanSend allowed was not made,
	// so sendgate refunds the tokens.
	NotAttempted bool
}

// Outcome is what sendgate made of a report.
type Outcome struct {
	Classification sendgatev1.Classification
	// Rule is the id of the rule that matched; "" for the default mapping.
	Rule     string
	Provider string
	// State is the key's state after the report; StateUntil its end, when
	// it has one; StateChanged whether the report moved it.
	State        sendgatev1.ReputationState
	StateUntil   time.Time
	StateChanged bool
}

// Option configures a Client.
type Option func(*config)

type config struct {
	timeout   time.Duration
	failOpen  bool
	failRetry time.Duration
	dialOpts  []grpc.DialOption
	token     string
	tlsConfig *tls.Config
	cacheSize int
}

// WithTimeout bounds every call (default 2s). A caller's context with an
// earlier deadline still wins. d <= 0 keeps the default.
func WithTimeout(d time.Duration) Option {
	return func(c *config) {
		if d > 0 {
			c.timeout = d
		}
	}
}

// WithFailOpen makes CanSend answer ALLOW (with Unavailable set) when
// sendgate cannot be reached in time.
func WithFailOpen() Option { return func(c *config) { c.failOpen = true } }

// WithFailClosed makes CanSend answer DEFER with retryAfter (with
// Unavailable set) when sendgate cannot be reached in time. This is the
// default, with 5s; retryAfter <= 0 keeps 5s.
func WithFailClosed(retryAfter time.Duration) Option {
	return func(c *config) {
		c.failOpen = false
		if retryAfter > 0 {
			c.failRetry = retryAfter
		}
	}
}

// WithDialOptions adds gRPC dial options (interceptors, keepalive, a custom
// dialer ...). They are applied after the client's own, so they win.
func WithDialOptions(opts ...grpc.DialOption) Option {
	return func(c *config) { c.dialOpts = append(c.dialOpts, opts...) }
}

// WithTracing traces every call with the otelgrpc client stats handler: a
// client span per call, and the W3C trace context (and baggage) of ctx sent
// to sendgate, so its spans join the mailer's trace. Without options it uses
// the global TracerProvider, MeterProvider and TextMapPropagator of
// go.opentelemetry.io/otel; pass otelgrpc.WithTracerProvider,
// otelgrpc.WithPropagators ... to use others. Remembered deferrals and local
// fallbacks make no span.
func WithTracing(opts ...otelgrpc.Option) Option {
	return func(c *config) {
		c.dialOpts = append(c.dialOpts, grpc.WithStatsHandler(otelgrpc.NewClientHandler(opts...)))
	}
}

// WithToken sends token as "authorization: Bearer <token>" metadata on every
// call. Without [WithTLS] the token travels in clear text: use it so only on
// loopback.
func WithToken(token string) Option { return func(c *config) { c.token = token } }

// WithTLS connects over TLS with cfg (nil: the system's roots and the
// target's host name); the default is plain text, for loopback. Add a client
// certificate to cfg for mutual TLS.
func WithTLS(cfg *tls.Config) Option {
	return func(c *config) {
		if cfg == nil {
			cfg = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		c.tlsConfig = cfg
	}
}

// WithDeferCache bounds how many deferrals are remembered (default 10000);
// n < 0 turns remembering off.
func WithDeferCache(n int) Option { return func(c *config) { c.cacheSize = n } }

// Client talks to one sendgate server. It is safe for concurrent use.
type Client struct {
	conn      *grpc.ClientConn
	admission sendgatev1.AdmissionServiceClient
	admin     sendgatev1.AdminServiceClient
	timeout   time.Duration
	failOpen  bool
	failRetry time.Duration
	defers    *deferCache // nil when remembering is off
	now       func() time.Time
}

// New returns a Client for addr ("host:port", or any gRPC target). It does
// not wait for the connection: the first call does, within its timeout, and
// connection failures then follow the fail-open or fail-closed choice. ctx
// bounds only the setup. Use [Dial] to wait until the server is reachable.
func New(ctx context.Context, addr string, opts ...Option) (*Client, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	cfg := config{timeout: DefaultTimeout, failRetry: DefaultFailRetry, cacheSize: DefaultDeferCache}
	for _, o := range opts {
		o(&cfg)
	}
	dial := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	if cfg.tlsConfig != nil {
		dial[0] = grpc.WithTransportCredentials(credentials.NewTLS(cfg.tlsConfig))
	}
	if cfg.token != "" {
		dial = append(dial, grpc.WithPerRPCCredentials(bearer{token: cfg.token}))
	}
	dial = append(dial, cfg.dialOpts...)
	conn, err := grpc.NewClient(addr, dial...)
	if err != nil {
		return nil, fmt.Errorf("client for %s: %w", addr, err)
	}
	conn.Connect()
	c := &Client{
		conn:      conn,
		admission: sendgatev1.NewAdmissionServiceClient(conn),
		admin:     sendgatev1.NewAdminServiceClient(conn),
		timeout:   cfg.timeout,
		failOpen:  cfg.failOpen,
		failRetry: cfg.failRetry,
		now:       time.Now,
	}
	if cfg.cacheSize >= 0 {
		n := cfg.cacheSize
		if n == 0 {
			n = DefaultDeferCache
		}
		c.defers = newDeferCache(n)
	}
	return c, nil
}

// Dial is [New] followed by a wait, until ctx ends, for the connection to be
// ready. It fails when the server cannot be reached before then; use it
// where failing fast beats the fail-open or fail-closed fallback (tools,
// start-up checks).
func Dial(ctx context.Context, addr string, opts ...Option) (*Client, error) {
	c, err := New(ctx, addr, opts...)
	if err != nil {
		return nil, err
	}
	for {
		s := c.conn.GetState()
		if s == connectivity.Ready {
			return c, nil
		}
		if s == connectivity.Idle {
			c.conn.Connect()
		}
		if !c.conn.WaitForStateChange(ctx, s) {
			c.conn.Close()
			return nil, fmt.Errorf("connect to %s: %w (last state %v)", addr, ctx.Err(), s)
		}
	}
}

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// Conn returns the client's connection, for other services on the same
// server (the standard health service, say).
func (c *Client) Conn() *grpc.ClientConn { return c.conn }

// Admission returns the generated AdmissionService stub over the client's
// connection (no timeout, fallback or memory added).
func (c *Client) Admission() sendgatev1.AdmissionServiceClient { return c.admission }

// Admin returns the generated AdminService stub over the client's
// connection.
func (c *Client) Admin() sendgatev1.AdminServiceClient { return c.admin }

// CanSend asks whether ip may start a delivery of count messages (0 means 1)
// to domain (a domain or an address) now. A DEFER is a Decision, not an
// error; see the package documentation for remembered deferrals and for what
// happens when sendgate is unreachable.
func (c *Client) CanSend(ctx context.Context, ip, domain string, count uint32) (Decision, error) {
	return c.canSend(ctx, ip, domain, count, false)
}

// CanSendDryRun is CanSend without consuming anything.
func (c *Client) CanSendDryRun(ctx context.Context, ip, domain string, count uint32) (Decision, error) {
	return c.canSend(ctx, ip, domain, count, true)
}

func (c *Client) canSend(ctx context.Context, ip, domain string, count uint32, dryRun bool) (Decision, error) {
	var key deferKey
	if c.defers != nil {
		key = cacheKey(ip, domain)
		if d, ok := c.defers.get(key, count, c.now()); ok {
			return d, nil
		}
	}
	cctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	resp, err := c.admission.CanSend(cctx, &sendgatev1.CanSendRequest{SenderIp: ip, RecipientDomain: domain, Count: count, DryRun: dryRun})
	if err != nil {
		if ctx.Err() == nil && unreachable(err) {
			return c.fallback(err), nil
		}
		return Decision{}, fmt.Errorf("can send %s to %s: %w", ip, domain, err)
	}
	d := Decision{
		Verdict:    resp.GetVerdict(),
		Reason:     resp.GetReason(),
		RetryAfter: resp.GetRetryAfter().AsDuration(),
		Provider:   resp.GetProvider(),
		State:      resp.GetState(),
		Detail:     resp.GetDetail(),
	}
	if d.Verdict == sendgatev1.Verdict_VERDICT_DEFER && d.RetryAfter > 0 && c.defers != nil {
		c.defers.put(key, d, count, c.now())
	}
	return d, nil
}

// fallback is the local decision while sendgate is unreachable.
func (c *Client) fallback(err error) Decision {
	d := Decision{Unavailable: true, Detail: "sendgate unavailable: " + status.Convert(err).Message()}
	if c.failOpen {
		d.Verdict = sendgatev1.Verdict_VERDICT_ALLOW
		return d
	}
	d.Verdict = sendgatev1.Verdict_VERDICT_DEFER
	d.Reason = sendgatev1.DeferReason_DEFER_REASON_UNAVAILABLE
	d.RetryAfter = c.failRetry
	return d
}

// unreachable reports whether err means sendgate could not answer, rather
// than that it refused the call.
func unreachable(err error) bool {
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.ResourceExhausted, codes.Aborted,
		codes.Internal, codes.Unknown, codes.Canceled:
		return true
	}
	return false
}

// ReportResult tells sendgate what happened to an attempt. A result the
// server classifies DELIVERED forgets a remembered DEFER for the pair.
func (c *Client) ReportResult(ctx context.Context, r Result) (Outcome, error) {
	req := &sendgatev1.ReportResultRequest{
		SenderIp:        r.IP,
		RecipientDomain: r.Domain,
		SmtpCode:        r.Code,
		EnhancedCode:    r.Enhanced,
		Reply:           r.Reply,
		Count:           r.Count,
	}
	if !r.AttemptedAt.IsZero() {
		req.AttemptedAt = timestamppb.New(r.AttemptedAt)
	}
	if r.NotAttempted {
		req.Outcome = sendgatev1.Outcome_OUTCOME_NOT_ATTEMPTED
	}
	cctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	resp, err := c.admission.ReportResult(cctx, req)
	if err != nil {
		return Outcome{}, fmt.Errorf("report result %s to %s: %w", r.IP, r.Domain, err)
	}
	o := Outcome{
		Classification: resp.GetClassification(),
		Rule:           resp.GetRule(),
		Provider:       resp.GetProvider(),
		State:          resp.GetState(),
		StateChanged:   resp.GetStateChanged(),
	}
	if resp.GetStateUntil() != nil {
		o.StateUntil = resp.GetStateUntil().AsTime()
	}
	if o.Classification == sendgatev1.Classification_CLASSIFICATION_DELIVERED {
		c.Forget(r.IP, r.Domain)
	}
	return o, nil
}

// Forget drops a remembered DEFER for (ip, domain), so the next CanSend for
// the pair asks the server.
func (c *Client) Forget(ip, domain string) {
	if c.defers != nil {
		c.defers.delete(cacheKey(ip, domain))
	}
}

// deferKey names a remembered deferral: the sender IP in canonical form (so
// "::ffff:1.2.3.4" and "1.2.3.4" share an entry) and the domain (or an
// address's domain) lower-cased without a trailing dot. Input the server
// would refuse still gets a key; it is never remembered, because the server
// answers it with an error. Building a key allocates nothing for canonical
// input.
type deferKey struct {
	addr   netip.Addr
	ip     string // the input, when it is not an IP address
	domain string
}

func cacheKey(ip, domain string) deferKey {
	var k deferKey
	if a, err := netip.ParseAddr(strings.TrimSpace(ip)); err == nil {
		k.addr = a.Unmap()
	} else {
		k.ip = ip
	}
	domain = strings.TrimSpace(domain)
	if i := strings.LastIndexByte(domain, '@'); i >= 0 {
		domain = strings.TrimSuffix(domain[i+1:], ">")
	}
	k.domain = strings.ToLower(strings.TrimSuffix(domain, "."))
	return k
}

// deferCache remembers deferrals until their RetryAfter ends.
type deferCache struct {
	max int
	mu  sync.Mutex
	m   map[deferKey]deferEntry // guarded by mu
}

type deferEntry struct {
	d       Decision
	count   uint32
	expires time.Time
}

func newDeferCache(max int) *deferCache {
	return &deferCache{max: max, m: make(map[deferKey]deferEntry)}
}

// get returns the remembered DEFER for key, with RetryAfter counting down
// to its end, when it still holds at now and answers an ask for count
// messages (a RATE_LIMITED deferral does not answer an ask for fewer
// messages than it was for).
func (c *deferCache) get(key deferKey, count uint32, now time.Time) (Decision, bool) {
	c.mu.Lock()
	e, ok := c.m[key]
	if ok && !now.Before(e.expires) {
		delete(c.m, key)
		ok = false
	}
	c.mu.Unlock()
	if !ok {
		return Decision{}, false
	}
	if e.d.Reason == sendgatev1.DeferReason_DEFER_REASON_RATE_LIMITED && max1(count) < max1(e.count) {
		return Decision{}, false
	}
	d := e.d
	d.RetryAfter = e.expires.Sub(now)
	d.Cached = true
	return d, true
}

// put remembers d until now + d.RetryAfter. When the cache is full it drops
// expired entries, and when none has expired, an arbitrary one.
func (c *deferCache) put(key deferKey, d Decision, count uint32, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[key]; !ok && len(c.m) >= c.max {
		for k, e := range c.m {
			if !now.Before(e.expires) {
				delete(c.m, k)
			}
		}
		for k := range c.m {
			if len(c.m) < c.max {
				break
			}
			delete(c.m, k)
		}
	}
	c.m[key] = deferEntry{d: d, count: count, expires: now.Add(d.RetryAfter)}
}

func (c *deferCache) delete(key deferKey) {
	c.mu.Lock()
	delete(c.m, key)
	c.mu.Unlock()
}

func (c *deferCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}

func max1(n uint32) uint32 { return max(n, 1) }

// bearer sends a token as "authorization: Bearer <token>".
type bearer struct{ token string }

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + b.token}, nil
}

// RequireTransportSecurity is false so that a token works on a loopback
// connection without TLS; WithToken's documentation warns about it.
func (b bearer) RequireTransportSecurity() bool { return false }
