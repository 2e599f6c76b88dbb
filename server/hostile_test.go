package server_test

import (
	"context"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	sendgatev1 "github.com/sendgate/sendgate/proto/sendgate/v1"
	"github.com/sendgate/sendgate/server"
)

// rawCodec sends and receives bytes as they are, to put arbitrary bytes on
// the wire in place of a request.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return *(v.(*[]byte)), nil }
func (rawCodec) Unmarshal(data []byte, v any) error {
	*(v.(*[]byte)) = append([]byte(nil), data...)
	return nil
}
func (rawCodec) Name() string { return "proto" }

// hostile makes requests that are each invalid in at least one field, so
// that none may change state.
type hostile struct{ r *rand.Rand }

// junk is a string of random bytes, sometimes huge, sometimes near-valid.
func (h hostile) junk() string {
	switch h.r.IntN(6) {
	case 0:
		return ""
	case 1:
		return strings.Repeat("a", 300+h.r.IntN(70_000))
	case 2:
		return "1.2.3.4\x00" // a NUL after a valid IP
	case 3:
		return "user@@" + strings.Repeat("é", h.r.IntN(200))
	}
	// Random bytes; a proto3 string must be UTF-8 for the client to send
	// it at all (rawCall sends the rest).
	b := make([]byte, h.r.IntN(80))
	for i := range b {
		b[i] = byte(h.r.UintN(256))
	}
	return strings.ToValidUTF8(string(b), "\uFFFD")
}

// badIP is never a valid sender IP.
func (h hostile) badIP() string { return "x" + h.junk() }

func (h hostile) anyIP() string {
	if h.r.IntN(2) == 0 {
		return "203.0.113.7"
	}
	return h.junk()
}

func (h hostile) ts() *timestamppb.Timestamp {
	switch h.r.IntN(3) {
	case 0:
		return nil
	case 1:
		return &timestamppb.Timestamp{Seconds: h.r.Int64(), Nanos: h.r.Int32()}
	}
	return timestamppb.New(t0.Add(time.Duration(h.r.Int64N(int64(48*time.Hour))) - 24*time.Hour))
}

func (h hostile) canSend() *sendgatev1.CanSendRequest {
	r := &sendgatev1.CanSendRequest{SenderIp: h.anyIP(), RecipientDomain: h.junk(), Count: h.r.Uint32(), DryRun: h.r.IntN(2) == 0}
	switch h.r.IntN(2) {
	case 0:
		r.SenderIp = h.badIP()
	case 1: // a valid key with a count above every tier
		r.SenderIp, r.RecipientDomain, r.Count = "203.0.113.7", "qq.com", 1000+h.r.Uint32N(1<<31)
	}
	return r
}

func (h hostile) report() *sendgatev1.ReportResultRequest {
	r := &sendgatev1.ReportResultRequest{
		SenderIp: h.anyIP(), RecipientDomain: h.junk(), SmtpCode: h.r.Uint32(), EnhancedCode: h.junk(), Reply: h.junk(),
		Count: h.r.Uint32(), AttemptedAt: h.ts(), Outcome: sendgatev1.Outcome(h.r.Int32()),
	}
	switch h.r.IntN(4) {
	case 0:
		r.SenderIp = h.badIP()
	case 1: // everything valid but an unknown outcome
		r.SenderIp, r.RecipientDomain, r.SmtpCode, r.EnhancedCode, r.Reply, r.AttemptedAt = "203.0.113.7", "qq.com", 550, "", "blocked", nil
		r.Outcome = sendgatev1.Outcome(2 + h.r.Int32N(1<<30))
	case 2: // a reply code out of range
		r.SenderIp, r.RecipientDomain, r.SmtpCode = "203.0.113.7", "qq.com", 600+h.r.Uint32N(1<<31)
	case 3: // an attempt in the future
		r.SenderIp, r.RecipientDomain, r.SmtpCode, r.Outcome = "203.0.113.7", "qq.com", 550, 0
		r.AttemptedAt = timestamppb.New(t0.Add(time.Hour + time.Duration(h.r.Int64N(int64(1000*time.Hour)))))
	}
	return r
}

func (h hostile) validCanSend() *sendgatev1.CanSendRequest {
	return &sendgatev1.CanSendRequest{SenderIp: "203.0.113.7", RecipientDomain: "qq.com"}
}

func (h hostile) validReport() *sendgatev1.ReportResultRequest {
	return &sendgatev1.ReportResultRequest{SenderIp: "203.0.113.7", RecipientDomain: "qq.com", SmtpCode: 550, Reply: "Ip frequency limited"}
}

// call makes one hostile call of a random kind and returns its error.
func (h hostile) call(ctx context.Context, conn *grpc.ClientConn) error {
	adm, admin := sendgatev1.NewAdmissionServiceClient(conn), sendgatev1.NewAdminServiceClient(conn)
	var err error
	switch h.r.IntN(11) {
	case 0:
		_, err = adm.CanSend(ctx, h.canSend())
	case 1: // valid items and one invalid one, or too many, or none
		n := h.r.IntN(50)
		if h.r.IntN(5) == 0 {
			n = server.MaxBatch + 1 + h.r.IntN(100)
		}
		reqs := make([]*sendgatev1.CanSendRequest, n)
		for i := range reqs {
			reqs[i] = h.validCanSend()
		}
		if n > 0 && n <= server.MaxBatch {
			reqs[h.r.IntN(n)] = h.canSend()
		}
		_, err = adm.CanSendBatch(ctx, &sendgatev1.CanSendBatchRequest{Requests: reqs})
	case 2:
		_, err = adm.ReportResult(ctx, h.report())
	case 3:
		n := h.r.IntN(50)
		if h.r.IntN(5) == 0 {
			n = server.MaxBatch + 1 + h.r.IntN(100)
		}
		rs := make([]*sendgatev1.ReportResultRequest, n)
		for i := range rs {
			rs[i] = h.validReport()
		}
		if n > 0 && n <= server.MaxBatch {
			rs[h.r.IntN(n)] = h.report()
		}
		_, err = adm.ReportResultBatch(ctx, &sendgatev1.ReportResultBatchRequest{Results: rs})
	case 4:
		_, err = admin.SetState(ctx, &sendgatev1.SetStateRequest{
			SenderIp: h.badIP(), Provider: h.junk(), Action: sendgatev1.StateAction(h.r.Int32()), Until: h.ts(), Note: h.junk(),
		})
	case 5: // a valid key with an unknown action, or a note too long, or an end in the past
		r := &sendgatev1.SetStateRequest{SenderIp: "203.0.113.7", Provider: "tencent", Action: sendgatev1.StateAction(4 + h.r.Int32N(1<<30))}
		switch h.r.IntN(3) {
		case 1:
			r.Action, r.Note = sendgatev1.StateAction_STATE_ACTION_RESET, strings.Repeat("n", server.MaxNote+1+h.r.IntN(1000))
		case 2:
			r.Action, r.Until = sendgatev1.StateAction_STATE_ACTION_HOLD, timestamppb.New(t0.Add(-time.Duration(1+h.r.Int64N(int64(time.Hour)))))
		}
		_, err = admin.SetState(ctx, r)
	case 6:
		_, err = admin.ListStates(ctx, &sendgatev1.ListStatesRequest{
			Provider: h.junk(), SenderIp: h.junk(), State: sendgatev1.ReputationState(h.r.Int32()), PageSize: h.r.Int32(), PageToken: h.junk(),
		})
	case 7:
		_, err = admin.GetState(ctx, &sendgatev1.GetStateRequest{SenderIp: h.junk(), RecipientDomainOrProvider: h.junk()})
	case 8:
		_, err = admin.ClassifyReply(ctx, &sendgatev1.ClassifyReplyRequest{ProviderOrDomain: h.junk(), SmtpCode: h.r.Uint32(), EnhancedCode: h.junk(), Reply: h.junk()})
	case 9: // raw bytes, not necessarily a protobuf message, to any method
		methods := []string{
			sendgatev1.AdmissionService_CanSend_FullMethodName, sendgatev1.AdmissionService_CanSendBatch_FullMethodName,
			sendgatev1.AdmissionService_ReportResult_FullMethodName, sendgatev1.AdmissionService_ReportResultBatch_FullMethodName,
			sendgatev1.AdminService_SetState_FullMethodName, sendgatev1.AdminService_ListStates_FullMethodName,
		}
		in := make([]byte, h.r.IntN(2000))
		for i := range in {
			in[i] = byte(h.r.UintN(256))
		}
		var out []byte
		err = conn.Invoke(ctx, methods[h.r.IntN(len(methods))], &in, &out, grpc.ForceCodec(rawCodec{}))
	case 10: // well-formed protobuf with invalid UTF-8 or a wrong wire type in a known field
		var in []byte
		if h.r.IntN(2) == 0 {
			in = protowire.AppendTag(in, 1, protowire.BytesType)
			in = protowire.AppendString(in, "203.0.113.7\xff\xfe")
		} else {
			in = protowire.AppendTag(in, 1, protowire.VarintType)
			in = protowire.AppendVarint(in, h.r.Uint64())
		}
		in = protowire.AppendTag(in, 2, protowire.BytesType)
		in = protowire.AppendString(in, "qq.com")
		var out []byte
		err = conn.Invoke(ctx, sendgatev1.AdmissionService_ReportResult_FullMethodName, &in, &out, grpc.ForceCodec(rawCodec{}))
	}
	return err
}

// snapshot is everything a client can see of the state.
func snapshot(t *testing.T, e *env) []proto.Message {
	t.Helper()
	ctx := context.Background()
	var out []proto.Message
	g, err := e.admin.GetState(ctx, &sendgatev1.GetStateRequest{SenderIp: "203.0.113.7", RecipientDomainOrProvider: "tencent"})
	if err != nil {
		t.Fatal(err)
	}
	out = append(out, g)
	for st := range int32(len(sendgatev1.ReputationState_name)) {
		l, err := e.admin.ListStates(ctx, &sendgatev1.ListStatesRequest{State: sendgatev1.ReputationState(st), PageSize: server.MaxPageSize})
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, l)
	}
	return out
}

// TestHostileInput sends thousands of malformed and random requests to a
// real server over loopback with the production transport limits, then
// checks that every one was refused with INVALID_ARGUMENT (or, for bytes
// that are no protobuf message at all, grpc-go's INTERNAL "error
// unmarshalling request"), that the server is healthy and that no state
// changed.
func TestHostileInput(t *testing.T) {
	if testing.Short() {
		t.Skip("thousands of calls")
	}
	t.Parallel()
	e := newEnv(t, envOptions{grpcOpt: server.GRPCOptions()})
	ctx := context.Background()
	// Known state: one key held, one blocked by a report.
	if _, err := e.admin.SetState(ctx, &sendgatev1.SetStateRequest{SenderIp: "203.0.113.7", Provider: "tencent", Action: sendgatev1.StateAction_STATE_ACTION_HOLD, Note: "known"}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.adm.ReportResult(ctx, &sendgatev1.ReportResultRequest{SenderIp: "198.51.100.1", RecipientDomain: "qq.com", SmtpCode: 550, Reply: "Ip frequency limited"}); err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, e)

	conn, err := grpc.NewClient(e.addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(64<<20)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	const workers, perWorker = 8, 500
	var mu sync.Mutex
	counts := map[codes.Code]int{}
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h := hostile{r: rand.New(rand.NewPCG(uint64(w), 42))}
			for range perWorker {
				cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				err := h.call(cctx, conn)
				cancel()
				st := status.Convert(err)
				ok := st.Code() == codes.InvalidArgument ||
					(st.Code() == codes.Internal && strings.Contains(st.Message(), "unmarshal")) ||
					(st.Code() == codes.ResourceExhausted && strings.Contains(st.Message(), "larger than max"))
				// Read-only calls with random input may succeed.
				if st.Code() == codes.OK {
					ok = true
				}
				mu.Lock()
				counts[st.Code()]++
				mu.Unlock()
				if !ok {
					t.Errorf("unexpected %v", err)
				}
			}
		}()
	}
	wg.Wait()
	t.Logf("%d hostile calls: %v", workers*perWorker, counts)
	if counts[codes.InvalidArgument] < workers*perWorker/2 {
		t.Errorf("only %d INVALID_ARGUMENT of %d calls", counts[codes.InvalidArgument], workers*perWorker)
	}

	hc, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil || hc.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health after the run: %v, %v", hc, err)
	}
	after := snapshot(t, e)
	for i := range before {
		if !proto.Equal(before[i], after[i]) {
			t.Errorf("state changed:\nbefore %v\nafter  %v", before[i], after[i])
		}
	}
}

// TestMaxBatchFits checks that the largest valid batch fits MaxRecvMsgSize,
// and that the server reads it (and refuses its content, not its size).
func TestMaxBatchFits(t *testing.T) {
	t.Parallel()
	item := &sendgatev1.ReportResultRequest{
		SenderIp:        strings.Repeat("1", 64), // normalize.MaxIPLen
		RecipientDomain: strings.Repeat("d", server.MaxDomainInput),
		SmtpCode:        599,
		EnhancedCode:    strings.Repeat("5", server.MaxEnhanced),
		Reply:           strings.Repeat("r", server.MaxReply),
		Count:           1<<32 - 1,
		AttemptedAt:     &timestamppb.Timestamp{Seconds: 253402300799, Nanos: 999999999},
		Outcome:         sendgatev1.Outcome_OUTCOME_NOT_ATTEMPTED,
	}
	batch := &sendgatev1.ReportResultBatchRequest{Results: make([]*sendgatev1.ReportResultRequest, server.MaxBatch)}
	for i := range batch.Results {
		batch.Results[i] = item
	}
	size := proto.Size(batch)
	t.Logf("largest ReportResultBatch: %d bytes (%d a result), limit %d", size, size/server.MaxBatch, server.MaxRecvMsgSize)
	if size > server.MaxRecvMsgSize {
		t.Fatalf("largest batch %d bytes > MaxRecvMsgSize %d", size, server.MaxRecvMsgSize)
	}
	e := newEnv(t, envOptions{grpcOpt: server.GRPCOptions()})
	_, err := e.adm.ReportResultBatch(context.Background(), batch)
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("largest batch: %v, want INVALID_ARGUMENT for its content", err)
	}
	batch.Results = append(batch.Results, batch.Results[:server.MaxBatch/2]...)
	_, err = e.adm.ReportResultBatch(context.Background(), batch)
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("oversized message: %v, want RESOURCE_EXHAUSTED", err)
	}
}
