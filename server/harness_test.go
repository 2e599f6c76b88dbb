package server_test

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/sendgate/sendgate/client"
	"github.com/sendgate/sendgate/internal/fakeclock"
	"github.com/sendgate/sendgate/internal/resolve"
	"github.com/sendgate/sendgate/limiter"
	"github.com/sendgate/sendgate/limiter/memstore"
	"github.com/sendgate/sendgate/limiter/smtpreply"
	sendgatev1 "github.com/sendgate/sendgate/proto/sendgate/v1"
	"github.com/sendgate/sendgate/server"
)

// t0 is the instant every test starts at.
var t0 = time.Date(2026, 11, 27, 8, 0, 0, 0, time.UTC)

// testClassifier stands in for the rule engine: a few fixed rules, so the
// tests do not depend on the built-in rule set.
type testClassifier struct{}

func (testClassifier) Classify(provider string, code uint32, enhanced, text string) smtpreply.Result {
	lower := strings.ToLower(text)
	switch {
	case strings.Contains(lower, "frequency limited"):
		return smtpreply.Result{Class: limiter.IPBlocked, Rule: provider + "/ip-frequency-limited"}
	case code == 421:
		return smtpreply.Result{Class: limiter.RateLimited, Rule: "test/slow-down"}
	case code >= 200 && code < 300:
		return smtpreply.Result{Class: limiter.Delivered}
	case code >= 500:
		return smtpreply.Result{Class: limiter.RecipientFailed}
	}
	return smtpreply.Result{Class: limiter.Transient}
}

// testPolicy: tencent may send 3 a minute and 10 an hour; everyone else 60
// a minute.
func testPolicy() *limiter.Policy {
	m := limiter.DefaultMachine()
	return &limiter.Policy{
		Providers: map[string]*limiter.Provider{
			"tencent": {Name: "tencent", Limits: limiter.Limits{limiter.Minute: 3, limiter.Hour: 10}, Machine: m},
		},
		Default: &limiter.Provider{Name: "default", Limits: limiter.Limits{limiter.Minute: 60}, Machine: m},
	}
}

// env is a sendgate server on a loopback listener, with a client.
type env struct {
	clock  *fakeclock.Clock
	store  limiter.Store
	lim    *limiter.Limiter
	srv    *server.Server
	g      *grpc.Server
	addr   string
	client *client.Client
	adm    sendgatev1.AdmissionServiceClient
	admin  sendgatev1.AdminServiceClient
}

type envOptions struct {
	store   limiter.Store // default: a memstore
	actor   func(context.Context) string
	grpcOpt []grpc.ServerOption
}

func newEnv(t testing.TB, o envOptions) *env {
	t.Helper()
	e := &env{clock: fakeclock.New(t0)}
	pol := testPolicy()
	if err := pol.Validate(); err != nil {
		t.Fatalf("policy: %v", err)
	}
	e.store = o.store
	if e.store == nil {
		ms := memstore.New(memstore.Options{SweepInterval: -1, Policy: pol.For})
		t.Cleanup(func() { ms.Close() })
		e.store = ms
	}
	e.lim = limiter.New(e.store, pol, limiter.Options{})
	res, err := resolve.New([]resolve.Provider{{Name: "tencent", Domains: []string{"qq.com", "foxmail.com"}}}, nil, resolve.Options{})
	if err != nil {
		t.Fatalf("resolve.New: %v", err)
	}
	e.srv, err = server.New(server.Options{
		Limiter:    e.lim,
		Resolver:   res,
		Classifier: testClassifier{},
		Now:        e.clock.Now,
		Actor:      o.actor,
	})
	if err != nil {
		t.Fatalf("server.New: %v", err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	e.g = grpc.NewServer(o.grpcOpt...)
	e.srv.Register(e.g)
	go e.g.Serve(lis)
	t.Cleanup(e.g.Stop)
	e.addr = lis.Addr().String()
	e.client, err = client.New(context.Background(), e.addr)
	if err != nil {
		t.Fatalf("client.New: %v", err)
	}
	t.Cleanup(func() { e.client.Close() })
	e.adm, e.admin = e.client.Admission(), e.client.Admin()
	return e
}

func canSendReq(ip, domain string, count uint32) *sendgatev1.CanSendRequest {
	return &sendgatev1.CanSendRequest{SenderIp: ip, RecipientDomain: domain, Count: count}
}
