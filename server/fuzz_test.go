package server_test

import (
	"context"
	"strings"
	"testing"
	"unicode/utf8"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sendgate/sendgate/internal/normalize"
	sendgatev1 "github.com/sendgate/sendgate/proto/sendgate/v1"
)

// checkRefusal fails unless err is nil or INVALID_ARGUMENT naming a field
// ("field: reason").
func checkRefusal(t *testing.T, err error) {
	t.Helper()
	if err == nil {
		return
	}
	st := status.Convert(err)
	if st.Code() != codes.InvalidArgument {
		t.Fatalf("got %v, want OK or INVALID_ARGUMENT", err)
	}
	if field, _, ok := strings.Cut(st.Message(), ": "); !ok || field == "" || strings.ContainsAny(field, " \n") {
		t.Fatalf("INVALID_ARGUMENT %q does not start with a field name", st.Message())
	}
}

// FuzzValidateCanSend calls CanSend (dry run) with random fields: it never
// panics, and either refuses with INVALID_ARGUMENT naming the field or
// answers for the normalised key.
func FuzzValidateCanSend(f *testing.F) {
	f.Add("203.0.113.7", "qq.com", uint32(1))
	f.Add(" ::FFFF:203.0.113.7 ", "User@QQ.com.", uint32(0))
	f.Add("999.1.1.1", "bücher.de", uint32(4))
	f.Add("fe80::1%eth0", "a..b", uint32(1<<31))
	e := newEnv(f, envOptions{})
	f.Fuzz(func(t *testing.T, ip, domain string, count uint32) {
		if !utf8.ValidString(ip) || !utf8.ValidString(domain) {
			return // not sendable as proto3 strings
		}
		resp, err := e.srv.CanSend(context.Background(), &sendgatev1.CanSendRequest{SenderIp: ip, RecipientDomain: domain, Count: count, DryRun: true})
		checkRefusal(t, err)
		if err != nil {
			return
		}
		if _, ierr := normalize.IP(ip); ierr != nil {
			t.Fatalf("accepted sender_ip %q: %v", ip, ierr)
		}
		if _, derr := normalize.Domain(domain); derr != nil {
			t.Fatalf("accepted recipient_domain %q: %v", domain, derr)
		}
		if resp.GetProvider() == "" || resp.GetVerdict() == sendgatev1.Verdict_VERDICT_UNSPECIFIED {
			t.Fatalf("accepted but answered %v", resp)
		}
	})
}

// FuzzValidateReport calls ReportResult with random fields: it never
// panics, and either refuses with INVALID_ARGUMENT naming the field or
// classifies the report.
func FuzzValidateReport(f *testing.F) {
	f.Add("203.0.113.7", "qq.com", uint32(550), "5.7.1", "Ip frequency limited", uint32(1), int64(0), int32(0), int32(0))
	f.Add("203.0.113.7", "qq.com", uint32(0), "", "", uint32(0), int64(1795766400), int32(0), int32(1))
	f.Add("x", "", uint32(700), "9.9.9.9.9.9.9.9.9", "", uint32(0), int64(-1<<62), int32(-1), int32(7))
	e := newEnv(f, envOptions{})
	f.Fuzz(func(t *testing.T, ip, domain string, code uint32, enhanced, reply string, count uint32, secs int64, nanos, outcome int32) {
		for _, s := range []string{ip, domain, enhanced, reply} {
			if !utf8.ValidString(s) {
				return
			}
		}
		r := &sendgatev1.ReportResultRequest{
			SenderIp: ip, RecipientDomain: domain, SmtpCode: code, EnhancedCode: enhanced, Reply: reply,
			Count: count, Outcome: sendgatev1.Outcome(outcome),
		}
		if secs != 0 || nanos != 0 {
			r.AttemptedAt = &timestamppb.Timestamp{Seconds: secs, Nanos: nanos}
		}
		resp, err := e.srv.ReportResult(context.Background(), r)
		checkRefusal(t, err)
		if err != nil {
			return
		}
		if code != 0 && (code < 200 || code > 599) {
			t.Fatalf("accepted smtp_code %d", code)
		}
		if outcome != 0 && outcome != int32(sendgatev1.Outcome_OUTCOME_NOT_ATTEMPTED) {
			t.Fatalf("accepted outcome %d", outcome)
		}
		if resp.GetClassification() == sendgatev1.Classification_CLASSIFICATION_UNSPECIFIED {
			t.Fatalf("accepted but not classified: %v", resp)
		}
	})
}
