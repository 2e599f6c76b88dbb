package server

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/sendgate/sendgate/limiter"
)

// Observer is told of every decision, report and operator transition the
// server makes, with the call's context (for metrics and for logs that carry
// the call's trace). It is satisfied by *telemetry.Observer. Its methods run
// on the hot path: they must be fast, safe for concurrent use, and must not
// keep the pointers they are given.
type Observer interface {
	// Decided is called once per CanSend decision (per item of a batch).
	Decided(ctx context.Context, key limiter.Key, d *limiter.Decision)
	// Reported is called once per applied report, with the transitions of
	// its step in out.Transitions.
	Reported(ctx context.Context, key limiter.Key, r *limiter.Report, out *limiter.Outcome)
	// Transitioned is called for the transition of an operator action.
	Transitioned(ctx context.Context, key limiter.Key, tr limiter.Transition)
}

// The span attributes the handlers set on the call's span (the otelgrpc
// server span) when it is recording.
const (
	AttrSenderIP       = attribute.Key("sendgate.sender_ip")
	AttrProvider       = attribute.Key("sendgate.provider")
	AttrVerdict        = attribute.Key("sendgate.verdict")
	AttrDeferReason    = attribute.Key("sendgate.defer_reason")
	AttrState          = attribute.Key("sendgate.state")
	AttrClassification = attribute.Key("sendgate.classification")
	AttrRule           = attribute.Key("sendgate.rule")
	AttrStateChanged   = attribute.Key("sendgate.state_changed")
	AttrBatchSize      = attribute.Key("sendgate.batch_size")
	AttrDeferred       = attribute.Key("sendgate.deferred")
)

// decided annotates the span of a single CanSend and tells the observer.
// Nothing is built when the span is not recording.
func (s *Server) decided(ctx context.Context, key limiter.Key, d *limiter.Decision) {
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		span.SetAttributes(
			AttrSenderIP.String(key.IP),
			AttrProvider.String(key.Provider),
			AttrVerdict.String(d.Verdict.String()),
			AttrState.String(d.State.String()),
		)
		if d.Verdict == limiter.Defer {
			span.SetAttributes(AttrDeferReason.String(d.Reason.String()))
		}
	}
	if s.obs != nil {
		s.obs.Decided(ctx, key, d)
	}
}

// decidedBatch annotates the span of a CanSendBatch with its size and how
// many items were deferred, and tells the observer of each decision.
func (s *Server) decidedBatch(ctx context.Context, items []limiter.AdmitItem, ds []limiter.Decision) {
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		deferred := 0
		for i := range ds {
			if ds[i].Verdict == limiter.Defer {
				deferred++
			}
		}
		span.SetAttributes(AttrBatchSize.Int(len(ds)), AttrDeferred.Int(deferred))
	}
	if s.obs != nil {
		for i := range ds {
			s.obs.Decided(ctx, items[i].Key, &ds[i])
		}
	}
}

// reported annotates the span of a ReportResult (the last report, in a
// batch) and tells the observer.
func (s *Server) reported(ctx context.Context, key limiter.Key, r *limiter.Report, out *limiter.Outcome) {
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		span.SetAttributes(
			AttrSenderIP.String(key.IP),
			AttrProvider.String(key.Provider),
			AttrClassification.String(r.Class.String()),
			AttrRule.String(r.Rule),
			AttrState.String(out.State.String()),
			AttrStateChanged.Bool(out.Changed),
		)
	}
	if s.obs != nil {
		s.obs.Reported(ctx, key, r, out)
	}
}

// operated annotates the span of a SetState and tells the observer of the
// action's transition (the newest of the key's history).
func (s *Server) operated(ctx context.Context, key limiter.Key, v *limiter.KeyView) {
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		span.SetAttributes(AttrSenderIP.String(key.IP), AttrProvider.String(key.Provider), AttrState.String(v.State.String()))
	}
	if s.obs != nil && len(v.History) > 0 {
		s.obs.Transitioned(ctx, key, v.History[0])
	}
}
