package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"

	"google.golang.org/grpc"

	"github.com/sendgate/sendgate/internal/resolve"
	"github.com/sendgate/sendgate/internal/telemetry"
	"github.com/sendgate/sendgate/limiter"
)

// serveTelemetry is the observability of one serve run: OpenTelemetry
// traces and metrics (exported as the standard OTEL_* variables ask), the
// Prometheus /metrics endpoint, and the observer that counts and logs the
// server's decisions, reports and transitions.
type serveTelemetry struct {
	tel *telemetry.Telemetry
	obs *telemetry.Observer
	log *slog.Logger
}

// startTelemetry sets up the providers and the observer; known bounds the
// provider label of the metrics to the configured providers.
func startTelemetry(ctx context.Context, log *slog.Logger, known func(string) bool) (*serveTelemetry, error) {
	tel, err := telemetry.Setup(ctx, telemetry.Options{})
	if err != nil {
		return nil, fmt.Errorf("telemetry: %w", err)
	}
	obs, err := telemetry.NewObserver(telemetry.ObserverOptions{Meter: tel.Meter(), Logger: log, Known: known})
	if err != nil {
		return nil, fmt.Errorf("telemetry: %w", err)
	}
	if tel.TracesExported != "" || tel.MetricsExported != "" {
		log.Info("telemetry export", "traces", orNone(tel.TracesExported), "metrics", orNone(tel.MetricsExported))
	}
	return &serveTelemetry{tel: tel, obs: obs, log: log}, nil
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// instrument returns st measured (operation latency and errors).
func (t *serveTelemetry) instrument(st limiter.Store) (limiter.Store, error) {
	return telemetry.InstrumentStore(st, t.tel.Meter())
}

// gauges registers the key counts of lim, the write errors of the opened
// store raw, and the resolver's DNS counters.
func (t *serveTelemetry) gauges(lim *limiter.Limiter, raw limiter.Store, res *resolve.Resolver) error {
	return telemetry.RegisterGauges(t.tel.Meter(), telemetry.GaugeOptions{
		Limiter: lim, Store: raw, DNS: res.Stats, Known: res.IsProvider,
	})
}

// grpcOptions are the otelgrpc stats handler of the gRPC server and its
// latency histogram.
func (t *serveTelemetry) grpcOptions() ([]grpc.ServerOption, error) { return t.tel.ServerOptions() }

// handler serves /metrics, and everything else from next (/healthz, /readyz).
func (t *serveTelemetry) handler(next http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", t.tel.MetricsHandler())
	mux.Handle("/", next)
	return mux
}

// shutdown flushes the exporters within ctx.
func (t *serveTelemetry) shutdown(ctx context.Context) {
	if err := t.tel.Shutdown(ctx); err != nil {
		t.log.Warn("telemetry shutdown", "error", err)
	}
}
