package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sendgate/sendgate/client"
	sendgatev1 "github.com/sendgate/sendgate/proto/sendgate/v1"
)

// redisConfig limits QQ to 100 a minute, and to 100 an hour and a day too:
// the minute tier alone gives a token back every 0.6s, which would let a
// slow machine admit more than 100 during the hammer; with the hour tier
// the next token is 36s away, so the count is exact.
const redisConfig = `# plain token buckets (no pacing): these tests take bursts
machine: {burst: 0}
providers:
  tencent:
    tiers: {minute: 100, hour: 100, day: 100}
`

// redisLimit is QQ's limit in redisConfig.
const redisLimit = 100

// redisPrefix returns a key prefix of the test's own, so that tests sharing
// one Redis never see each other's keys.
func redisPrefix(t *testing.T) string {
	return fmt.Sprintf("sge2e:%d:%s:", time.Now().UnixNano(), strings.ReplaceAll(t.Name(), "/", "-"))
}

// startReplicas starts n "serve --store redis" replicas with args added
// and returns them with a client for each.
func startReplicas(t *testing.T, bin string, n int, args ...string) ([]*serveProc, []*client.Client) {
	t.Helper()
	procs := make([]*serveProc, n)
	clients := make([]*client.Client, n)
	var wg sync.WaitGroup
	for i := range procs {
		procs[i] = launchServe(t, bin, fmt.Sprintf("replica-%c", 'A'+i), append([]string{"--store", "redis"}, args...)...)
	}
	errs := make([]error, n)
	for i, p := range procs {
		wg.Go(func() { errs[i] = p.waitReady(20 * time.Second) })
	}
	wg.Wait()
	for i, p := range procs {
		if errs[i] != nil {
			t.Fatalf("%s: %v\n%s", p.name, errs[i], p.logs.String())
		}
		clients[i] = p.dial()
	}
	return procs, clients
}

// TestE2ERedisReplicas starts three replicas on one Redis, standalone and
// Cluster, hammers one key from 64 concurrent callers spread round-robin
// over them, and checks that the ALLOWs add up to the limit exactly, and
// that a block reported through one replica stops the others on their next
// call.
func TestE2ERedisReplicas(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	t.Parallel()
	bin := buildBinary(t)
	cfg := writeFile(t, t.TempDir(), "sendgate.yaml", redisConfig)
	t.Run("standalone", func(t *testing.T) {
		t.Parallel()
		addr := os.Getenv("SENDGATE_TEST_REDIS")
		if addr == "" {
			addr = startRedis(t, "").addr
		}
		replicaChecks(t, bin, "--config", cfg, "--redis-addr", addr, "--redis-prefix", redisPrefix(t))
	})
	t.Run("cluster", func(t *testing.T) {
		t.Parallel()
		addrs := os.Getenv("SENDGATE_TEST_REDIS_CLUSTER")
		if addrs == "" {
			skipOrFail(t, "no Redis Cluster: set SENDGATE_TEST_REDIS_CLUSTER (scripts/redis-test-servers.sh start DIR)")
		}
		replicaChecks(t, bin, "--config", cfg, "--redis-addr", addrs, "--redis-cluster", "--redis-prefix", redisPrefix(t))
	})
}

func replicaChecks(t *testing.T, bin string, args ...string) {
	_, clients := startReplicas(t, bin, 3, args...)

	// 64 callers, round-robin over the replicas. Each asks until a
	// RATE_LIMITED deferral says no token comes back before the hammer's
	// deadline, or for at most 20 attempts.
	const (
		callers  = 64
		attempts = 20
		ip       = "203.0.113.7"
	)
	hammer := 30 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), hammer)
	defer cancel()
	deadline, _ := ctx.Deadline()
	var allows, defers atomic.Int64
	perReplica := make([]atomic.Int64, len(clients))
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range callers {
		c := clients[i%len(clients)]
		wg.Go(func() {
			<-start
			for range attempts {
				r, err := c.Admission().CanSend(ctx, &sendgatev1.CanSendRequest{SenderIp: ip, RecipientDomain: "qq.com"})
				if err != nil {
					t.Errorf("caller %d: CanSend: %v", i, err)
					return
				}
				if r.GetVerdict() == sendgatev1.Verdict_VERDICT_ALLOW {
					allows.Add(1)
					perReplica[i%len(clients)].Add(1)
					continue
				}
				defers.Add(1)
				if r.GetReason() != sendgatev1.DeferReason_DEFER_REASON_RATE_LIMITED || r.GetRetryAfter().AsDuration() <= 0 {
					t.Errorf("caller %d: unexpected deferral %v", i, r)
					return
				}
				if r.GetRetryAfter().AsDuration() > time.Until(deadline) {
					return
				}
			}
		})
	}
	began := time.Now()
	close(start)
	wg.Wait()
	took := time.Since(began)
	if ctx.Err() != nil {
		t.Fatalf("the hammer ran out of its %v", hammer)
	}
	spread := make([]int64, len(perReplica))
	for i := range perReplica {
		spread[i] = perReplica[i].Load()
	}
	t.Logf("%d callers over %d replicas: %d ALLOW (per replica %v), %d DEFER, in %v", callers, len(clients), allows.Load(), spread, defers.Load(), took)
	if n := allows.Load(); n != redisLimit {
		t.Errorf("%d ALLOWs across the replicas, want exactly the limit %d", n, redisLimit)
	}
	for i, c := range clients {
		r := canSend(t, c, ip, "qq.com", true)
		if rem, _ := tierRemaining(r.GetTiers(), "minute"); r.GetVerdict() != sendgatev1.Verdict_VERDICT_DEFER || rem != 0 {
			t.Errorf("replica %d after the hammer: %v", i, r)
		}
	}

	// A block through replica A stops B and C on their next call.
	const blocked = "203.0.113.8"
	if r := report(t, clients[0], blocked, "qq.com", 550, "", "550 Ip frequency limited"); r.GetState() != sendgatev1.ReputationState_REPUTATION_STATE_BLOCKED {
		t.Fatalf("block through replica A: %v", r)
	}
	for i, c := range clients[1:] {
		r := canSend(t, c, blocked, "foxmail.com", false)
		if r.GetVerdict() != sendgatev1.Verdict_VERDICT_DEFER || r.GetReason() != sendgatev1.DeferReason_DEFER_REASON_BLOCKED || r.GetRetryAfter().AsDuration() <= 0 {
			t.Errorf("replica %c after a block through A: %v", 'B'+i, r)
		}
	}
}

// TestE2ERedisFailure kills the Redis under three replicas and starts it
// again on the same port and data: fail-closed replicas answer DEFER
// UNAVAILABLE within the call's deadline and turn /readyz 503, a fail-open
// replica answers ALLOW from its local fallback at a share of the limit,
// and all of them recover without a restart, the block reported before the
// crash intact.
func TestE2ERedisFailure(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	t.Parallel()
	bin := buildBinary(t)
	dir := t.TempDir()
	cfg := writeFile(t, dir, "sendgate.yaml", redisConfig)
	persist := []string{"--save", "", "--appendonly", "yes", "--appendfsync", "always", "--dir", dir}
	rds := startRedis(t, "", persist...)

	common := []string{"--store", "redis", "--config", cfg, "--redis-addr", rds.addr, "--redis-prefix", redisPrefix(t), "--redis-timeout", "200ms"}
	procs := []*serveProc{
		launchServe(t, bin, "replica-A", common...),
		launchServe(t, bin, "replica-B", common...),
		launchServe(t, bin, "replica-C-fail-open", append(common, "--redis-fail-open")...),
	}
	clients := make([]*client.Client, len(procs))
	for i, p := range procs {
		if err := p.waitReady(20 * time.Second); err != nil {
			t.Fatalf("%s: %v\n%s", p.name, err, p.logs.String())
		}
		clients[i] = p.dial()
	}
	a, b, c := clients[0], clients[1], clients[2]

	// Before the crash: a block through A (B and C do not look at it, so
	// that afterwards they can only learn it from Redis).
	const blocked = "198.51.100.7"
	if r := report(t, a, blocked, "qq.com", 550, "", "550 Ip frequency limited"); r.GetState() != sendgatev1.ReputationState_REPUTATION_STATE_BLOCKED {
		t.Fatalf("block through A: %v", r)
	}
	if r := canSend(t, a, "198.51.100.8", "qq.com", false); r.GetVerdict() != sendgatev1.Verdict_VERDICT_ALLOW {
		t.Fatalf("CanSend before the crash: %v", r)
	}

	rds.kill()
	died := time.Now()

	// Fail closed: DEFER UNAVAILABLE with a retry_after, well within the
	// client's deadline.
	for i, cl := range clients[:2] {
		began := time.Now()
		r := canSend(t, cl, "198.51.100.9", "qq.com", false)
		took := time.Since(began)
		if r.GetVerdict() != sendgatev1.Verdict_VERDICT_DEFER || r.GetReason() != sendgatev1.DeferReason_DEFER_REASON_UNAVAILABLE || r.GetRetryAfter().AsDuration() <= 0 || took > 2*time.Second {
			t.Errorf("replica %c with Redis down: %v after %v, want DEFER UNAVAILABLE with a retry_after within 2s", 'A'+i, r, took)
		}
		t.Logf("replica %c with Redis down: %v %v retry_after %v in %v", 'A'+i, r.GetVerdict(), r.GetReason(), r.GetRetryAfter().AsDuration(), took)
	}
	// Reports need the shared truth: UNAVAILABLE, for the mailer to retry.
	{
		ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
		_, err := a.Admission().ReportResult(ctx, &sendgatev1.ReportResultRequest{SenderIp: "198.51.100.9", RecipientDomain: "qq.com", SmtpCode: 250})
		cancel()
		if status.Code(err) != codes.Unavailable {
			t.Errorf("ReportResult with Redis down: %v, want UNAVAILABLE", err)
		}
	}
	// Fail open: ALLOW from the local fallback, at a share of the limit.
	r := canSend(t, c, "198.51.100.9", "qq.com", false)
	limit := uint64(0)
	for _, ts := range r.GetTiers() {
		if ts.GetName() == "minute" {
			limit = ts.GetLimit()
		}
	}
	if r.GetVerdict() != sendgatev1.Verdict_VERDICT_ALLOW || limit == 0 || limit >= redisLimit {
		t.Errorf("fail-open replica with Redis down: %v, want ALLOW under a minute limit below %d", r, redisLimit)
	}
	t.Logf("fail-open replica with Redis down: %v, minute limit %d of %d", r.GetVerdict(), limit, redisLimit)
	for _, p := range procs[:2] {
		if err := p.waitReadyz(http.StatusServiceUnavailable, 6*time.Second); err != nil {
			t.Errorf("%s with Redis down: %v", p.name, err)
		}
	}
	t.Logf("fail-closed replicas not ready %v after Redis died", time.Since(died).Round(time.Millisecond))

	// Redis back on the same port with the same data: every replica
	// recovers without a restart, and the block is still there.
	startRedis(t, rds.addr, persist...)
	back := time.Now()
	for _, p := range procs {
		if err := p.waitReady(10 * time.Second); err != nil {
			t.Errorf("%s after Redis returned: %v", p.name, err)
		}
	}
	t.Logf("every replica ready %v after Redis returned", time.Since(back).Round(time.Millisecond))
	for i, cl := range []*client.Client{b, c} {
		r := canSend(t, cl, blocked, "qq.com", false)
		if r.GetVerdict() != sendgatev1.Verdict_VERDICT_DEFER || r.GetReason() != sendgatev1.DeferReason_DEFER_REASON_BLOCKED {
			t.Errorf("replica %c after Redis returned: %v, want DEFER BLOCKED (the block from before the crash)", 'B'+i, r)
		}
	}
	for i, cl := range clients {
		r := canSend(t, cl, "198.51.100.10", "qq.com", false)
		if r.GetVerdict() != sendgatev1.Verdict_VERDICT_ALLOW {
			t.Errorf("replica %c after Redis returned: %v, want ALLOW", 'A'+i, r)
		}
	}
}
