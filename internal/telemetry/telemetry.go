// Package telemetry wires sendgate's OpenTelemetry traces and metrics, its
// Prometheus /metrics endpoint and its structured logs.
//
// Export is configured only by the standard OpenTelemetry environment
// variables; sendgate adds none of its own:
//
//	OTEL_SDK_DISABLED=true                    no exporter at all (/metrics still serves)
//	OTEL_EXPORTER_OTLP_ENDPOINT               traces and metrics go there over OTLP
//	OTEL_EXPORTER_OTLP_TRACES_ENDPOINT        traces only (…_METRICS_ENDPOINT: metrics only)
//	OTEL_EXPORTER_OTLP_PROTOCOL               grpc or http/protobuf (the default); …_TRACES_/…_METRICS_PROTOCOL per signal
//	OTEL_TRACES_EXPORTER, OTEL_METRICS_EXPORTER  otlp (the default when an endpoint is set) or none
//	OTEL_TRACES_SAMPLER(_ARG)                 the SDK's samplers; the default is parentbased_always_on
//	OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES  the resource (service.name defaults to "sendgate")
//
// plus everything the OTLP exporters and the SDK read themselves (headers,
// timeouts, TLS, OTEL_BSP_*, OTEL_METRIC_EXPORT_INTERVAL ...). When no
// endpoint is set, no exporter runs and the tracer provider is a no-op: a
// request then costs the propagation of the caller's trace context (so log
// lines still carry the caller's trace id) and nothing else.
//
// Metrics are always kept, in an OpenTelemetry MeterProvider that the
// Prometheus handler ([Telemetry.MetricsHandler]) reads on every scrape and
// that pushes over OTLP as well when that is configured.
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	otelruntime "go.opentelemetry.io/contrib/instrumentation/runtime"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetricgrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetrichttp"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// DefaultServiceName is service.name when OTEL_SERVICE_NAME (or
// OTEL_RESOURCE_ATTRIBUTES) does not set it.
const DefaultServiceName = "sendgate"

// Options configure [Setup].
type Options struct {
	// ServiceName is service.name unless the environment sets it; "" means
	// [DefaultServiceName].
	ServiceName string
	// Version is service.version; "" leaves it out.
	Version string
	// Getenv reads the environment; nil means os.Getenv. It decides only
	// which exporters run: the exporters themselves read the process
	// environment for their endpoint, headers and so on.
	Getenv func(string) string
}

// Telemetry holds the providers of one process. Build it with [Setup] and
// call Shutdown at exit to flush what the exporters hold. Its methods are
// safe for concurrent use.
type Telemetry struct {
	// TracerProvider makes the server's spans: the SDK's when traces are
	// exported, a no-op otherwise.
	TracerProvider trace.TracerProvider
	// MeterProvider keeps every metric; /metrics reads it.
	MeterProvider metric.MeterProvider
	// Propagator reads and writes W3C trace context and baggage.
	Propagator propagation.TextMapPropagator

	// TracesExported and MetricsExported report which OTLP exporters run,
	// as "grpc" or "http/protobuf" ("" for none).
	TracesExported, MetricsExported string

	registry *prometheus.Registry
	closers  []func(context.Context) error
}

// Propagator returns the W3C tracecontext and baggage propagator sendgate
// uses on both ends.
func Propagator() propagation.TextMapPropagator {
	return propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
}

// Setup builds the tracer and meter providers the environment asks for (see
// the package documentation), the Prometheus registry behind
// [Telemetry.MetricsHandler], and runtime and process metrics. It fails on
// a variable with a value it does not know, naming the variable.
func Setup(ctx context.Context, opts Options) (*Telemetry, error) {
	getenv := opts.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	res, err := newResource(ctx, opts)
	if err != nil {
		return nil, err
	}
	t := &Telemetry{Propagator: Propagator(), registry: prometheus.NewRegistry()}

	traceProto, err := exporterProtocol(getenv, "TRACES")
	if err != nil {
		return nil, err
	}
	metricProto, err := exporterProtocol(getenv, "METRICS")
	if err != nil {
		return nil, err
	}

	t.TracerProvider = noop.NewTracerProvider()
	if traceProto != "" {
		var exp sdktrace.SpanExporter
		if traceProto == "grpc" {
			exp, err = otlptracegrpc.New(ctx)
		} else {
			exp, err = otlptracehttp.New(ctx)
		}
		if err != nil {
			return nil, fmt.Errorf("otlp trace exporter: %w", err)
		}
		// The sampler comes from OTEL_TRACES_SAMPLER, read by the SDK.
		tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
		t.TracerProvider = tp
		t.TracesExported = traceProto
		t.closers = append(t.closers, tp.Shutdown)
	}

	prom, err := otelprom.New(otelprom.WithRegisterer(t.registry), otelprom.WithoutScopeInfo())
	if err != nil {
		return nil, fmt.Errorf("prometheus exporter: %w", err)
	}
	mopts := []sdkmetric.Option{sdkmetric.WithResource(res), sdkmetric.WithReader(prom)}
	if metricProto != "" {
		var exp sdkmetric.Exporter
		if metricProto == "grpc" {
			exp, err = otlpmetricgrpc.New(ctx)
		} else {
			exp, err = otlpmetrichttp.New(ctx)
		}
		if err != nil {
			return nil, fmt.Errorf("otlp metric exporter: %w", err)
		}
		// The interval comes from OTEL_METRIC_EXPORT_INTERVAL, read by the SDK.
		mopts = append(mopts, sdkmetric.WithReader(sdkmetric.NewPeriodicReader(exp)))
		t.MetricsExported = metricProto
	}
	mp := sdkmetric.NewMeterProvider(mopts...)
	t.MeterProvider = mp
	t.closers = append(t.closers, mp.Shutdown)

	if err := otelruntime.Start(otelruntime.WithMeterProvider(mp)); err != nil {
		return nil, fmt.Errorf("runtime metrics: %w", err)
	}
	if err := t.registry.Register(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})); err != nil {
		return nil, fmt.Errorf("process metrics: %w", err)
	}
	return t, nil
}

// newResource describes the process: service.name and service.version,
// overridden by OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES.
func newResource(ctx context.Context, opts Options) (*resource.Resource, error) {
	name := opts.ServiceName
	if name == "" {
		name = DefaultServiceName
	}
	attrs := []attribute.KeyValue{attribute.String("service.name", name)}
	if opts.Version != "" {
		attrs = append(attrs, attribute.String("service.version", opts.Version))
	}
	// Later detectors win: the environment overrides the defaults.
	res, err := resource.New(ctx, resource.WithAttributes(attrs...), resource.WithTelemetrySDK(), resource.WithFromEnv())
	if err != nil && !errors.Is(err, resource.ErrPartialResource) {
		return nil, fmt.Errorf("telemetry resource: %w", err)
	}
	return res, nil
}

// exporterProtocol returns the OTLP protocol of signal ("TRACES" or
// "METRICS"), or "" when the environment asks for no OTLP export of it.
func exporterProtocol(getenv func(string) string, signal string) (string, error) {
	if strings.EqualFold(strings.TrimSpace(getenv("OTEL_SDK_DISABLED")), "true") {
		return "", nil
	}
	exporterVar := "OTEL_" + signal + "_EXPORTER"
	wantOTLP := false
	for _, e := range strings.Split(getenv(exporterVar), ",") {
		switch e = strings.TrimSpace(e); e {
		case "":
		case "none":
			return "", nil
		case "otlp":
			wantOTLP = true
		case "prometheus":
			if signal != "METRICS" {
				return "", fmt.Errorf("%s=%q: want otlp or none", exporterVar, e)
			}
			// /metrics always serves; nothing to push.
		default:
			return "", fmt.Errorf("%s=%q: want otlp or none", exporterVar, e)
		}
	}
	if !wantOTLP {
		if getenv(exporterVar) != "" || getenv("OTEL_EXPORTER_OTLP_ENDPOINT") == "" && getenv("OTEL_EXPORTER_OTLP_"+signal+"_ENDPOINT") == "" {
			return "", nil
		}
	}
	protoVar := "OTEL_EXPORTER_OTLP_" + signal + "_PROTOCOL"
	p := strings.TrimSpace(getenv(protoVar))
	if p == "" {
		protoVar = "OTEL_EXPORTER_OTLP_PROTOCOL"
		p = strings.TrimSpace(getenv(protoVar))
	}
	switch p {
	case "", "http/protobuf":
		return "http/protobuf", nil
	case "grpc":
		return "grpc", nil
	}
	return "", fmt.Errorf("%s=%q: want grpc or http/protobuf", protoVar, p)
}

// ServerHandler returns the gRPC server options of telemetry: otelgrpc's
// stats handler for traces (a span per call, a child of the caller's
// propagated context), and an interceptor recording the RPC latency
// histogram. otelgrpc's own metrics are off: they build attribute sets per
// call and cost more CPU than every span at a typical sampling ratio, while
// the histogram here reuses one attribute set per method and code.
func (t *Telemetry) ServerHandler() grpc.ServerOption {
	return grpc.StatsHandler(otelgrpc.NewServerHandler(
		otelgrpc.WithTracerProvider(t.TracerProvider),
		otelgrpc.WithMeterProvider(metricnoop.NewMeterProvider()),
		otelgrpc.WithPropagators(t.Propagator),
	))
}

// ServerOptions returns every gRPC server option of telemetry: the stats
// handler and the RPC latency interceptor.
func (t *Telemetry) ServerOptions() ([]grpc.ServerOption, error) {
	h, err := t.Meter().Float64Histogram("sendgate.rpc.server.duration",
		metric.WithUnit("s"),
		metric.WithDescription("Latency of the gRPC calls sendgate serves, by method and status code."),
		metric.WithExplicitBucketBoundaries(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5))
	if err != nil {
		return nil, fmt.Errorf("rpc duration histogram: %w", err)
	}
	var sets sync.Map // method + "|" + code -> metric.MeasurementOption
	opt := func(method string, code codes.Code) metric.MeasurementOption {
		k := rpcKey{method, code}
		if v, ok := sets.Load(k); ok {
			return v.(metric.MeasurementOption)
		}
		o := metric.WithAttributeSet(attribute.NewSet(
			attribute.String("rpc_method", method),
			attribute.String("rpc_grpc_status_code", code.String())))
		v, _ := sets.LoadOrStore(k, o)
		return v.(metric.MeasurementOption)
	}
	rec := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		start := time.Now()
		resp, err := handler(ctx, req)
		h.Record(ctx, time.Since(start).Seconds(), opt(info.FullMethod, status.Code(err)))
		return resp, err
	}
	return []grpc.ServerOption{t.ServerHandler(), grpc.ChainUnaryInterceptor(rec)}, nil
}

// rpcKey names one attribute set of the RPC latency histogram.
type rpcKey struct {
	method string
	code   codes.Code
}

// MetricsHandler serves every metric in the Prometheus text format, for
// /metrics.
func (t *Telemetry) MetricsHandler() http.Handler {
	return promhttp.HandlerFor(t.registry, promhttp.HandlerOpts{})
}

// Meter returns sendgate's own meter.
func (t *Telemetry) Meter() metric.Meter {
	return t.MeterProvider.Meter("github.com/sendgate/sendgate")
}

// Shutdown flushes and stops the exporters; ctx bounds the wait.
func (t *Telemetry) Shutdown(ctx context.Context) error {
	var errs []error
	for _, c := range t.closers {
		errs = append(errs, c(ctx))
	}
	return errors.Join(errs...)
}
