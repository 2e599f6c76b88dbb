package server_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sendgate/sendgate/limiter"
	sendgatev1 "github.com/sendgate/sendgate/proto/sendgate/v1"
)

const ip = "203.0.113.7"

// tiersOf returns "name:remaining/limit" for each tier.
func tiersOf(ts []*sendgatev1.TierStatus) string {
	var parts []string
	for _, t := range ts {
		parts = append(parts, fmt.Sprintf("%s:%d/%d", t.GetName(), t.GetRemaining(), t.GetLimit()))
	}
	return strings.Join(parts, " ")
}

func TestCanSendSteps(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	ctx := context.Background()
	steps := []struct {
		name      string
		advance   time.Duration
		req       *sendgatev1.CanSendRequest
		verdict   sendgatev1.Verdict
		reason    sendgatev1.DeferReason
		retry     time.Duration
		tiers     string
		detail    string
		provider  string
		stateWant sendgatev1.ReputationState
	}{
		{name: "first", req: canSendReq(ip, "user@QQ.com", 1), verdict: sendgatev1.Verdict_VERDICT_ALLOW,
			tiers: "minute:2/3 hour:9/10", detail: "allowed", provider: "tencent"},
		{name: "dry run takes nothing", req: &sendgatev1.CanSendRequest{SenderIp: ip, RecipientDomain: "qq.com", DryRun: true},
			verdict: sendgatev1.Verdict_VERDICT_ALLOW, tiers: "minute:2/3 hour:9/10", detail: "allowed", provider: "tencent"},
		{name: "count two, mapped IPv6 form", req: canSendReq("::ffff:203.0.113.7", "foxmail.com", 2), verdict: sendgatev1.Verdict_VERDICT_ALLOW,
			tiers: "minute:0/3 hour:7/10", detail: "allowed", provider: "tencent"},
		{name: "minute exhausted", req: canSendReq(ip, "qq.com", 1), verdict: sendgatev1.Verdict_VERDICT_DEFER,
			reason: sendgatev1.DeferReason_DEFER_REASON_RATE_LIMITED, retry: 20 * time.Second,
			tiers: "minute:0/3 hour:7/10", detail: "minute tier: 0 of 3 left, next message in 20s", provider: "tencent"},
		{name: "dry run of a deferral", req: &sendgatev1.CanSendRequest{SenderIp: ip, RecipientDomain: "qq.com", DryRun: true},
			verdict: sendgatev1.Verdict_VERDICT_DEFER, reason: sendgatev1.DeferReason_DEFER_REASON_RATE_LIMITED, retry: 20 * time.Second,
			tiers: "minute:0/3 hour:7/10", detail: "minute tier: 0 of 3 left, next message in 20s", provider: "tencent"},
		{name: "other provider untouched", req: canSendReq(ip, "example.org", 1), verdict: sendgatev1.Verdict_VERDICT_ALLOW,
			tiers: "minute:59/60", detail: "allowed", provider: "example.org"},
		{name: "ten seconds later still short", advance: 10 * time.Second, req: canSendReq(ip, "qq.com", 1),
			verdict: sendgatev1.Verdict_VERDICT_DEFER, reason: sendgatev1.DeferReason_DEFER_REASON_RATE_LIMITED, retry: 10 * time.Second,
			tiers: "minute:0/3 hour:7/10", detail: "minute tier: 0 of 3 left, next message in 10s", provider: "tencent"},
		{name: "two need more", advance: 10 * time.Second, req: canSendReq(ip, "qq.com", 2),
			verdict: sendgatev1.Verdict_VERDICT_DEFER, reason: sendgatev1.DeferReason_DEFER_REASON_RATE_LIMITED, retry: 20 * time.Second,
			tiers: "minute:1/3 hour:7/10", detail: "minute tier has 1 of 3 left, 2 needed, enough in 20s", provider: "tencent"},
		{name: "after retry_after", req: canSendReq(ip, "qq.com", 1), verdict: sendgatev1.Verdict_VERDICT_ALLOW,
			tiers: "minute:0/3 hour:6/10", detail: "allowed", provider: "tencent"},
	}
	for _, s := range steps {
		e.clock.Advance(s.advance)
		resp, err := e.adm.CanSend(ctx, s.req)
		if err != nil {
			t.Fatalf("%s: CanSend: %v", s.name, err)
		}
		if resp.GetVerdict() != s.verdict || resp.GetReason() != s.reason {
			t.Errorf("%s: verdict %v %v, want %v %v", s.name, resp.GetVerdict(), resp.GetReason(), s.verdict, s.reason)
		}
		if got := resp.GetRetryAfter(); s.verdict == sendgatev1.Verdict_VERDICT_DEFER && got.AsDuration() != s.retry ||
			s.verdict == sendgatev1.Verdict_VERDICT_ALLOW && got != nil {
			t.Errorf("%s: retry_after %v, want %v", s.name, got.AsDuration(), s.retry)
		}
		if got := tiersOf(resp.GetTiers()); got != s.tiers {
			t.Errorf("%s: tiers %q, want %q", s.name, got, s.tiers)
		}
		if resp.GetDetail() != s.detail {
			t.Errorf("%s: detail %q, want %q", s.name, resp.GetDetail(), s.detail)
		}
		if resp.GetProvider() != s.provider {
			t.Errorf("%s: provider %q, want %q", s.name, resp.GetProvider(), s.provider)
		}
		if resp.GetState() != sendgatev1.ReputationState_REPUTATION_STATE_HEALTHY {
			t.Errorf("%s: state %v, want HEALTHY", s.name, resp.GetState())
		}
		for _, ts := range resp.GetTiers() {
			if ts.GetWindow() == nil || ts.GetConfiguredLimit() == 0 {
				t.Errorf("%s: tier %s without window or configured limit", s.name, ts.GetName())
			}
		}
	}
}

func TestNotAttemptedRefunds(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	ctx := context.Background()
	for i := 0; i < 3; i++ {
		if _, err := e.adm.CanSend(ctx, canSendReq(ip, "qq.com", 1)); err != nil {
			t.Fatal(err)
		}
	}
	if r, _ := e.adm.CanSend(ctx, canSendReq(ip, "qq.com", 1)); r.GetVerdict() != sendgatev1.Verdict_VERDICT_DEFER {
		t.Fatalf("4th CanSend: %v, want DEFER", r.GetVerdict())
	}
	rep, err := e.adm.ReportResult(ctx, &sendgatev1.ReportResultRequest{
		SenderIp: ip, RecipientDomain: "qq.com", Count: 2, Outcome: sendgatev1.Outcome_OUTCOME_NOT_ATTEMPTED,
	})
	if err != nil {
		t.Fatal(err)
	}
	if rep.GetClassification() != sendgatev1.Classification_CLASSIFICATION_NOT_ATTEMPTED || rep.GetProvider() != "tencent" || rep.GetStateChanged() {
		t.Errorf("report: %v", rep)
	}
	r, err := e.adm.CanSend(ctx, canSendReq(ip, "qq.com", 2))
	if err != nil {
		t.Fatal(err)
	}
	if r.GetVerdict() != sendgatev1.Verdict_VERDICT_ALLOW || tiersOf(r.GetTiers()) != "minute:0/3 hour:7/10" {
		t.Errorf("after refund: %v %s, want ALLOW minute:0/3 hour:7/10", r.GetVerdict(), tiersOf(r.GetTiers()))
	}
}

func TestReportBlocksAndAdminStory(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{actor: func(context.Context) string { return "alice" }})
	ctx := context.Background()
	if _, err := e.adm.CanSend(ctx, canSendReq(ip, "qq.com", 1)); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(time.Second)
	del, err := e.adm.ReportResult(ctx, &sendgatev1.ReportResultRequest{SenderIp: ip, RecipientDomain: "qq.com", SmtpCode: 250, Reply: "250 OK queued"})
	if err != nil {
		t.Fatal(err)
	}
	if del.GetClassification() != sendgatev1.Classification_CLASSIFICATION_DELIVERED || del.GetState() != sendgatev1.ReputationState_REPUTATION_STATE_HEALTHY || del.GetStateChanged() {
		t.Errorf("delivered report: %v", del)
	}
	blk, err := e.adm.ReportResult(ctx, &sendgatev1.ReportResultRequest{
		SenderIp: ip, RecipientDomain: "qq.com", SmtpCode: 550, Reply: "550 Ip frequency limited",
		AttemptedAt: timestamppb.New(e.clock.Now()),
	})
	if err != nil {
		t.Fatal(err)
	}
	if blk.GetClassification() != sendgatev1.Classification_CLASSIFICATION_IP_BLOCKED || blk.GetRule() != "tencent/ip-frequency-limited" ||
		blk.GetState() != sendgatev1.ReputationState_REPUTATION_STATE_BLOCKED || !blk.GetStateChanged() || blk.GetStateUntil() == nil {
		t.Fatalf("block report: %v", blk)
	}
	until := blk.GetStateUntil().AsTime()
	e.clock.Advance(time.Minute)
	d, err := e.adm.CanSend(ctx, canSendReq(ip, "foxmail.com", 1))
	if err != nil {
		t.Fatal(err)
	}
	wantDetail := "blocked until " + until.UTC().Format(time.RFC3339) + " by tencent/ip-frequency-limited"
	if d.GetVerdict() != sendgatev1.Verdict_VERDICT_DEFER || d.GetReason() != sendgatev1.DeferReason_DEFER_REASON_BLOCKED ||
		d.GetRetryAfter().AsDuration() != until.Sub(e.clock.Now()) || d.GetDetail() != wantDetail || len(d.GetTiers()) != 2 {
		t.Errorf("CanSend while blocked: %v\nwant detail %q", d, wantDetail)
	}

	// The operator's view: GetState by provider name and by address.
	for _, which := range []string{"tencent", "someone@Foxmail.COM"} {
		gs, err := e.admin.GetState(ctx, &sendgatev1.GetStateRequest{SenderIp: ip, RecipientDomainOrProvider: which})
		if err != nil {
			t.Fatalf("GetState %s: %v", which, err)
		}
		st := gs.GetState()
		if st.GetProvider() != "tencent" || st.GetState() != sendgatev1.ReputationState_REPUTATION_STATE_BLOCKED ||
			st.GetReason() != "tencent/ip-frequency-limited" || st.GetLastReply() != "550 Ip frequency limited" ||
			st.GetStrikes() != 1 || !st.GetUntil().AsTime().Equal(until) || len(st.GetHistory()) == 0 ||
			st.GetReportCounts()["CLASSIFICATION_IP_BLOCKED"] != 1 || st.GetReportCounts()["CLASSIFICATION_DELIVERED"] != 1 {
			t.Errorf("GetState %s: %v", which, st)
		}
	}

	// ListStates: the blocked key is listed with no filter and under BLOCKED,
	// not under HELD.
	list := func(req *sendgatev1.ListStatesRequest) []string {
		t.Helper()
		r, err := e.admin.ListStates(ctx, req)
		if err != nil {
			t.Fatalf("ListStates %v: %v", req, err)
		}
		var keys []string
		for _, s := range r.GetStates() {
			keys = append(keys, s.GetSenderIp()+"|"+s.GetProvider()+"|"+s.GetState().String())
		}
		return keys
	}
	if got := strings.Join(list(&sendgatev1.ListStatesRequest{}), ","); got != ip+"|tencent|REPUTATION_STATE_BLOCKED" {
		t.Errorf("ListStates{}: %s", got)
	}
	if got := list(&sendgatev1.ListStatesRequest{State: sendgatev1.ReputationState_REPUTATION_STATE_HELD}); len(got) != 0 {
		t.Errorf("ListStates{HELD}: %v", got)
	}
	if got := list(&sendgatev1.ListStatesRequest{Provider: "qq.com", State: sendgatev1.ReputationState_REPUTATION_STATE_BLOCKED}); len(got) != 1 {
		t.Errorf("ListStates{qq.com, BLOCKED}: %v", got)
	}

	// Operator: release, then hold without end, then hold with end, reset.
	rel, err := e.admin.SetState(ctx, &sendgatev1.SetStateRequest{SenderIp: ip, Provider: "tencent", Action: sendgatev1.StateAction_STATE_ACTION_RELEASE, Note: "whitelisted"})
	if err != nil {
		t.Fatal(err)
	}
	if st := rel.GetState(); st.GetState() != sendgatev1.ReputationState_REPUTATION_STATE_HEALTHY ||
		st.GetHistory()[0].GetActor() != "alice" || st.GetHistory()[0].GetReason() != "whitelisted" {
		t.Errorf("release: %v", st)
	}
	if r, _ := e.adm.CanSend(ctx, canSendReq(ip, "qq.com", 1)); r.GetVerdict() != sendgatev1.Verdict_VERDICT_ALLOW {
		t.Errorf("CanSend after release: %v", r)
	}
	hold, err := e.admin.SetState(ctx, &sendgatev1.SetStateRequest{SenderIp: ip, Provider: "qq.com", Action: sendgatev1.StateAction_STATE_ACTION_HOLD, Note: "investigating"})
	if err != nil {
		t.Fatal(err)
	}
	if st := hold.GetState(); st.GetState() != sendgatev1.ReputationState_REPUTATION_STATE_HELD || st.GetUntil() != nil {
		t.Errorf("hold: %v", st)
	}
	h, err := e.adm.CanSend(ctx, canSendReq(ip, "qq.com", 1))
	if err != nil {
		t.Fatal(err)
	}
	if h.GetVerdict() != sendgatev1.Verdict_VERDICT_DEFER || h.GetReason() != sendgatev1.DeferReason_DEFER_REASON_HELD ||
		h.GetRetryAfter().AsDuration() <= 0 || h.GetDetail() != "held until released: investigating" {
		t.Errorf("CanSend while held: %v", h)
	}
	end := e.clock.Now().Add(time.Hour)
	hold2, err := e.admin.SetState(ctx, &sendgatev1.SetStateRequest{SenderIp: ip, Provider: "tencent", Action: sendgatev1.StateAction_STATE_ACTION_HOLD, Until: timestamppb.New(end)})
	if err != nil {
		t.Fatal(err)
	}
	if st := hold2.GetState(); !st.GetUntil().AsTime().Equal(end) {
		t.Errorf("hold until: %v", st)
	}
	if h, _ := e.adm.CanSend(ctx, canSendReq(ip, "qq.com", 1)); h.GetRetryAfter().AsDuration() != time.Hour {
		t.Errorf("CanSend while held for an hour: %v", h)
	}
	reset, err := e.admin.SetState(ctx, &sendgatev1.SetStateRequest{SenderIp: ip, Provider: "tencent", Action: sendgatev1.StateAction_STATE_ACTION_RESET})
	if err != nil {
		t.Fatal(err)
	}
	if st := reset.GetState(); st.GetState() != sendgatev1.ReputationState_REPUTATION_STATE_HEALTHY || st.GetStrikes() != 0 || tiersOf(st.GetTiers()) != "minute:3/3 hour:10/10" {
		t.Errorf("reset: %v", st)
	}
}

func TestListStatesPages(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	ctx := context.Background()
	for i := 1; i <= 5; i++ {
		_, err := e.admin.SetState(ctx, &sendgatev1.SetStateRequest{SenderIp: fmt.Sprintf("192.0.2.%d", i), Provider: "tencent", Action: sendgatev1.StateAction_STATE_ACTION_HOLD})
		if err != nil {
			t.Fatal(err)
		}
	}
	var got []string
	token := ""
	for pages := 0; ; pages++ {
		if pages > 5 {
			t.Fatal("too many pages")
		}
		r, err := e.admin.ListStates(ctx, &sendgatev1.ListStatesRequest{PageSize: 2, PageToken: token})
		if err != nil {
			t.Fatal(err)
		}
		if len(r.GetStates()) > 2 {
			t.Fatalf("page of %d", len(r.GetStates()))
		}
		for _, s := range r.GetStates() {
			got = append(got, s.GetSenderIp())
		}
		if token = r.GetNextPageToken(); token == "" {
			break
		}
	}
	if want := "192.0.2.1 192.0.2.2 192.0.2.3 192.0.2.4 192.0.2.5"; strings.Join(got, " ") != want {
		t.Errorf("listed %v, want %s", got, want)
	}
	r, err := e.admin.ListStates(ctx, &sendgatev1.ListStatesRequest{SenderIp: "192.0.2.3"})
	if err != nil || len(r.GetStates()) != 1 {
		t.Errorf("ListStates by sender_ip: %v, %v", r, err)
	}
}

func TestResolveAndClassify(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	ctx := context.Background()
	for _, c := range []struct{ domain, provider, via string }{
		{"QQ.com.", "tencent", "table"},
		{"x@foxmail.com", "tencent", "table"},
		{"example.org", "example.org", "domain"},
	} {
		r, err := e.admin.ResolveProvider(ctx, &sendgatev1.ResolveProviderRequest{Domain: c.domain})
		if err != nil {
			t.Fatalf("ResolveProvider %s: %v", c.domain, err)
		}
		if r.GetProvider() != c.provider || r.GetVia() != c.via {
			t.Errorf("ResolveProvider %s: %v, want %s via %s", c.domain, r, c.provider, c.via)
		}
	}
	for _, c := range []struct {
		in       string
		code     uint32
		reply    string
		class    sendgatev1.Classification
		rule     string
		provider string
	}{
		{"tencent", 550, "550 Ip frequency limited", sendgatev1.Classification_CLASSIFICATION_IP_BLOCKED, "tencent/ip-frequency-limited", "tencent"},
		{"qq.com", 250, "250 ok", sendgatev1.Classification_CLASSIFICATION_DELIVERED, "", "tencent"},
		{"example.org", 0, "", sendgatev1.Classification_CLASSIFICATION_TRANSIENT, "", "example.org"},
	} {
		r, err := e.admin.ClassifyReply(ctx, &sendgatev1.ClassifyReplyRequest{ProviderOrDomain: c.in, SmtpCode: c.code, Reply: c.reply})
		if err != nil {
			t.Fatalf("ClassifyReply %s: %v", c.in, err)
		}
		if r.GetClassification() != c.class || r.GetRule() != c.rule || r.GetProvider() != c.provider {
			t.Errorf("ClassifyReply %s %d: %v", c.in, c.code, r)
		}
	}
	// ClassifyReply changes nothing.
	gs, err := e.admin.GetState(ctx, &sendgatev1.GetStateRequest{SenderIp: ip, RecipientDomainOrProvider: "tencent"})
	if err != nil || gs.GetState().GetState() != sendgatev1.ReputationState_REPUTATION_STATE_HEALTHY || len(gs.GetState().GetReportCounts()) != 0 {
		t.Errorf("after ClassifyReply: %v, %v", gs, err)
	}
}

// TestInvalidArgument: every refused input, with the exact message.
func TestInvalidArgument(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	past := timestamppb.New(t0.Add(-time.Minute))
	future := timestamppb.New(t0.Add(2 * time.Minute))
	long := func(n int) string { return strings.Repeat("a", n) }
	cases := []struct {
		name string
		call func(ctx context.Context) error
		msg  string
	}{
		{"bad ip", func(ctx context.Context) error {
			_, err := e.adm.CanSend(ctx, canSendReq("999.1.1.1", "qq.com", 1))
			return err
		}, `sender_ip: not an IP address: "999.1.1.1"`},
		{"empty ip", func(ctx context.Context) error {
			_, err := e.adm.CanSend(ctx, canSendReq("", "qq.com", 1))
			return err
		}, `sender_ip: empty`},
		{"ip zone", func(ctx context.Context) error {
			_, err := e.adm.CanSend(ctx, canSendReq("fe80::1%eth0", "qq.com", 1))
			return err
		}, `sender_ip: IPv6 zone not allowed: "fe80::1%eth0"`},
		{"empty domain", func(ctx context.Context) error {
			_, err := e.adm.CanSend(ctx, canSendReq(ip, "", 1))
			return err
		}, `recipient_domain: empty`},
		{"domain too long", func(ctx context.Context) error {
			_, err := e.adm.CanSend(ctx, canSendReq(ip, long(321), 1))
			return err
		}, `recipient_domain: too long: 321 bytes, max 320`},
		{"count above capacity", func(ctx context.Context) error {
			_, err := e.adm.CanSend(ctx, canSendReq(ip, "qq.com", 4))
			return err
		}, `count: 4 exceeds the minute tier's capacity of 3`},
		{"report bad code", func(ctx context.Context) error {
			_, err := e.adm.ReportResult(ctx, &sendgatev1.ReportResultRequest{SenderIp: ip, RecipientDomain: "qq.com", SmtpCode: 99})
			return err
		}, `smtp_code: 99 is not an SMTP reply code (want 0 for no reply, or 200..599)`},
		{"report code 600", func(ctx context.Context) error {
			_, err := e.adm.ReportResult(ctx, &sendgatev1.ReportResultRequest{SenderIp: ip, RecipientDomain: "qq.com", SmtpCode: 600})
			return err
		}, `smtp_code: 600 is not an SMTP reply code (want 0 for no reply, or 200..599)`},
		{"report long enhanced", func(ctx context.Context) error {
			_, err := e.adm.ReportResult(ctx, &sendgatev1.ReportResultRequest{SenderIp: ip, RecipientDomain: "qq.com", SmtpCode: 421, EnhancedCode: long(17)})
			return err
		}, `enhanced_code: too long: 17 bytes, max 16`},
		{"report long reply", func(ctx context.Context) error {
			_, err := e.adm.ReportResult(ctx, &sendgatev1.ReportResultRequest{SenderIp: ip, RecipientDomain: "qq.com", SmtpCode: 421, Reply: long(8<<10 + 1)})
			return err
		}, `reply: too long: 8193 bytes, max 8192`},
		{"report from the future", func(ctx context.Context) error {
			_, err := e.adm.ReportResult(ctx, &sendgatev1.ReportResultRequest{SenderIp: ip, RecipientDomain: "qq.com", SmtpCode: 250, AttemptedAt: future})
			return err
		}, `attempted_at: 2026-11-27T08:02:00Z is more than 1m0s in the future`},
		{"report invalid timestamp", func(ctx context.Context) error {
			_, err := e.adm.ReportResult(ctx, &sendgatev1.ReportResultRequest{SenderIp: ip, RecipientDomain: "qq.com", SmtpCode: 250, AttemptedAt: &timestamppb.Timestamp{Nanos: -1}})
			return err
		}, `attempted_at: invalid timestamp: seconds 0, nanos -1 (want years 1 to 9999, nanos 0 to 999999999)`},
		{"report unknown outcome", func(ctx context.Context) error {
			_, err := e.adm.ReportResult(ctx, &sendgatev1.ReportResultRequest{SenderIp: ip, RecipientDomain: "qq.com", Outcome: 7})
			return err
		}, `outcome: unknown value 7`},
		{"report bad domain", func(ctx context.Context) error {
			_, err := e.adm.ReportResult(ctx, &sendgatev1.ReportResultRequest{SenderIp: ip, RecipientDomain: "a..b"})
			return err
		}, ""},
		{"get state bad ip", func(ctx context.Context) error {
			_, err := e.admin.GetState(ctx, &sendgatev1.GetStateRequest{SenderIp: "1.2.3", RecipientDomainOrProvider: "tencent"})
			return err
		}, `sender_ip: not an IP address: "1.2.3"`},
		{"get state empty provider", func(ctx context.Context) error {
			_, err := e.admin.GetState(ctx, &sendgatev1.GetStateRequest{SenderIp: ip})
			return err
		}, `recipient_domain_or_provider: empty`},
		{"get state unknown provider", func(ctx context.Context) error {
			_, err := e.admin.GetState(ctx, &sendgatev1.GetStateRequest{SenderIp: ip, RecipientDomainOrProvider: "gmail"})
			return err
		}, `recipient_domain_or_provider: "gmail" is neither a configured provider nor a domain`},
		{"hold unknown provider", func(ctx context.Context) error {
			_, err := e.admin.SetState(ctx, &sendgatev1.SetStateRequest{SenderIp: ip, Provider: "tencnet", Action: sendgatev1.StateAction_STATE_ACTION_HOLD})
			return err
		}, `provider: "tencnet" is neither a configured provider nor a domain`},
		{"list unknown state", func(ctx context.Context) error {
			_, err := e.admin.ListStates(ctx, &sendgatev1.ListStatesRequest{State: 9})
			return err
		}, `state: unknown value 9`},
		{"list negative page size", func(ctx context.Context) error {
			_, err := e.admin.ListStates(ctx, &sendgatev1.ListStatesRequest{PageSize: -1})
			return err
		}, `page_size: -1 is negative`},
		{"list bad token", func(ctx context.Context) error {
			_, err := e.admin.ListStates(ctx, &sendgatev1.ListStatesRequest{PageToken: "!!"})
			return err
		}, `page_token: malformed: not from a previous ListStates response`},
		{"list bad ip", func(ctx context.Context) error {
			_, err := e.admin.ListStates(ctx, &sendgatev1.ListStatesRequest{SenderIp: "x"})
			return err
		}, `sender_ip: not an IP address: "x"`},
		{"set no action", func(ctx context.Context) error {
			_, err := e.admin.SetState(ctx, &sendgatev1.SetStateRequest{SenderIp: ip, Provider: "tencent"})
			return err
		}, `action: missing: want STATE_ACTION_HOLD, STATE_ACTION_RELEASE or STATE_ACTION_RESET`},
		{"set unknown action", func(ctx context.Context) error {
			_, err := e.admin.SetState(ctx, &sendgatev1.SetStateRequest{SenderIp: ip, Provider: "tencent", Action: 4})
			return err
		}, `action: unknown value 4`},
		{"hold until in the past", func(ctx context.Context) error {
			_, err := e.admin.SetState(ctx, &sendgatev1.SetStateRequest{SenderIp: ip, Provider: "tencent", Action: sendgatev1.StateAction_STATE_ACTION_HOLD, Until: past})
			return err
		}, `until: 2026-11-27T07:59:00Z is in the past`},
		{"release with until", func(ctx context.Context) error {
			_, err := e.admin.SetState(ctx, &sendgatev1.SetStateRequest{SenderIp: ip, Provider: "tencent", Action: sendgatev1.StateAction_STATE_ACTION_RELEASE, Until: future})
			return err
		}, `until: only STATE_ACTION_HOLD takes an end`},
		{"note too long", func(ctx context.Context) error {
			_, err := e.admin.SetState(ctx, &sendgatev1.SetStateRequest{SenderIp: ip, Provider: "tencent", Action: sendgatev1.StateAction_STATE_ACTION_HOLD, Note: long(1025)})
			return err
		}, `note: too long: 1025 bytes, max 1024`},
		{"resolve empty", func(ctx context.Context) error {
			_, err := e.admin.ResolveProvider(ctx, &sendgatev1.ResolveProviderRequest{})
			return err
		}, `domain: empty`},
		{"classify bad code", func(ctx context.Context) error {
			_, err := e.admin.ClassifyReply(ctx, &sendgatev1.ClassifyReplyRequest{ProviderOrDomain: "tencent", SmtpCode: 1000})
			return err
		}, `smtp_code: 1000 is not an SMTP reply code (want 0 for no reply, or 200..599)`},
		{"classify empty provider", func(ctx context.Context) error {
			_, err := e.admin.ClassifyReply(ctx, &sendgatev1.ClassifyReplyRequest{SmtpCode: 250})
			return err
		}, `provider_or_domain: empty`},
		{"empty batch", func(ctx context.Context) error {
			_, err := e.adm.CanSendBatch(ctx, &sendgatev1.CanSendBatchRequest{})
			return err
		}, `requests: empty`},
		{"batch too large", func(ctx context.Context) error {
			reqs := make([]*sendgatev1.CanSendRequest, 1001)
			for i := range reqs {
				reqs[i] = canSendReq(ip, "example.org", 1)
			}
			_, err := e.adm.CanSendBatch(ctx, &sendgatev1.CanSendBatchRequest{Requests: reqs})
			return err
		}, `requests: 1001 items, max 1000`},
		{"empty report batch", func(ctx context.Context) error {
			_, err := e.adm.ReportResultBatch(ctx, &sendgatev1.ReportResultBatchRequest{})
			return err
		}, `results: empty`},
		{"report batch item", func(ctx context.Context) error {
			_, err := e.adm.ReportResultBatch(ctx, &sendgatev1.ReportResultBatchRequest{Results: []*sendgatev1.ReportResultRequest{
				{SenderIp: ip, RecipientDomain: "qq.com", SmtpCode: 250},
				{SenderIp: ip, RecipientDomain: "qq.com", SmtpCode: 1},
			}})
			return err
		}, `results[1].smtp_code: 1 is not an SMTP reply code (want 0 for no reply, or 200..599)`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			err := c.call(context.Background())
			st, _ := status.FromError(err)
			if st.Code() != codes.InvalidArgument {
				t.Fatalf("code %v (%v), want INVALID_ARGUMENT", st.Code(), err)
			}
			if c.msg != "" && st.Message() != c.msg {
				t.Errorf("message\n got %q\nwant %q", st.Message(), c.msg)
			}
			if c.msg == "" && !strings.Contains(st.Message(), ": ") {
				t.Errorf("message %q names no field", st.Message())
			}
		})
	}
}

// TestBatches: order, the index of a bad item, and nothing decided when one
// item is bad.
func TestBatches(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	ctx := context.Background()
	bad := &sendgatev1.CanSendBatchRequest{Requests: []*sendgatev1.CanSendRequest{
		canSendReq(ip, "qq.com", 1), canSendReq(ip, "qq.com", 1), canSendReq(ip, "qq.com", 1), canSendReq("999.1.1.1", "qq.com", 1),
	}}
	_, err := e.adm.CanSendBatch(ctx, bad)
	if st, _ := status.FromError(err); st.Code() != codes.InvalidArgument || st.Message() != `requests[3].sender_ip: not an IP address: "999.1.1.1"` {
		t.Fatalf("bad batch: %v", err)
	}
	overCount := &sendgatev1.CanSendBatchRequest{Requests: []*sendgatev1.CanSendRequest{canSendReq(ip, "qq.com", 1), canSendReq(ip, "qq.com", 5)}}
	_, err = e.adm.CanSendBatch(ctx, overCount)
	if st, _ := status.FromError(err); st.Code() != codes.InvalidArgument || st.Message() != `requests[1].count: 5 exceeds the minute tier's capacity of 3` {
		t.Fatalf("batch with a count above capacity: %v", err)
	}
	// Nothing was taken by the refused batches.
	gs, err := e.admin.GetState(ctx, &sendgatev1.GetStateRequest{SenderIp: ip, RecipientDomainOrProvider: "tencent"})
	if err != nil || tiersOf(gs.GetState().GetTiers()) != "minute:3/3 hour:10/10" {
		t.Fatalf("after refused batches: %v %v", gs, err)
	}
	good := &sendgatev1.CanSendBatchRequest{Requests: []*sendgatev1.CanSendRequest{
		canSendReq(ip, "qq.com", 2), canSendReq(ip, "example.org", 1), canSendReq(ip, "qq.com", 2), canSendReq(ip, "qq.com", 1),
	}}
	r, err := e.adm.CanSendBatch(ctx, good)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, resp := range r.GetResponses() {
		got = append(got, resp.GetProvider()+":"+resp.GetVerdict().String())
	}
	want := "tencent:VERDICT_ALLOW example.org:VERDICT_ALLOW tencent:VERDICT_DEFER tencent:VERDICT_ALLOW"
	if strings.Join(got, " ") != want {
		t.Errorf("batch: %v, want %s", got, want)
	}
	rb, err := e.adm.ReportResultBatch(ctx, &sendgatev1.ReportResultBatchRequest{Results: []*sendgatev1.ReportResultRequest{
		{SenderIp: ip, RecipientDomain: "qq.com", SmtpCode: 250},
		{SenderIp: ip, RecipientDomain: "example.org", SmtpCode: 550, Reply: "550 no such user"},
		{SenderIp: ip, RecipientDomain: "qq.com", Count: 3, Outcome: sendgatev1.Outcome_OUTCOME_NOT_ATTEMPTED},
	}})
	if err != nil {
		t.Fatal(err)
	}
	got = got[:0]
	for _, resp := range rb.GetResponses() {
		got = append(got, resp.GetProvider()+":"+resp.GetClassification().String())
	}
	want = "tencent:CLASSIFICATION_DELIVERED example.org:CLASSIFICATION_RECIPIENT_FAILED tencent:CLASSIFICATION_NOT_ATTEMPTED"
	if strings.Join(got, " ") != want {
		t.Errorf("report batch: %v, want %s", got, want)
	}
	gs, err = e.admin.GetState(ctx, &sendgatev1.GetStateRequest{SenderIp: ip, RecipientDomainOrProvider: "tencent"})
	if err != nil || tiersOf(gs.GetState().GetTiers()) != "minute:3/3 hour:10/10" {
		t.Errorf("after refunding 3: %v %v", gs, err)
	}
}

// failingStore fails every call, as a store whose backend is gone.
type failingStore struct{ limiter.Store }

var errBackend = fmt.Errorf("dial tcp 127.0.0.1:6379: connection refused: %w", limiter.ErrUnavailable)

func (failingStore) Admit(context.Context, limiter.Key, *limiter.Provider, uint32, bool, time.Time) (limiter.Decision, error) {
	return limiter.Decision{}, errBackend
}
func (failingStore) Refund(context.Context, limiter.Key, *limiter.Provider, uint32, time.Time) error {
	return errBackend
}
func (failingStore) Update(context.Context, limiter.Key, func(*limiter.Record) limiter.Change) (limiter.Record, error) {
	return limiter.Record{}, errBackend
}
func (failingStore) Get(context.Context, limiter.Key) (limiter.Record, bool, error) {
	return limiter.Record{}, false, errBackend
}
func (failingStore) List(context.Context, string, int, func(limiter.Key, *limiter.Record) bool) ([]limiter.Entry, string, error) {
	return nil, "", errors.New("scan failed")
}
func (failingStore) Close() error { return nil }

func TestStoreFailureIsUnavailable(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{store: failingStore{}})
	ctx := context.Background()
	calls := map[string]func() error{
		"CanSend": func() error { _, err := e.adm.CanSend(ctx, canSendReq(ip, "qq.com", 1)); return err },
		"ReportResult": func() error {
			_, err := e.adm.ReportResult(ctx, &sendgatev1.ReportResultRequest{SenderIp: ip, RecipientDomain: "qq.com", SmtpCode: 250})
			return err
		},
		"GetState": func() error {
			_, err := e.admin.GetState(ctx, &sendgatev1.GetStateRequest{SenderIp: ip, RecipientDomainOrProvider: "tencent"})
			return err
		},
		"ListStates": func() error { _, err := e.admin.ListStates(ctx, &sendgatev1.ListStatesRequest{}); return err },
		"SetState": func() error {
			_, err := e.admin.SetState(ctx, &sendgatev1.SetStateRequest{SenderIp: ip, Provider: "tencent", Action: sendgatev1.StateAction_STATE_ACTION_RESET})
			return err
		},
	}
	for name, call := range calls {
		if code := status.Code(call()); code != codes.Unavailable {
			t.Errorf("%s: code %v, want UNAVAILABLE", name, code)
		}
	}
}

func TestHealthAndReflection(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	ctx := context.Background()
	conn, err := grpc.NewClient(e.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	hc := healthpb.NewHealthClient(conn)
	for _, svc := range []string{"", "sendgate.v1.AdmissionService", "sendgate.v1.AdminService"} {
		r, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: svc})
		if err != nil || r.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("health %q: %v %v", svc, r, err)
		}
	}
	stream, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, s := range resp.GetListServicesResponse().GetService() {
		names[s.GetName()] = true
	}
	for _, want := range []string{"sendgate.v1.AdmissionService", "sendgate.v1.AdminService", "grpc.health.v1.Health"} {
		if !names[want] {
			t.Errorf("reflection lists %v, missing %s", names, want)
		}
	}
	stream.CloseSend()
}

func TestShutdown(t *testing.T) {
	t.Parallel()
	t.Run("graceful", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, envOptions{})
		ctx := context.Background()
		if _, err := e.adm.CanSend(ctx, canSendReq(ip, "qq.com", 1)); err != nil {
			t.Fatal(err)
		}
		srv := e.srv
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(sctx, e.g); err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
		r, err := srv.Health().Check(ctx, &healthpb.HealthCheckRequest{})
		if err != nil || r.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
			t.Errorf("health after Shutdown: %v %v", r, err)
		}
	})
	t.Run("hard stop at the deadline", func(t *testing.T) {
		t.Parallel()
		entered, release := make(chan struct{}), make(chan struct{})
		block := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			if info.FullMethod == sendgatev1.AdmissionService_CanSend_FullMethodName {
				close(entered)
				select {
				case <-release:
				case <-ctx.Done():
				}
			}
			return h(ctx, req)
		}
		e := newEnv(t, envOptions{grpcOpt: []grpc.ServerOption{grpc.UnaryInterceptor(block)}})
		done := make(chan error, 1)
		go func() {
			_, err := e.adm.CanSend(context.Background(), canSendReq(ip, "qq.com", 1))
			done <- err
		}()
		<-entered
		sctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		err := e.srv.Shutdown(sctx, e.g)
		close(release)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Shutdown with a call in flight: %v, want deadline exceeded", err)
		}
		if err := <-done; status.Code(err) != codes.Unavailable {
			t.Errorf("call in flight at hard stop: %v, want UNAVAILABLE", err)
		}
	})
}
