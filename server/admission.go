package server

import (
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/sendgate/sendgate/limiter"
	sendgatev1 "github.com/sendgate/sendgate/proto/sendgate/v1"
)

// CanSend answers whether sender_ip may start a delivery to
// recipient_domain now: normalise, resolve the provider, check the count
// against the provider's tiers, then one atomic admission step in the store.
// A DEFER is a normal response with retry_after > 0. This is the hot path:
// an ALLOW allocates only its response (see canSendResponse).
func (s *Server) CanSend(ctx context.Context, r *sendgatev1.CanSendRequest) (*sendgatev1.CanSendResponse, error) {
	now := s.now()
	a, err := s.checkCanSend(ctx, r, s.lim.Policy())
	if err != nil {
		return nil, s.toStatus(ctx, err, "count")
	}
	resp, err := s.canSend(ctx, a, now)
	if err != nil {
		return nil, s.toStatus(ctx, err, "count")
	}
	return resp, nil
}

// CanSendBatch validates every item, then decides them in order. One
// invalid item fails the whole batch and nothing is decided.
func (s *Server) CanSendBatch(ctx context.Context, r *sendgatev1.CanSendBatchRequest) (*sendgatev1.CanSendBatchResponse, error) {
	now := s.now()
	reqs := r.GetRequests()
	if err := checkBatch("requests", len(reqs)); err != nil {
		return nil, s.toStatus(ctx, err, "")
	}
	pol := s.lim.Policy()
	args := make([]canSendArgs, len(reqs))
	for i, req := range reqs {
		a, err := s.checkCanSend(ctx, req, pol)
		if err != nil {
			return nil, s.toStatus(ctx, item(err, "requests", i), "")
		}
		args[i] = a
	}
	items := make([]limiter.AdmitItem, len(args))
	for i, a := range args {
		items[i] = limiter.AdmitItem{Key: a.key, Count: a.count, DryRun: a.dryRun, Now: now}
	}
	// One call for the whole batch: a store that pipelines (Redis) makes one
	// round trip per shard instead of one per item.
	ds, err := s.lim.CheckBatch(ctx, items)
	if err != nil {
		field := ""
		var ie *limiter.ItemError
		if errors.As(err, &ie) {
			field = "requests[" + strconv.Itoa(ie.Index) + "].count"
		}
		return nil, s.toStatus(ctx, err, field)
	}
	s.decidedBatch(ctx, items, ds)
	out := &sendgatev1.CanSendBatchResponse{Responses: make([]*sendgatev1.CanSendResponse, len(args))}
	boxes := make([]canSendBox, len(args)) // one allocation for every response
	for i, a := range args {
		d := &ds[i]
		var why string
		if d.Verdict == limiter.Defer && (d.Reason == limiter.ReasonBlocked || d.Reason == limiter.ReasonHeld) {
			why = s.stateReason(ctx, a.key, now)
		}
		out.Responses[i] = fillCanSendResponse(&boxes[i], d, a.key.Provider, a.count, why)
	}
	return out, nil
}

// canSend runs one validated check.
func (s *Server) canSend(ctx context.Context, a canSendArgs, now time.Time) (*sendgatev1.CanSendResponse, error) {
	d, err := s.lim.Check(ctx, a.key, a.count, a.dryRun, now)
	if err != nil {
		return nil, err
	}
	s.decided(ctx, a.key, &d)
	var why string
	if d.Verdict == limiter.Defer && (d.Reason == limiter.ReasonBlocked || d.Reason == limiter.ReasonHeld) {
		why = s.stateReason(ctx, a.key, now)
	}
	return canSendResponse(&d, a.key.Provider, a.count, why), nil
}

// stateReason returns the rule or note behind a key's state, for the detail
// of a BLOCKED or HELD deferral. The decision does not carry it, so this
// reads the key once more; deferred mailers ask rarely (the Go client
// remembers a DEFER until its retry_after), so the hot ALLOW path never pays
// for it. A failure only shortens the sentence.
func (s *Server) stateReason(ctx context.Context, key limiter.Key, now time.Time) string {
	v, err := s.lim.Get(ctx, key, now)
	if err != nil {
		return ""
	}
	return v.Reason
}

// ReportResult classifies the reply (enhanced_code parsed from the reply
// when empty) and applies it to the key: the state machine for negative
// classes, recovery for DELIVERED, and a refund of the tokens CanSend took
// for OUTCOME_NOT_ATTEMPTED.
func (s *Server) ReportResult(ctx context.Context, r *sendgatev1.ReportResultRequest) (*sendgatev1.ReportResultResponse, error) {
	now := s.now()
	a, err := s.checkReport(ctx, r, now)
	if err != nil {
		return nil, s.toStatus(ctx, err, "count")
	}
	resp, err := s.report(ctx, a, now)
	if err != nil {
		return nil, s.toStatus(ctx, err, "count")
	}
	return resp, nil
}

// ReportResultBatch validates every report, then applies them in order.
// One invalid report fails the whole batch and nothing is applied.
func (s *Server) ReportResultBatch(ctx context.Context, r *sendgatev1.ReportResultBatchRequest) (*sendgatev1.ReportResultBatchResponse, error) {
	now := s.now()
	reqs := r.GetResults()
	if err := checkBatch("results", len(reqs)); err != nil {
		return nil, s.toStatus(ctx, err, "")
	}
	args := make([]reportArgs, len(reqs))
	for i, req := range reqs {
		a, err := s.checkReport(ctx, req, now)
		if err != nil {
			return nil, s.toStatus(ctx, item(err, "results", i), "")
		}
		args[i] = a
	}
	out := &sendgatev1.ReportResultBatchResponse{Responses: make([]*sendgatev1.ReportResultResponse, len(args))}
	for i, a := range args {
		resp, err := s.report(ctx, a, now)
		if err != nil {
			return nil, s.toStatus(ctx, err, "results["+strconv.Itoa(i)+"].count")
		}
		out.Responses[i] = resp
	}
	return out, nil
}

// report applies one validated report.
func (s *Server) report(ctx context.Context, a reportArgs, now time.Time) (*sendgatev1.ReportResultResponse, error) {
	rep := limiter.Report{Class: limiter.NotAttempted, Reply: a.reply, Count: a.count, AttemptedAt: a.attemptedAt}
	if !a.notAttempted {
		res := s.classify.Classify(a.key.Provider, a.code, a.enhanced, a.reply)
		rep.Class, rep.Rule, rep.Trigger, rep.Override = res.Class, res.Rule, res.Trigger, res.Override
		if rep.Class == limiter.ClassUnspecified {
			// A classifier always decides; be safe if one does not.
			rep.Class = limiter.Transient
		}
	}
	out, err := s.lim.Report(ctx, a.key, rep, now)
	if err != nil {
		return nil, err
	}
	s.reported(ctx, a.key, &rep, &out)
	return reportResponse(rep.Class, rep.Rule, a.key.Provider, &out), nil
}
