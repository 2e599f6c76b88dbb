package telemetry_test

import (
	"bufio"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	collmetricpb "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	colltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"

	"github.com/sendgate/sendgate/client"
	"github.com/sendgate/sendgate/internal/telemetry"
	sendgatev1 "github.com/sendgate/sendgate/proto/sendgate/v1"
)

// receiver is an OTLP/gRPC collector of its own: it keeps every span it is
// sent and accepts (and drops) metrics.
type receiver struct {
	colltracepb.UnimplementedTraceServiceServer
	collmetricpb.UnimplementedMetricsServiceServer

	mu    sync.Mutex
	spans []*tracepb.Span
	addr  string
}

func (r *receiver) Export(_ context.Context, req *colltracepb.ExportTraceServiceRequest) (*colltracepb.ExportTraceServiceResponse, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rs := range req.GetResourceSpans() {
		for _, ss := range rs.GetScopeSpans() {
			r.spans = append(r.spans, ss.GetSpans()...)
		}
	}
	return &colltracepb.ExportTraceServiceResponse{}, nil
}

// metricsService accepts OTLP metrics so the server's push succeeds.
type metricsService struct {
	collmetricpb.UnimplementedMetricsServiceServer
}

func (metricsService) Export(context.Context, *collmetricpb.ExportMetricsServiceRequest) (*collmetricpb.ExportMetricsServiceResponse, error) {
	return &collmetricpb.ExportMetricsServiceResponse{}, nil
}

// startReceiver serves a receiver on a loopback port until the test ends.
func startReceiver(t *testing.T) *receiver {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &receiver{addr: lis.Addr().String()}
	g := grpc.NewServer()
	colltracepb.RegisterTraceServiceServer(g, r)
	collmetricpb.RegisterMetricsServiceServer(g, metricsService{})
	go g.Serve(lis)
	t.Cleanup(g.Stop)
	return r
}

// serverSpan returns the received server span of method in trace tid.
func (r *receiver) serverSpan(tid trace.TraceID, method string) *tracepb.Span {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range r.spans {
		if s.GetKind() == tracepb.Span_SPAN_KIND_SERVER && strings.HasSuffix(s.GetName(), "/"+method) &&
			hex.EncodeToString(s.GetTraceId()) == tid.String() {
			return s
		}
	}
	return nil
}

// buildBinary builds cmd/sendgate once per test binary.
var buildBinary = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "sendgate-telemetry-test")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "sendgate")
	gobin := filepath.Join(runtime.GOROOT(), "bin", "go")
	out, err := exec.Command(gobin, "build", "-o", bin, "github.com/sendgate/sendgate/cmd/sendgate").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return bin, nil
})

// process is a running `sendgate serve`, with its JSON log lines.
type process struct {
	cmd            *exec.Cmd
	grpcAddr, http string

	mu   sync.Mutex
	logs []map[string]any
	done chan struct{}
}

// startServer runs the built binary with env added to a clean environment
// (no OTEL_* of the caller's), and waits until it serves.
func startServer(t *testing.T, env ...string) *process {
	t.Helper()
	bin, err := buildBinary()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "serve", "--store", "memory", "--no-dns", "--log-format", "json",
		"--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0")
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "OTEL_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, env...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &process{cmd: cmd, done: make(chan struct{})}
	ready := make(chan struct{})
	go func() {
		defer close(p.done)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var m map[string]any
			if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
				t.Logf("sendgate (not JSON): %s", sc.Text())
				continue
			}
			p.mu.Lock()
			p.logs = append(p.logs, m)
			p.mu.Unlock()
			if m["msg"] == "sendgate serving" {
				p.grpcAddr, _ = m["grpc"].(string)
				p.http, _ = m["http"].(string)
				close(ready)
			}
		}
		io.Copy(io.Discard, stderr)
	}()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(15 * time.Second):
			cmd.Process.Kill()
		}
		cmd.Wait()
	})
	select {
	case <-ready:
	case <-p.done:
		t.Fatal("sendgate exited before serving")
	case <-time.After(30 * time.Second):
		t.Fatal("sendgate did not start serving within 30s")
	}
	return p
}

// logLines returns the log lines whose msg is msg.
func (p *process) logLines(msg string) []map[string]any {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []map[string]any
	for _, m := range p.logs {
		if m["msg"] == msg {
			out = append(out, m)
		}
	}
	return out
}

// spanAttrs returns a span's string, bool and int attributes as strings.
func spanAttrs(s *tracepb.Span) map[string]string {
	out := map[string]string{}
	for _, kv := range s.GetAttributes() {
		switch v := kv.GetValue().GetValue().(type) {
		case *commonpb.AnyValue_StringValue:
			out[kv.GetKey()] = v.StringValue
		case *commonpb.AnyValue_BoolValue:
			out[kv.GetKey()] = strconv.FormatBool(v.BoolValue)
		case *commonpb.AnyValue_IntValue:
			out[kv.GetKey()] = strconv.FormatInt(v.IntValue, 10)
		}
	}
	return out
}

// testTracing is the mailer's side: a tracer provider of the test's own,
// recording in memory, and a client that propagates its context.
func testTracing(t *testing.T, addr string) (*sdktrace.TracerProvider, *tracetest.InMemoryExporter, *client.Client) {
	t.Helper()
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp), sdktrace.WithSampler(sdktrace.AlwaysSample()))
	t.Cleanup(func() { tp.Shutdown(context.Background()) })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, addr, client.WithDeferCache(-1), client.WithTracing(
		otelgrpc.WithTracerProvider(tp), otelgrpc.WithPropagators(telemetry.Propagator())))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return tp, exp, c
}

// blockReply is a reply the built-in rules classify IP_BLOCKED for qq.com.
const blockReply = "550 Ip frequency limited. http://service.mail.qq.com/cgi-bin/help?subtype=1&&id=20022&&no=1000725"

// TestTracesReachOTLPReceiver runs the real binary with the standard OTLP
// variables pointing at a receiver of the test's own, calls it through the
// Go client inside a parent span, and checks that the server spans arrive
// as children of the client's spans in the parent's trace, with the
// sendgate.* attributes; and that the transition's log line carries the
// trace.
func TestTracesReachOTLPReceiver(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	rcv := startReceiver(t)
	p := startServer(t,
		"OTEL_EXPORTER_OTLP_ENDPOINT=http://"+rcv.addr,
		"OTEL_EXPORTER_OTLP_PROTOCOL=grpc",
		"OTEL_TRACES_SAMPLER=always_on",
		"OTEL_SERVICE_NAME=sendgate-e2e",
		"OTEL_BSP_SCHEDULE_DELAY=100",
		"OTEL_METRIC_EXPORT_INTERVAL=500",
	)
	tp, clientSpans, c := testTracing(t, p.grpcAddr)

	ctx, parent := tp.Tracer("mailer").Start(context.Background(), "deliver message")
	tid := parent.SpanContext().TraceID()
	const ip = "203.0.113.7"
	d, err := c.CanSend(ctx, ip, "qq.com", 1)
	if err != nil || !d.Allowed() {
		t.Fatalf("CanSend = %+v, %v; want ALLOW", d, err)
	}
	out, err := c.ReportResult(ctx, client.Result{IP: ip, Domain: "qq.com", Code: 550, Reply: blockReply})
	if err != nil {
		t.Fatal(err)
	}
	if !out.StateChanged || out.State != sendgatev1.ReputationState_REPUTATION_STATE_BLOCKED {
		t.Fatalf("ReportResult = %+v; want a change to BLOCKED", out)
	}
	parent.End()

	// The client spans: children of the parent, one per call.
	clientSpan := map[string]sdktrace.ReadOnlySpan{}
	for _, s := range clientSpans.GetSpans().Snapshots() {
		if s.SpanKind() == trace.SpanKindClient {
			if s.Parent().SpanID() != parent.SpanContext().SpanID() {
				t.Errorf("client span %s: parent %s, want %s", s.Name(), s.Parent().SpanID(), parent.SpanContext().SpanID())
			}
			clientSpan[s.Name()[strings.LastIndex(s.Name(), "/")+1:]] = s
		}
	}

	want := map[string]map[string]string{
		"CanSend": {"sendgate.sender_ip": ip, "sendgate.provider": d.Provider, "sendgate.verdict": "ALLOW", "sendgate.state": "HEALTHY"},
		"ReportResult": {"sendgate.sender_ip": ip, "sendgate.provider": d.Provider, "sendgate.classification": "IP_BLOCKED",
			"sendgate.rule": out.Rule, "sendgate.state": "BLOCKED", "sendgate.state_changed": "true"},
	}
	for method, attrs := range want {
		var s *tracepb.Span
		for deadline := time.Now().Add(10 * time.Second); s == nil && time.Now().Before(deadline); {
			if s = rcv.serverSpan(tid, method); s == nil {
				time.Sleep(50 * time.Millisecond)
			}
		}
		if s == nil {
			t.Fatalf("no server span of %s in trace %s reached the receiver", method, tid)
		}
		cs, ok := clientSpan[method]
		if !ok {
			t.Fatalf("no client span of %s", method)
		}
		if got, want := hex.EncodeToString(s.GetParentSpanId()), cs.SpanContext().SpanID().String(); got != want {
			t.Errorf("%s server span: parent span id %s, want the client span's %s", method, got, want)
		}
		got := spanAttrs(s)
		for k, v := range attrs {
			if got[k] != v {
				t.Errorf("%s server span: %s = %q, want %q (all: %v)", method, k, got[k], v, got)
			}
		}
	}

	// The transition was logged once, inside the ReportResult call.
	var lines []map[string]any
	for deadline := time.Now().Add(5 * time.Second); len(lines) == 0 && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		lines = p.logLines("transition")
	}
	if len(lines) != 1 {
		t.Fatalf("transition log lines: %v; want 1", lines)
	}
	l := lines[0]
	if l["trace_id"] != tid.String() || l["span_id"] != hex.EncodeToString(rcv.serverSpan(tid, "ReportResult").GetSpanId()) {
		t.Errorf("transition line %v: want trace_id %s and the ReportResult server span's id", l, tid)
	}
	if l["ip"] != ip || l["from"] != "HEALTHY" || l["to"] != "BLOCKED" || !strings.HasPrefix(fmt.Sprint(l["reason"]), out.Rule) || l["reply"] != blockReply {
		t.Errorf("transition line %v: want ip, from, to, the rule and the reply", l)
	}
	if l["level"] != "INFO" {
		t.Errorf("transition line level %v, want INFO", l["level"])
	}
}

// scrape returns the /metrics of p as lines.
func scrape(t *testing.T, p *process) string {
	t.Helper()
	resp, err := http.Get("http://" + p.http + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %d, %v", resp.StatusCode, err)
	}
	return string(b)
}

// metricValue returns the value of the sample of name whose labels include
// every one of labels (`k="v"`), or 0 when there is none.
func metricValue(t *testing.T, body, name string, labels ...string) float64 {
	t.Helper()
	var sum float64
	for line := range strings.Lines(body) {
		line = strings.TrimSpace(line)
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		ok := true
		for _, l := range labels {
			if !strings.Contains(line, l) {
				ok = false
				break
			}
		}
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err != nil {
			t.Fatalf("metric line %q: %v", line, err)
		}
		sum += v
	}
	return sum
}

// TestMetricsMove scrapes /metrics of the real binary (no OTLP configured)
// and checks that the counters move as calls are made, that the provider
// label is bounded, and that no metric carries a sender IP.
func TestMetricsMove(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	p := startServer(t)
	_, _, c := testTracing(t, p.grpcAddr)
	ctx := context.Background()
	const ip = "198.51.100.23"

	allow := `sendgate_decisions_total`
	before := scrape(t, p)
	d, err := c.CanSend(ctx, ip, "qq.com", 1)
	if err != nil || !d.Allowed() {
		t.Fatalf("CanSend = %+v, %v", d, err)
	}
	prov := `provider="` + d.Provider + `"`
	if _, err := c.CanSend(ctx, ip, "mail.example.org", 1); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ReportResult(ctx, client.Result{IP: ip, Domain: "qq.com", Code: 550, Reply: blockReply}); err != nil {
		t.Fatal(err)
	}
	d2, err := c.CanSend(ctx, ip, "qq.com", 1)
	if err != nil || d2.Allowed() {
		t.Fatalf("CanSend after a block = %+v, %v; want DEFER", d2, err)
	}
	after := scrape(t, p)

	for _, tc := range []struct {
		name   string
		labels []string
		delta  float64
	}{
		{allow, []string{prov, `verdict="ALLOW"`}, 1},
		{allow, []string{prov, `verdict="DEFER"`, `reason="BLOCKED"`}, 1},
		{allow, []string{`provider="other"`, `verdict="ALLOW"`}, 1},
		{"sendgate_reports_total", []string{prov, `classification="IP_BLOCKED"`}, 1},
		{"sendgate_transitions_total", []string{prov, `from="HEALTHY"`, `to="BLOCKED"`}, 1},
	} {
		got := metricValue(t, after, tc.name, tc.labels...) - metricValue(t, before, tc.name, tc.labels...)
		if got != tc.delta {
			t.Errorf("%s%v moved by %v, want %v", tc.name, tc.labels, got, tc.delta)
		}
	}
	for _, name := range []string{"sendgate_store_operation_duration_seconds_count", "sendgate_dns_answers_total"} {
		if metricValue(t, after, name) == 0 {
			t.Errorf("%s: no samples", name)
		}
	}
	for _, want := range []string{`sendgate_keys{state="HEALTHY"}`, `sendgate_keys{state="BLOCKED"}`, "process_cpu_seconds_total", "go_goroutine", "sendgate_rpc_server_duration_seconds_bucket"} {
		if !strings.Contains(after, want) {
			t.Errorf("/metrics has no %s", want)
		}
	}
	if strings.Contains(after, ip) || strings.Contains(after, "198.51.100") {
		t.Errorf("/metrics carries a sender IP")
	}
	if strings.Contains(after, "example.org") {
		t.Errorf("/metrics carries a domain-provider's name")
	}
}
