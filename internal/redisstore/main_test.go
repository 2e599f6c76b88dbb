package redisstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// The servers the tests use: SENDGATE_TEST_REDIS and
// SENDGATE_TEST_REDIS_CLUSTER (see scripts/redis-test-servers.sh), or, when
// the first is absent, a standalone redis-server TestMain starts itself.
var (
	standaloneAddr string
	clusterAddrs   []string
	setupErr       error
)

func TestMain(m *testing.M) {
	standaloneAddr = os.Getenv("SENDGATE_TEST_REDIS")
	if s := os.Getenv("SENDGATE_TEST_REDIS_CLUSTER"); s != "" {
		clusterAddrs = strings.Split(s, ",")
	}
	var own *redisServer
	if standaloneAddr == "" {
		own, setupErr = startRedis("")
		if own != nil {
			standaloneAddr = own.addr
		}
	}
	code := m.Run()
	if own != nil {
		own.stop()
	}
	os.Exit(code)
}

// needStandalone returns the standalone server's address. Without one it
// skips the test, or fails it when CI is set.
func needStandalone(t testing.TB) string {
	t.Helper()
	if standaloneAddr == "" {
		missing(t, fmt.Sprintf("no Redis: set SENDGATE_TEST_REDIS or install redis-server (%v)", setupErr))
	}
	return standaloneAddr
}

func needCluster(t testing.TB) []string {
	t.Helper()
	if len(clusterAddrs) == 0 {
		missing(t, "no Redis Cluster: set SENDGATE_TEST_REDIS_CLUSTER (scripts/redis-test-servers.sh start DIR)")
	}
	return clusterAddrs
}

func missing(t testing.TB, msg string) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// redisServer is a redis-server this test process started.
type redisServer struct {
	addr string
	cmd  *exec.Cmd
}

// startRedis starts a standalone redis-server without persistence on addr
// ("" for a free loopback port) and waits until it answers.
func startRedis(addr string) (*redisServer, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, err
	}
	if addr == "" {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		addr = l.Addr().String()
		l.Close()
	}
	_, port, _ := net.SplitHostPort(addr)
	cmd := exec.Command(bin, "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no")
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s := &redisServer{addr: addr, cmd: cmd}
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
	defer c.Close()
	for i := 0; i < 200; i++ {
		if c.Ping(context.Background()).Err() == nil {
			return s, nil
		}
		time.Sleep(25 * time.Millisecond)
	}
	s.stop()
	return nil, fmt.Errorf("redis-server on %s did not answer", addr)
}

func (s *redisServer) stop() {
	s.cmd.Process.Kill()
	s.cmd.Wait()
}

// testPrefix returns a key prefix of the test's own.
func testPrefix() string {
	b := make([]byte, 6)
	rand.Read(b)
	return "sgtest:" + hex.EncodeToString(b) + ":"
}

// open returns a store on addrs, closed when the test ends.
func open(t testing.TB, addrs []string, opts Options) *Store {
	t.Helper()
	opts.Addrs = addrs
	if opts.Prefix == "" {
		opts.Prefix = testPrefix()
	}
	if opts.Timeout == 0 {
		// Generous: the race detector on a small shared machine is slow,
		// and these tests are about answers, not latency (the fault test
		// sets its own).
		opts.Timeout = 10 * time.Second
	}
	s, err := New(context.Background(), opts)
	if err != nil {
		t.Fatalf("new store: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// roundTrips counts the round trips a client makes: one per command, one
// per pipeline (per node).
type roundTrips struct{ n atomic.Int64 }

func (r *roundTrips) DialHook(next redis.DialHook) redis.DialHook { return next }
func (r *roundTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if !connInit(cmd) {
			r.n.Add(1)
		}
		return next(ctx, cmd)
	}
}
func (r *roundTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if len(cmds) > 0 && !connInit(cmds[0]) {
			r.n.Add(1)
		}
		return next(ctx, cmds)
	}
}

// countRoundTrips installs a round-trip counter on s.
func countRoundTrips(s *Store) *roundTrips {
	r := &roundTrips{}
	if cc, ok := s.client.(*redis.ClusterClient); ok {
		cc.OnNewNode(func(c *redis.Client) { c.AddHook(r) })
		cc.ForEachShard(context.Background(), func(_ context.Context, c *redis.Client) error { c.AddHook(r); return nil })
	} else {
		s.client.AddHook(r)
	}
	return r
}

// connInit reports whether cmd is part of a new connection's handshake
// (HELLO, AUTH, CLIENT SETINFO) or of the Cluster client's topology
// discovery (CLUSTER SLOTS, COMMAND), which the counts leave out: they happen once per
// connection or topology change, not per call.
func connInit(cmd redis.Cmder) bool {
	switch cmd.Name() {
	case "hello", "auth", "client", "select", "cluster", "command":
		return true
	}
	return false
}
