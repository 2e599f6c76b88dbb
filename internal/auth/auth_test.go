package auth_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sendgate/sendgate/client"
	"github.com/sendgate/sendgate/internal/auth"
	"github.com/sendgate/sendgate/internal/resolve"
	"github.com/sendgate/sendgate/internal/testutil"
	"github.com/sendgate/sendgate/limiter"
	"github.com/sendgate/sendgate/limiter/memstore"
	"github.com/sendgate/sendgate/limiter/smtpreply"
	sendgatev1 "github.com/sendgate/sendgate/proto/sendgate/v1"
	"github.com/sendgate/sendgate/server"
)

// The tokens of the test callers file.
const (
	tokAlice      = "sgt_alice-admin-token"
	tokReader     = "sgt_reader-token"
	tokMailer     = "sgt_mailer-token"
	tokRestricted = "sgt_restricted-mailer-token"
)

func callersFile() string {
	return `tokens:
  - {name: alice, token_sha256: ` + auth.HashToken(tokAlice) + `, role: admin}
  - {name: dashboards, token_sha256: ` + auth.HashToken(tokReader) + `, role: reader}
  - {name: mta-all, token_sha256: ` + auth.HashToken(tokMailer) + `, role: mailer}
  - {name: mta-eu, token_sha256: ` + auth.HashToken(tokRestricted) + `, role: mailer, sender_ips: [203.0.113.0/24, 198.51.100.7]}
identities:
  - {name: bob, san: "spiffe://example.org/ops/bob", role: admin}
  - {name: grafana, cn: grafana, role: reader}
  - {name: mta-cert, san: mta1.example.org, role: mailer, sender_ips: [203.0.113.0/24]}
`
}

// syncBuffer collects output written concurrently while the test reads it.
type syncBuffer = testutil.SyncBuffer

// testServer is a real sendgate server on loopback, behind an Authenticator.
type testServer struct {
	addr string
	logs *syncBuffer
	dir  string
	ca   *testCA // the CA of the server's and the clients' certificates
}

type serverOptions struct {
	tls  bool // serve TLS with a certificate of ca
	mtls bool // require client certificates of ca
}

func startServer(t *testing.T, o serverOptions) *testServer {
	t.Helper()
	ts := &testServer{logs: &syncBuffer{}, dir: t.TempDir()}
	log := slog.New(slog.NewTextHandler(ts.logs, nil))
	path := filepath.Join(ts.dir, "callers.yaml")
	writeFile(t, path, []byte(callersFile()))
	authn, err := auth.New(path, log)
	if err != nil {
		t.Fatalf("auth.New: %v", err)
	}
	m := limiter.DefaultMachine()
	pol := &limiter.Policy{
		Providers: map[string]*limiter.Provider{"tencent": {Name: "tencent", Limits: limiter.Limits{limiter.Minute: 3}, Machine: m}},
		Default:   &limiter.Provider{Name: "default", Limits: limiter.Limits{limiter.Minute: 60}, Machine: m},
	}
	ms := memstore.New(memstore.Options{SweepInterval: -1, Policy: pol.For})
	t.Cleanup(func() { ms.Close() })
	res, err := resolve.New([]resolve.Provider{{Name: "tencent", Domains: []string{"qq.com"}}}, nil, resolve.Options{})
	if err != nil {
		t.Fatal(err)
	}
	cls, err := smtpreply.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(server.Options{
		Limiter: limiter.New(ms, pol, limiter.Options{}), Resolver: res, Classifier: cls, Logger: log,
		Actor: func(ctx context.Context) string { return auth.Actor(ctx) },
	})
	if err != nil {
		t.Fatal(err)
	}
	opts := append(server.GRPCOptions(), authn.ServerOptions()...)
	if o.tls || o.mtls {
		ts.ca = newCA(t, "test CA")
		cert, key := ts.ca.issue(t, ts.dir, "server", leaf{cn: "server", dns: []string{"localhost"}, server: true})
		files := auth.TLSFiles{CertFile: cert, KeyFile: key}
		if o.mtls {
			files.ClientCAFile = filepath.Join(ts.dir, "ca.crt")
			writeFile(t, files.ClientCAFile, ts.ca.pem)
		}
		r, err := auth.NewCertReloader(files, time.Millisecond, nil, log)
		if err != nil {
			t.Fatal(err)
		}
		opts = append(opts, grpc.Creds(credentials.NewTLS(r.Config(tls.RequireAndVerifyClientCert, "h2"))))
	}
	g := grpc.NewServer(opts...)
	srv.Register(g)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go g.Serve(lis)
	t.Cleanup(g.Stop)
	ts.addr = lis.Addr().String()
	return ts
}

// dial returns a client of ts with opts.
func (ts *testServer) dial(t *testing.T, opts ...client.Option) *client.Client {
	t.Helper()
	c, err := client.New(context.Background(), ts.addr, append(opts, client.WithDeferCache(-1))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// clientTLS returns a client TLS config trusting ts's CA, with the client
// certificate l issued by ca (nil: none).
func (ts *testServer) clientTLS(t *testing.T, ca *testCA, name string, l *leaf) *tls.Config {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ts.ca.pem)
	cfg := &tls.Config{RootCAs: pool, ServerName: "localhost", MinVersion: tls.VersionTLS12}
	if l != nil {
		certFile, keyFile := ca.issue(t, t.TempDir(), name, *l)
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg
}

// call is one RPC of every kind, by name.
func call(ctx context.Context, c *client.Client, rpc string) error {
	adm, admin := c.Admission(), c.Admin()
	var err error
	switch rpc {
	case "CanSend":
		_, err = adm.CanSend(ctx, &sendgatev1.CanSendRequest{SenderIp: "203.0.113.5", RecipientDomain: "example.com", DryRun: true})
	case "CanSendBatch":
		_, err = adm.CanSendBatch(ctx, &sendgatev1.CanSendBatchRequest{Requests: []*sendgatev1.CanSendRequest{{SenderIp: "203.0.113.5", RecipientDomain: "example.com", DryRun: true}}})
	case "ReportResult":
		_, err = adm.ReportResult(ctx, &sendgatev1.ReportResultRequest{SenderIp: "203.0.113.5", RecipientDomain: "example.com", SmtpCode: 250})
	case "ReportResultBatch":
		_, err = adm.ReportResultBatch(ctx, &sendgatev1.ReportResultBatchRequest{Results: []*sendgatev1.ReportResultRequest{{SenderIp: "203.0.113.5", RecipientDomain: "example.com", SmtpCode: 250}}})
	case "GetState":
		_, err = admin.GetState(ctx, &sendgatev1.GetStateRequest{SenderIp: "203.0.113.5", RecipientDomainOrProvider: "example.com"})
	case "ListStates":
		_, err = admin.ListStates(ctx, &sendgatev1.ListStatesRequest{})
	case "ResolveProvider":
		_, err = admin.ResolveProvider(ctx, &sendgatev1.ResolveProviderRequest{Domain: "qq.com"})
	case "ClassifyReply":
		_, err = admin.ClassifyReply(ctx, &sendgatev1.ClassifyReplyRequest{ProviderOrDomain: "qq.com", SmtpCode: 250})
	case "SetState":
		_, err = admin.SetState(ctx, &sendgatev1.SetStateRequest{SenderIp: "203.0.113.5", Provider: "tencent", Action: sendgatev1.StateAction_STATE_ACTION_RELEASE, Note: "test"})
	case "Health":
		_, err = healthpb.NewHealthClient(c.Conn()).Check(ctx, &healthpb.HealthCheckRequest{})
	default:
		panic(rpc)
	}
	return err
}

var (
	admissionRPCs = []string{"CanSend", "CanSendBatch", "ReportResult", "ReportResultBatch"}
	readRPCs      = []string{"GetState", "ListStates", "ResolveProvider", "ClassifyReply"}
)

// TestRoles calls every RPC with every kind of token and checks the code.
func TestRoles(t *testing.T) {
	t.Parallel()
	ts := startServer(t, serverOptions{})
	ctx := context.Background()
	type want map[string]codes.Code // rpc -> code; unlisted: OK
	all := func(c codes.Code, except ...string) want {
		w := want{}
		for _, r := range append(append(append([]string{}, admissionRPCs...), readRPCs...), "SetState") {
			w[r] = c
		}
		for _, r := range except {
			delete(w, r)
		}
		return w
	}
	tests := []struct {
		name  string
		token string
		want  want
	}{
		{"no token", "", all(codes.Unauthenticated)},
		{"unknown token", "sgt_not-a-known-token", all(codes.Unauthenticated)},
		{"admin", tokAlice, want{}},
		{"reader", tokReader, all(codes.PermissionDenied, readRPCs...)},
		{"mailer", tokMailer, all(codes.PermissionDenied, admissionRPCs...)},
		{"restricted mailer, own IP", tokRestricted, all(codes.PermissionDenied, admissionRPCs...)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var opts []client.Option
			if tt.token != "" {
				opts = append(opts, client.WithToken(tt.token))
			}
			c := ts.dial(t, opts...)
			for _, rpc := range append(append([]string{"Health", "SetState"}, admissionRPCs...), readRPCs...) {
				got := status.Code(call(ctx, c, rpc))
				if w := tt.want[rpc]; got != w {
					t.Errorf("%s: got %v, want %v", rpc, got, w)
				}
			}
		})
	}
	logs := ts.logs.String()
	for _, tok := range []string{tokAlice, tokReader, tokMailer, tokRestricted, "sgt_not-a-known-token"} {
		if strings.Contains(logs, tok) {
			t.Errorf("the log contains the token %q", tok)
		}
	}
	for _, s := range []string{`msg="call refused"`, "code=Unauthenticated", "code=PermissionDenied", "caller=dashboards", `caller="token sha256:`} {
		if !strings.Contains(logs, s) {
			t.Errorf("the log lacks %q:\n%s", s, logs)
		}
	}
}

// TestSenderIPs checks that a restricted mailer can neither ask about nor
// report on another IP, in single calls and in any item of a batch, and
// that a refused batch decides nothing.
func TestSenderIPs(t *testing.T) {
	t.Parallel()
	ts := startServer(t, serverOptions{})
	ctx := context.Background()
	adm := ts.dial(t, client.WithToken(tokRestricted)).Admission()
	admin := ts.dial(t, client.WithToken(tokAlice)).Admin()
	cs := func(ip string) *sendgatev1.CanSendRequest {
		return &sendgatev1.CanSendRequest{SenderIp: ip, RecipientDomain: "qq.com"}
	}
	rr := func(ip string) *sendgatev1.ReportResultRequest {
		return &sendgatev1.ReportResultRequest{SenderIp: ip, RecipientDomain: "qq.com", SmtpCode: 550, Reply: "blocked"}
	}
	tests := []struct {
		name string
		do   func() error
		want codes.Code
		msg  string
	}{
		{"CanSend own /24", func() error { _, err := adm.CanSend(ctx, cs("203.0.113.77")); return err }, codes.OK, ""},
		{"CanSend own single IP", func() error { _, err := adm.CanSend(ctx, cs("198.51.100.7")); return err }, codes.OK, ""},
		{"CanSend other IP", func() error { _, err := adm.CanSend(ctx, cs("198.51.100.8")); return err }, codes.PermissionDenied, `sender_ip: token "mta-eu" may not speak for sender IP 198.51.100.8`},
		{"CanSend IPv4-mapped other", func() error { _, err := adm.CanSend(ctx, cs("::ffff:10.1.1.1")); return err }, codes.PermissionDenied, "10.1.1.1"},
		{"CanSend invalid IP", func() error { _, err := adm.CanSend(ctx, cs("999.1.1.1")); return err }, codes.InvalidArgument, "sender_ip"},
		{"ReportResult other IP", func() error { _, err := adm.ReportResult(ctx, rr("192.0.2.1")); return err }, codes.PermissionDenied, "sender_ip:"},
		{"CanSendBatch one other", func() error {
			_, err := adm.CanSendBatch(ctx, &sendgatev1.CanSendBatchRequest{Requests: []*sendgatev1.CanSendRequest{cs("203.0.113.9"), cs("203.0.113.9"), cs("192.0.2.1")}})
			return err
		}, codes.PermissionDenied, "requests[2].sender_ip"},
		{"ReportResultBatch one other", func() error {
			_, err := adm.ReportResultBatch(ctx, &sendgatev1.ReportResultBatchRequest{Results: []*sendgatev1.ReportResultRequest{rr("203.0.113.9"), rr("192.0.2.1")}})
			return err
		}, codes.PermissionDenied, "results[1].sender_ip"},
	}
	for _, tt := range tests {
		err := tt.do()
		if got := status.Code(err); got != tt.want || !strings.Contains(status.Convert(err).Message(), tt.msg) {
			t.Errorf("%s: got %v, want %v with %q", tt.name, err, tt.want, tt.msg)
		}
	}
	// The refused batches decided and applied nothing for their allowed items.
	st, err := admin.GetState(ctx, &sendgatev1.GetStateRequest{SenderIp: "203.0.113.9", RecipientDomainOrProvider: "tencent"})
	if err != nil {
		t.Fatal(err)
	}
	if st.GetState().GetState() != sendgatev1.ReputationState_REPUTATION_STATE_HEALTHY || len(st.GetState().GetHistory()) != 0 {
		t.Errorf("a refused batch changed state: %v", st)
	}
	for _, tier := range st.GetState().GetTiers() {
		if tier.GetRemaining() != tier.GetLimit() {
			t.Errorf("a refused batch took tokens: %v", tier)
		}
	}
}

// TestAudit checks that SetState records the token's name as the actor in
// the key's history and logs an audit record.
func TestAudit(t *testing.T) {
	t.Parallel()
	ts := startServer(t, serverOptions{})
	ctx := context.Background()
	admin := ts.dial(t, client.WithToken(tokAlice)).Admin()
	until := time.Now().Add(time.Hour)
	resp, err := admin.SetState(ctx, &sendgatev1.SetStateRequest{
		SenderIp: "203.0.113.5", Provider: "tencent", Action: sendgatev1.StateAction_STATE_ACTION_HOLD,
		Until: timestamppb.New(until), Note: "ticket 42: warming up",
	})
	if err != nil {
		t.Fatal(err)
	}
	h := resp.GetState().GetHistory()
	if len(h) == 0 || h[len(h)-1].GetActor() != "alice" || h[len(h)-1].GetReason() != "ticket 42: warming up" {
		t.Fatalf("history: %v, want the last entry by alice with the note", h)
	}
	logs := ts.logs.String()
	for _, s := range []string{`msg="audit: SetState"`, "actor=alice", "via=token", "sender_ip=203.0.113.5", "provider=tencent", "action=STATE_ACTION_HOLD", `note="ticket 42: warming up"`, "code=OK"} {
		if !strings.Contains(logs, s) {
			t.Errorf("the audit log lacks %q:\n%s", s, logs)
		}
	}
}

// TestMutualTLS checks certificate identities and every way a certificate
// can be refused.
func TestMutualTLS(t *testing.T) {
	t.Parallel()
	ts := startServer(t, serverOptions{mtls: true})
	other := newCA(t, "untrusted CA")
	ctx := context.Background()
	tests := []struct {
		name string
		ca   *testCA
		leaf *leaf
		want map[string]codes.Code
	}{
		{"admin by URI SAN", ts.ca, &leaf{cn: "whatever", uri: "spiffe://example.org/ops/bob"},
			map[string]codes.Code{"SetState": codes.OK, "GetState": codes.OK, "CanSend": codes.OK}},
		{"reader by CN", ts.ca, &leaf{cn: "grafana"},
			map[string]codes.Code{"SetState": codes.PermissionDenied, "GetState": codes.OK, "CanSend": codes.PermissionDenied}},
		{"mailer by DNS SAN", ts.ca, &leaf{cn: "x", dns: []string{"mta1.example.org"}},
			map[string]codes.Code{"SetState": codes.PermissionDenied, "GetState": codes.PermissionDenied, "CanSend": codes.OK}},
		{"trusted but unmapped", ts.ca, &leaf{cn: "stranger"},
			map[string]codes.Code{"SetState": codes.PermissionDenied, "CanSend": codes.PermissionDenied, "Health": codes.OK}},
		{"no client certificate", nil, nil,
			map[string]codes.Code{"CanSend": codes.Unavailable, "Health": codes.Unavailable}},
		{"untrusted CA", other, &leaf{cn: "grafana", uri: "spiffe://example.org/ops/bob"},
			map[string]codes.Code{"SetState": codes.Unavailable, "Health": codes.Unavailable}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := ts.dial(t, client.WithTLS(ts.clientTLS(t, tt.ca, "client", tt.leaf)))
			for rpc, w := range tt.want {
				cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				err := call(cctx, c, rpc)
				cancel()
				if got := status.Code(err); got != w {
					t.Errorf("%s: got %v, want %v", rpc, err, w)
				}
			}
		})
	}
	// A certificate identity is the actor of its operator actions.
	c := ts.dial(t, client.WithTLS(ts.clientTLS(t, ts.ca, "bob", &leaf{cn: "bob", uri: "spiffe://example.org/ops/bob"})))
	resp, err := c.Admin().SetState(ctx, &sendgatev1.SetStateRequest{SenderIp: "192.0.2.9", Provider: "tencent", Action: sendgatev1.StateAction_STATE_ACTION_HOLD, Note: "by cert"})
	if err != nil {
		t.Fatal(err)
	}
	if h := resp.GetState().GetHistory(); len(h) == 0 || h[len(h)-1].GetActor() != "bob" {
		t.Fatalf("history %v: want actor bob", h)
	}
	if logs := ts.logs.String(); !strings.Contains(logs, "subject=spiffe://example.org/ops/bob") {
		t.Errorf("the audit log lacks the certificate identity:\n%s", logs)
	}
}

// TestCertReload replaces the server's certificate files and checks that
// new connections see the new certificate while a bad pair is ignored.
func TestCertReload(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := newCA(t, "test CA")
	certFile, keyFile := ca.issue(t, dir, "server", leaf{cn: "first", server: true, serial: 1})
	r, err := auth.NewCertReloader(auth.TLSFiles{CertFile: certFile, KeyFile: keyFile}, time.Millisecond, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := tls.Listen("tcp", "127.0.0.1:0", r.Config(tls.NoClientCert, "h2"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lis.Close() })
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			go func() { c.(*tls.Conn).Handshake(); c.Close() }()
		}
	}()
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca.pem)
	served := func() string {
		c, err := tls.Dial("tcp", lis.Addr().String(), &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", NextProtos: []string{"h2"}})
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].Subject.CommonName
	}
	if got := served(); got != "first" {
		t.Fatalf("served %q, want first", got)
	}
	// A certificate written before its key does not load: keep the old one.
	other := t.TempDir()
	newCert, newKey := ca.issue(t, other, "server", leaf{cn: "second", server: true, serial: 2})
	data, _ := os.ReadFile(newCert)
	writeFile(t, certFile, data)
	time.Sleep(5 * time.Millisecond)
	if got := served(); got != "first" {
		t.Fatalf("with a mismatched pair served %q, want first", got)
	}
	data, _ = os.ReadFile(newKey)
	writeFile(t, keyFile, data)
	deadline := time.Now().Add(5 * time.Second)
	for served() != "second" {
		if time.Now().After(deadline) {
			t.Fatal("the new certificate was never served")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestHealthOpenWithoutCredentials checks health and reflection need no
// credentials while everything else does.
func TestHealthOpenWithoutCredentials(t *testing.T) {
	t.Parallel()
	ts := startServer(t, serverOptions{})
	conn, err := grpc.NewClient(ts.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	resp, err := healthpb.NewHealthClient(conn).Check(context.Background(), &healthpb.HealthCheckRequest{})
	if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health: %v, %v", resp, err)
	}
}
