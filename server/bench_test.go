package server_test

import (
	"context"
	"fmt"
	"net"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/sendgate/sendgate/client"
	"github.com/sendgate/sendgate/internal/resolve"
	"github.com/sendgate/sendgate/limiter"
	"github.com/sendgate/sendgate/limiter/memstore"
	sendgatev1 "github.com/sendgate/sendgate/proto/sendgate/v1"
	"github.com/sendgate/sendgate/server"
)

// The benchmarks compare CanSend through the whole stack (real client, gRPC
// over loopback TCP, validation, resolution, the memory store) with the
// standard health Check through the same server and connection: the health
// Check is the floor that gRPC itself costs. The target is CanSend at no
// less than 70% of the health Check's throughput;
// BenchmarkCanSendHealthRatio prints the ratio. Run:
//
//	go test ./server -run '^$' -bench 'GRPC|Ratio|Handler' -benchmem -cpu 1,2

// benchEnv is a server with limits that never defer, on loopback TCP, with
// the real client, and the server's clock the real one.
type benchEnv struct {
	srv    *server.Server
	client *client.Client
	health healthpb.HealthClient
}

func newBenchEnv(b *testing.B) *benchEnv {
	b.Helper()
	m := limiter.DefaultMachine()
	huge := limiter.Limits{limiter.Minute: 1 << 40, limiter.Hour: 1 << 40, limiter.Day: 1 << 40}
	pol := &limiter.Policy{
		Providers: map[string]*limiter.Provider{"tencent": {Name: "tencent", Limits: huge, Machine: m}},
		Default:   &limiter.Provider{Name: "default", Limits: huge, Machine: m},
	}
	ms := memstore.New(memstore.Options{SweepInterval: -1, Policy: pol.For})
	b.Cleanup(func() { ms.Close() })
	res, err := resolve.New([]resolve.Provider{{Name: "tencent", Domains: []string{"qq.com"}}}, nil, resolve.Options{})
	if err != nil {
		b.Fatal(err)
	}
	srv, err := server.New(server.Options{Limiter: limiter.New(ms, pol, limiter.Options{}), Resolver: res, Classifier: testClassifier{}})
	if err != nil {
		b.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	g := grpc.NewServer()
	srv.Register(g)
	go g.Serve(lis)
	b.Cleanup(g.Stop)
	c, err := client.Dial(context.Background(), lis.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	return &benchEnv{srv: srv, client: c, health: healthpb.NewHealthClient(c.Conn())}
}

// benchIPs gives each parallel goroutine its own sender IP, so that the
// goroutines do not all contend for one key.
func benchIP(n *atomic.Int64) string {
	i := n.Add(1)
	return "198.51." + strconv.Itoa(int(i/250)%250) + "." + strconv.Itoa(int(i%250)+1)
}

func (e *benchEnv) canSendLoop(b *testing.B) {
	var n atomic.Int64
	b.SetParallelism(8)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		ip := benchIP(&n)
		ctx := context.Background()
		for pb.Next() {
			d, err := e.client.CanSend(ctx, ip, "qq.com", 1)
			if err != nil || !d.Allowed() {
				b.Errorf("CanSend: %v %v", d, err)
				return
			}
		}
	})
}

func (e *benchEnv) healthLoop(b *testing.B) {
	b.SetParallelism(8)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		ctx := context.Background()
		req := &healthpb.HealthCheckRequest{}
		for pb.Next() {
			r, err := e.health.Check(ctx, req)
			if err != nil || r.GetStatus() != healthpb.HealthCheckResponse_SERVING {
				b.Errorf("health: %v %v", r, err)
				return
			}
		}
	})
}

// BenchmarkCanSendGRPC: CanSend (an ALLOW for an existing key) through the
// real client and gRPC over loopback TCP, from 8 goroutines per CPU (a fleet
// of mailers keeps many calls in flight on one connection).
func BenchmarkCanSendGRPC(b *testing.B) { newBenchEnv(b).canSendLoop(b) }

// BenchmarkHealthCheckGRPC: the standard health Check through the same
// kind of server and connection.
func BenchmarkHealthCheckGRPC(b *testing.B) { newBenchEnv(b).healthLoop(b) }

// BenchmarkCanSendHealthRatio measures both calls above against one server
// and connection, interleaved (health, CanSend, health, CanSend; one second
// each, 8 callers per CPU) so that drift hits both, and reports each one's
// ns/op and the throughput ratio CanSend/health (target >= 0.70). It is a
// measurement, not an assertion, and runs once whatever b.N is; its ns/op is
// CanSend's.
func BenchmarkCanSendHealthRatio(b *testing.B) {
	e := newBenchEnv(b)
	ctx := context.Background()
	var n atomic.Int64
	canSend := func() func() error {
		ip := benchIP(&n)
		return func() error {
			d, err := e.client.CanSend(ctx, ip, "qq.com", 1)
			if err == nil && !d.Allowed() {
				err = fmt.Errorf("CanSend deferred: %s", d.Detail)
			}
			return err
		}
	}
	health := func() func() error {
		req := &healthpb.HealthCheckRequest{}
		return func() error {
			_, err := e.health.Check(ctx, req)
			return err
		}
	}
	workers := 8 * runtime.GOMAXPROCS(0)
	var canOps, hcOps int64
	var canT, hcT time.Duration
	for i := 0; i < 2; i++ {
		ops, t, err := throughput(time.Second, workers, health)
		if err != nil {
			b.Fatal(err)
		}
		hcOps, hcT = hcOps+ops, hcT+t
		ops, t, err = throughput(time.Second, workers, canSend)
		if err != nil {
			b.Fatal(err)
		}
		canOps, canT = canOps+ops, canT+t
	}
	canNs := float64(canT.Nanoseconds()) / float64(canOps)
	hcNs := float64(hcT.Nanoseconds()) / float64(hcOps)
	b.ReportMetric(canNs, "ns/op")
	b.ReportMetric(hcNs, "health-ns/op")
	b.ReportMetric(hcNs/canNs, "ratio")
	b.Logf("%d callers: CanSend %.0f ns/op, health Check %.0f ns/op: CanSend runs at %.0f%% of the health Check's throughput (target >= 70%%)",
		workers, canNs, hcNs, 100*hcNs/canNs)
}

// throughput runs workers goroutines calling the op that newOp gives each,
// for d, and returns the calls completed and the time taken.
func throughput(d time.Duration, workers int, newOp func() func() error) (int64, time.Duration, error) {
	var ops atomic.Int64
	var firstErr atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < workers; w++ {
		op := newOp()
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if err := op(); err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
				ops.Add(1)
			}
		}()
	}
	time.Sleep(d)
	close(stop)
	wg.Wait()
	elapsed := time.Since(start)
	if err, _ := firstErr.Load().(error); err != nil {
		return 0, 0, err
	}
	return ops.Load(), elapsed, nil
}

// BenchmarkCanSendHandler measures the server's own work for one CanSend
// (validation, resolution, admission, the response), without gRPC: it is
// what CanSend adds to the health Check. An ALLOW allocates one object, the
// response (canSendBox).
func BenchmarkCanSendHandler(b *testing.B) {
	e := newBenchEnv(b)
	ctx := context.Background()
	req := &sendgatev1.CanSendRequest{SenderIp: "198.51.100.1", RecipientDomain: "qq.com", Count: 1}
	if _, err := e.srv.CanSend(ctx, req); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := e.srv.CanSend(ctx, req); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCanSendBatchHandler measures the server's own work for a
// CanSendBatch of 100 checks over 100 keys, without gRPC; ns/op over 100 is
// the cost of one decision in a batch, against BenchmarkCanSendHandler.
func BenchmarkCanSendBatchHandler(b *testing.B) {
	e := newBenchEnv(b)
	ctx := context.Background()
	req := &sendgatev1.CanSendBatchRequest{}
	for i := 0; i < 100; i++ {
		req.Requests = append(req.Requests, &sendgatev1.CanSendRequest{SenderIp: fmt.Sprintf("198.51.100.%d", i), RecipientDomain: "qq.com", Count: 1})
	}
	if _, err := e.srv.CanSendBatch(ctx, req); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := e.srv.CanSendBatch(ctx, req); err != nil {
			b.Fatal(err)
		}
	}
}
