package telemetry

import (
	"context"
	"fmt"
	"log/slog"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/sendgate/sendgate/limiter"
)

// OtherProvider is the provider label of every key whose provider is not a
// configured one (a domain that is its own provider): it keeps the label's
// values bounded by the policy.
const OtherProvider = "other"

// ObserverOptions configure [NewObserver].
type ObserverOptions struct {
	// Meter makes the instruments; required.
	Meter metric.Meter
	// Logger receives one info line per state transition; nil means none.
	Logger *slog.Logger
	// Known reports whether a provider name is configured (the resolver's
	// IsProvider); other names are counted as [OtherProvider]. nil means
	// every name is "other".
	Known func(name string) bool
}

// Observer counts decisions, reports and transitions, and logs each
// transition once. It implements the server's Observer hooks; every method
// is safe for concurrent use and allocates nothing on the ALLOW path once
// its label sets are cached.
type Observer struct {
	decisions   metric.Int64Counter
	reports     metric.Int64Counter
	transitions metric.Int64Counter
	log         *slog.Logger
	known       func(string) bool
	sets        attrCache
}

// NewObserver creates the instruments sendgate_decisions_total,
// sendgate_reports_total and sendgate_transitions_total on opts.Meter.
func NewObserver(opts ObserverOptions) (*Observer, error) {
	o := &Observer{log: opts.Logger, known: opts.Known}
	var err error
	if o.decisions, err = opts.Meter.Int64Counter("sendgate_decisions",
		metric.WithDescription("CanSend decisions by provider, verdict and defer reason (reason is empty for ALLOW)")); err != nil {
		return nil, fmt.Errorf("decisions counter: %w", err)
	}
	if o.reports, err = opts.Meter.Int64Counter("sendgate_reports",
		metric.WithDescription("ReportResult reports by provider and classification")); err != nil {
		return nil, fmt.Errorf("reports counter: %w", err)
	}
	if o.transitions, err = opts.Meter.Int64Counter("sendgate_transitions",
		metric.WithDescription("reputation state transitions by provider, from and to")); err != nil {
		return nil, fmt.Errorf("transitions counter: %w", err)
	}
	return o, nil
}

// provider returns the bounded provider label of name.
func (o *Observer) provider(name string) string {
	if o.known != nil && o.known(name) {
		return name
	}
	return OtherProvider
}

// Decided counts one CanSend decision for key.
func (o *Observer) Decided(ctx context.Context, key limiter.Key, d *limiter.Decision) {
	set := o.sets.get(labelKey{kind: 'd', provider: o.provider(key.Provider), a: uint8(d.Verdict), b: uint8(d.Reason)}, func(k labelKey) attribute.Set {
		return attribute.NewSet(attribute.String("provider", k.provider),
			attribute.String("verdict", limiter.Verdict(k.a).String()),
			attribute.String("reason", limiter.Reason(k.b).String()))
	})
	o.decisions.Add(ctx, 1, metric.WithAttributeSet(set))
}

// Reported counts one report for key and logs and counts the transitions
// it made, with ctx so the lines carry the request's trace.
func (o *Observer) Reported(ctx context.Context, key limiter.Key, r *limiter.Report, out *limiter.Outcome) {
	prov := o.provider(key.Provider)
	set := o.sets.get(labelKey{kind: 'r', provider: prov, a: uint8(r.Class)}, func(k labelKey) attribute.Set {
		return attribute.NewSet(attribute.String("provider", k.provider),
			attribute.String("classification", limiter.Class(k.a).String()))
	})
	o.reports.Add(ctx, 1, metric.WithAttributeSet(set))
	for _, tr := range out.Transitions {
		o.Transitioned(ctx, key, tr)
	}
}

// Transitioned counts and logs one state transition of key: at info, with
// the key, from, to, the rule or note, the actor and the reply.
func (o *Observer) Transitioned(ctx context.Context, key limiter.Key, tr limiter.Transition) {
	set := o.sets.get(labelKey{kind: 't', provider: o.provider(key.Provider), a: uint8(tr.From), b: uint8(tr.To)}, func(k labelKey) attribute.Set {
		return attribute.NewSet(attribute.String("provider", k.provider),
			attribute.String("from", limiter.State(k.a).String()),
			attribute.String("to", limiter.State(k.b).String()))
	})
	o.transitions.Add(ctx, 1, metric.WithAttributeSet(set))
	if o.log != nil {
		o.log.LogAttrs(ctx, slog.LevelInfo, "transition",
			slog.String("ip", key.IP), slog.String("provider", key.Provider),
			slog.String("from", tr.From.String()), slog.String("to", tr.To.String()),
			slog.String("reason", tr.Reason), slog.String("actor", tr.Actor), slog.String("reply", tr.Reply))
	}
}
