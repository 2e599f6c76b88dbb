package server_test

import (
	"context"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sendgate/sendgate/internal/config"
	"github.com/sendgate/sendgate/internal/fakeclock"
	"github.com/sendgate/sendgate/internal/resolve"
	"github.com/sendgate/sendgate/limiter"
	"github.com/sendgate/sendgate/limiter/memstore"
	sendgatev1 "github.com/sendgate/sendgate/proto/sendgate/v1"
	"github.com/sendgate/sendgate/server"
)

const qqBlock = "550 Ip frequency limited. http://service.mail.qq.com/cgi-bin/help?subtype=1&&id=20022&&no=1000725"

// TestQQStoryOverGRPC plays the QQ story through the real generated stack
// with the built-in policy and reply rules: sends, a `550 Ip frequency
// limited`, a fleet-wide DEFER for the cooldown (other IPs and providers
// untouched), a probe, recovery, a second block with a longer cooldown, and
// an operator release.
func TestQQStoryOverGRPC(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cfg, err := config.Builtin()
	if err != nil {
		t.Fatal(err)
	}
	clk := fakeclock.New(time.Date(2026, 11, 27, 1, 0, 0, 0, time.UTC)) // 09:00 in Beijing
	store := memstore.New(memstore.Options{SweepInterval: -1, Policy: cfg.Policy.For})
	defer store.Close()
	lim := limiter.New(store, cfg.Policy, limiter.Options{})
	res, err := resolve.New(cfg.Providers, nil, resolve.Options{})
	if err != nil {
		t.Fatal(err)
	}
	cls, err := cfg.Classifier()
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(server.Options{Limiter: lim, Resolver: res, Classifier: cls, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	srv.Register(g)
	go g.Serve(lis)
	defer g.Stop()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	adm, admin := sendgatev1.NewAdmissionServiceClient(conn), sendgatev1.NewAdminServiceClient(conn)

	const ip, other = "203.0.113.7", "203.0.113.8"
	check := func(ip, domain string) *sendgatev1.CanSendResponse {
		t.Helper()
		r, err := adm.CanSend(ctx, &sendgatev1.CanSendRequest{SenderIp: ip, RecipientDomain: domain})
		if err != nil {
			t.Fatalf("CanSend %s %s: %v", ip, domain, err)
		}
		return r
	}
	report := func(code uint32, reply string, attempted time.Time) *sendgatev1.ReportResultResponse {
		t.Helper()
		req := &sendgatev1.ReportResultRequest{SenderIp: ip, RecipientDomain: "user@QQ.com", SmtpCode: code, Reply: reply}
		if !attempted.IsZero() {
			req.AttemptedAt = timestamppb.New(attempted)
		}
		r, err := adm.ReportResult(ctx, req)
		if err != nil {
			t.Fatalf("ReportResult %d: %v", code, err)
		}
		return r
	}
	wantDefer := func(r *sendgatev1.CanSendResponse, reason sendgatev1.DeferReason, retry time.Duration) {
		t.Helper()
		if r.GetVerdict() != sendgatev1.Verdict_VERDICT_DEFER || r.GetReason() != reason {
			t.Fatalf("got %v/%v (%s), want DEFER/%v", r.GetVerdict(), r.GetReason(), r.GetDetail(), reason)
		}
		if got := r.GetRetryAfter().AsDuration(); got != retry {
			t.Fatalf("retry_after %v, want %v (%s)", got, retry, r.GetDetail())
		}
	}
	wantAllow := func(r *sendgatev1.CanSendResponse, state sendgatev1.ReputationState) {
		t.Helper()
		if r.GetVerdict() != sendgatev1.Verdict_VERDICT_ALLOW || r.GetState() != state {
			t.Fatalf("got %v in %v (%s), want ALLOW in %v", r.GetVerdict(), r.GetState(), r.GetDetail(), state)
		}
	}

	// The built-in policy paces QQ to its hour tier (600 an hour: one
	// message every 6s; the calendar day counts, it does not pace); a second
	// message at once waits for its slot.
	wantAllow(check(ip, "qq.com"), sendgatev1.ReputationState_REPUTATION_STATE_HEALTHY)
	wantDefer(check(ip, "qq.com"), sendgatev1.DeferReason_DEFER_REASON_RATE_LIMITED, 6*time.Second)
	// Twenty sends go out at that pace.
	for i := 1; i < 20; i++ {
		clk.Advance(6 * time.Second)
		wantAllow(check(ip, "qq.com"), sendgatev1.ReputationState_REPUTATION_STATE_HEALTHY)
		report(250, "250 OK: queued as "+string(rune('A'+i)), time.Time{})
	}
	sentAt := clk.Now()
	clk.Advance(10 * time.Second)

	// QQ pushes back.
	r := report(550, qqBlock, time.Time{})
	if r.GetClassification() != sendgatev1.Classification_CLASSIFICATION_IP_BLOCKED || r.GetRule() != "tencent/ip-frequency-limited" ||
		r.GetState() != sendgatev1.ReputationState_REPUTATION_STATE_BLOCKED || !r.GetStateChanged() || r.GetProvider() != "tencent" {
		t.Fatalf("block report: %v", r)
	}
	if until := r.GetStateUntil().AsTime(); !until.Equal(clk.Now().Add(10 * time.Minute)) {
		t.Fatalf("first cooldown until %v, want 10 minutes", until)
	}
	// The whole fleet defers for the cooldown; foxmail.com is QQ too.
	wantDefer(check(ip, "qq.com"), sendgatev1.DeferReason_DEFER_REASON_BLOCKED, 10*time.Minute)
	wantDefer(check(ip, "someone@foxmail.com"), sendgatev1.DeferReason_DEFER_REASON_BLOCKED, 10*time.Minute)
	// Other IPs and other providers are untouched.
	wantAllow(check(other, "qq.com"), sendgatev1.ReputationState_REPUTATION_STATE_HEALTHY)
	wantAllow(check(ip, "gmail.com"), sendgatev1.ReputationState_REPUTATION_STATE_HEALTHY)
	// Replies to sends already in flight are one event, not more strikes.
	if r := report(550, qqBlock, sentAt); r.GetStateChanged() || r.GetState() != sendgatev1.ReputationState_REPUTATION_STATE_BLOCKED {
		t.Fatalf("stale block report moved the state: %v", r)
	}

	// After the cooldown: one probe at a time, one a minute.
	clk.Advance(10 * time.Minute)
	wantAllow(check(ip, "qq.com"), sendgatev1.ReputationState_REPUTATION_STATE_PROBING)
	wantDefer(check(ip, "qq.com"), sendgatev1.DeferReason_DEFER_REASON_PROBING, time.Minute)
	for i := 0; i < 3; i++ {
		if i > 0 {
			clk.Advance(time.Minute)
			wantAllow(check(ip, "qq.com"), sendgatev1.ReputationState_REPUTATION_STATE_PROBING)
		}
		report(250, "250 OK", time.Time{})
	}
	// Recovery ramps from a quarter of the rate.
	clk.Advance(2 * time.Minute)
	rec := check(ip, "qq.com")
	wantAllow(rec, sendgatev1.ReputationState_REPUTATION_STATE_THROTTLED)
	for _, tier := range rec.GetTiers() {
		if tier.GetName() == "hour" && tier.GetLimit() != 150 {
			t.Fatalf("hour tier after recovery: %v, want a quarter of 600", tier)
		}
	}
	for i := 0; i < 20; i++ {
		clk.Advance(2 * time.Minute)
		check(ip, "qq.com")
	}

	// A second block waits longer.
	clk.Advance(time.Minute)
	r = report(550, qqBlock, time.Time{})
	if r.GetState() != sendgatev1.ReputationState_REPUTATION_STATE_BLOCKED || !r.GetStateUntil().AsTime().Equal(clk.Now().Add(2*time.Hour)) {
		t.Fatalf("second block: %v until %v", r.GetState(), r.GetStateUntil().AsTime())
	}
	wantDefer(check(ip, "qq.com"), sendgatev1.DeferReason_DEFER_REASON_BLOCKED, 2*time.Hour)

	// The operator reads the story, then releases the key after QQ
	// whitelisted the IP.
	st, err := admin.GetState(ctx, &sendgatev1.GetStateRequest{SenderIp: ip, RecipientDomainOrProvider: "tencent"})
	if err != nil {
		t.Fatal(err)
	}
	ks := st.GetState()
	if ks.GetStrikes() != 2 || ks.GetReason() != "tencent/ip-frequency-limited" || ks.GetLastReply() != qqBlock || len(ks.GetHistory()) < 4 {
		t.Fatalf("state: strikes %d reason %q history %d", ks.GetStrikes(), ks.GetReason(), len(ks.GetHistory()))
	}
	if ls, err := admin.ListStates(ctx, &sendgatev1.ListStatesRequest{}); err != nil || len(ls.GetStates()) != 1 || ls.GetStates()[0].GetSenderIp() != ip {
		t.Fatalf("ListStates: %v %v", ls, err)
	}
	set, err := admin.SetState(ctx, &sendgatev1.SetStateRequest{SenderIp: ip, Provider: "qq.com", Action: sendgatev1.StateAction_STATE_ACTION_RELEASE, Note: "whitelisted by QQ"})
	if err != nil {
		t.Fatal(err)
	}
	if s := set.GetState(); s.GetState() != sendgatev1.ReputationState_REPUTATION_STATE_HEALTHY || s.GetHistory()[0].GetReason() != "whitelisted by QQ" {
		t.Fatalf("release: %v", s)
	}
	wantAllow(check(ip, "qq.com"), sendgatev1.ReputationState_REPUTATION_STATE_HEALTHY)
}
