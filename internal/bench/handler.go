package bench

import (
	"context"
	"sync"
	"time"

	"google.golang.org/grpc"
)

// handlerTimes records, in an in-process server, how long each call spends
// in its handler: from the moment grpc-go hands the decoded request to the
// service until the service returns. What a caller measures beyond that is
// the transport, the runtime's scheduling and the machine.
type handlerTimes struct {
	mu    sync.Mutex
	hists map[string]*Histogram // full method name -> durations
}

func newHandlerTimes() *handlerTimes {
	return &handlerTimes{hists: make(map[string]*Histogram)}
}

// intercept is a unary server interceptor that records handler times.
func (h *handlerTimes) intercept(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	t0 := time.Now()
	resp, err := handler(ctx, req)
	d := time.Since(t0)
	h.mu.Lock()
	hist := h.hists[info.FullMethod]
	if hist == nil {
		hist = new(Histogram)
		h.hists[info.FullMethod] = hist
	}
	hist.Record(d)
	h.mu.Unlock()
	return resp, err
}

// reset forgets every recorded time: a run's measurement starts.
func (h *handlerTimes) reset() {
	h.mu.Lock()
	clear(h.hists)
	h.mu.Unlock()
}

// quantiles returns the median and the 99th percentile of rpc's handler
// times since the last reset (zeros when none were recorded).
func (h *handlerTimes) quantiles(rpc RPC) (p50, p99 Seconds) {
	h.mu.Lock()
	defer h.mu.Unlock()
	hist := h.hists[fullMethod(rpc)]
	if hist == nil || hist.Count() == 0 {
		return 0, 0
	}
	return Seconds(hist.Quantile(0.5)), Seconds(hist.Quantile(0.99))
}

// fullMethod returns the gRPC method rpc calls.
func fullMethod(rpc RPC) string {
	switch rpc {
	case Health:
		return "/grpc.health.v1.Health/Check"
	case CanSend:
		return "/sendgate.v1.AdmissionService/CanSend"
	case CanSendBatch:
		return "/sendgate.v1.AdmissionService/CanSendBatch"
	case Report:
		return "/sendgate.v1.AdmissionService/ReportResult"
	}
	return ""
}
