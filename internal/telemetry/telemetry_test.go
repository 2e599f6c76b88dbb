package telemetry

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"testing"

	"go.opentelemetry.io/otel/trace"
)

func TestExporterProtocol(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name           string
		env            map[string]string
		traces, metric string
		wantErr        bool
	}{
		{name: "nothing set: no export"},
		{name: "endpoint, default protocol", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"},
			traces: "http/protobuf", metric: "http/protobuf"},
		{name: "endpoint, grpc", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
			traces: "grpc", metric: "grpc"},
		{name: "per-signal protocol wins", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317",
			"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "http/protobuf"},
			traces: "grpc", metric: "http/protobuf"},
		{name: "traces endpoint only", env: map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"},
			traces: "http/protobuf"},
		{name: "metrics exporter none", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_METRICS_EXPORTER": "none"},
			traces: "http/protobuf"},
		{name: "metrics exporter prometheus: no push", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_METRICS_EXPORTER": "prometheus"},
			traces: "http/protobuf"},
		{name: "otlp asked without endpoint: the default endpoint", env: map[string]string{"OTEL_TRACES_EXPORTER": "otlp"},
			traces: "http/protobuf"},
		{name: "sdk disabled", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "true"}},
		{name: "bad protocol", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, wantErr: true},
		{name: "bad exporter", env: map[string]string{"OTEL_TRACES_EXPORTER": "zipkin"}, wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			getenv := func(k string) string { return tc.env[k] }
			tr, err1 := exporterProtocol(getenv, "TRACES")
			me, err2 := exporterProtocol(getenv, "METRICS")
			if tc.wantErr {
				if err1 == nil && err2 == nil {
					t.Fatalf("no error, want one")
				}
				return
			}
			if err1 != nil || err2 != nil {
				t.Fatalf("errors %v, %v", err1, err2)
			}
			if tr != tc.traces || me != tc.metric {
				t.Errorf("traces %q metrics %q, want %q %q", tr, me, tc.traces, tc.metric)
			}
		})
	}
}

func TestTraceHandler(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	log := slog.New(NewTraceHandler(slog.NewJSONHandler(&buf, nil))).With("component", "test")
	sc := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: trace.TraceID{1, 2, 3}, SpanID: trace.SpanID{4, 5}, TraceFlags: trace.FlagsSampled,
	})
	inCall := trace.ContextWithSpanContext(context.Background(), sc)

	for _, tc := range []struct {
		name          string
		ctx           context.Context
		trace, spanID string
	}{
		{"inside a call", inCall, sc.TraceID().String(), sc.SpanID().String()},
		{"outside a call", context.Background(), "", ""},
	} {
		buf.Reset()
		log.InfoContext(tc.ctx, "hello")
		var m map[string]any
		if err := json.Unmarshal(buf.Bytes(), &m); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		got, _ := m["trace_id"].(string)
		gotSpan, _ := m["span_id"].(string)
		if got != tc.trace || gotSpan != tc.spanID || m["component"] != "test" {
			t.Errorf("%s: line %v, want trace_id %q span_id %q", tc.name, m, tc.trace, tc.spanID)
		}
	}
}
