package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sendgate/sendgate/client"
	sendgatev1 "github.com/sendgate/sendgate/proto/sendgate/v1"
)

// Helpers of the end-to-end tests (TestE2E...): they build the real binary,
// run "sendgate serve" as a child process, drive it over gRPC with the real
// client, and stop it with signals.

// callTimeout bounds every RPC an end-to-end test makes.
const callTimeout = 5 * time.Second

// buildBinary builds ./cmd/sendgate into a directory of t's own and returns
// the path of the binary. The build cache makes every build after the first
// one of a run a link only.
func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "sendgate")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// writeFile writes content to name under dir and returns its path.
func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// serveProc is one running "sendgate serve".
type serveProc struct {
	t        *testing.T
	name     string
	cmd      *exec.Cmd
	logs     *syncBuffer
	grpcAddr string
	httpAddr string
	exited   chan struct{} // closed when the process has exited; waitErr is set then
	waitErr  error
}

// startServe starts "bin serve" on free loopback ports with args added (the
// caller passes --store and what it needs; --no-dns and JSON logs are
// always set). It returns once /readyz answers 200, and fails t when the
// process exits first or is not ready within 20s. The process is killed
// when t ends, if it still runs.
func startServe(t *testing.T, bin, name string, args ...string) *serveProc {
	t.Helper()
	p := launchServe(t, bin, name, args...)
	if err := p.waitReady(20 * time.Second); err != nil {
		t.Fatalf("%s: %v\n%s", name, err, p.logs.String())
	}
	return p
}

// launchServe starts "bin serve" like startServe but does not wait for it.
func launchServe(t *testing.T, bin, name string, args ...string) *serveProc {
	t.Helper()
	p := &serveProc{t: t, name: name, logs: &syncBuffer{}, grpcAddr: freeAddr(t), httpAddr: freeAddr(t), exited: make(chan struct{})}
	all := append([]string{"serve", "--grpc-addr", p.grpcAddr, "--http-addr", p.httpAddr, "--no-dns", "--log-format", "json"}, args...)
	p.cmd = exec.Command(bin, all...)
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	go func() {
		p.waitErr = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			p.cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			t.Logf("%s log:\n%s", name, p.logs.String())
		}
	})
	return p
}

// readyz returns the status code of GET /readyz, or 0 when it cannot be
// reached.
func (p *serveProc) readyz() int {
	c := http.Client{Timeout: time.Second}
	resp, err := c.Get("http://" + p.httpAddr + "/readyz")
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// waitReady waits until /readyz answers 200.
func (p *serveProc) waitReady(limit time.Duration) error {
	return p.waitReadyz(http.StatusOK, limit)
}

// waitReadyz waits until /readyz answers code, and returns an error when
// it does not within limit or the process exits first.
func (p *serveProc) waitReadyz(code int, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		if p.readyz() == code {
			return nil
		}
		select {
		case <-p.exited:
			return fmt.Errorf("exited (%v) before /readyz answered %d", p.waitErr, code)
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("/readyz did not answer %d within %v (last: %d)", code, limit, p.readyz())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// kill stops the process with SIGKILL and waits for it.
func (p *serveProc) kill() {
	p.t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		p.t.Fatalf("%s: SIGKILL: %v", p.name, err)
	}
	<-p.exited
}

// terminate stops the process with SIGTERM and fails the test unless it
// exits 0 within 15s.
func (p *serveProc) terminate() {
	p.t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		p.t.Fatalf("%s: SIGTERM: %v", p.name, err)
	}
	select {
	case <-p.exited:
		if p.waitErr != nil {
			p.t.Fatalf("%s after SIGTERM: %v\n%s", p.name, p.waitErr, p.logs.String())
		}
	case <-time.After(15 * time.Second):
		p.t.Fatalf("%s still running 15s after SIGTERM\n%s", p.name, p.logs.String())
	}
}

// logRecords returns the JSON log records whose msg is msg.
func (p *serveProc) logRecords(msg string) []map[string]any {
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(p.logs.String()))
	for sc.Scan() {
		var rec map[string]any
		if json.Unmarshal(sc.Bytes(), &rec) == nil && rec["msg"] == msg {
			out = append(out, rec)
		}
	}
	return out
}

// dial returns the real Go client for p, without its memory of deferrals
// (the tests look at every answer of the server), closed when t ends.
func (p *serveProc) dial() *client.Client {
	p.t.Helper()
	c, err := client.New(context.Background(), p.grpcAddr, client.WithDeferCache(-1), client.WithTimeout(callTimeout))
	if err != nil {
		p.t.Fatal(err)
	}
	p.t.Cleanup(func() { c.Close() })
	return c
}

// canSend calls CanSend through the generated stub (no client-side
// fallback or memory) and fails t on an error.
func canSend(t *testing.T, c *client.Client, ip, domain string, dryRun bool) *sendgatev1.CanSendResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	resp, err := c.Admission().CanSend(ctx, &sendgatev1.CanSendRequest{SenderIp: ip, RecipientDomain: domain, DryRun: dryRun})
	if err != nil {
		t.Fatalf("CanSend(%s, %s): %v", ip, domain, err)
	}
	return resp
}

// report calls ReportResult through the generated stub.
func report(t *testing.T, c *client.Client, ip, domain string, code uint32, enhanced, reply string) *sendgatev1.ReportResultResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	resp, err := c.Admission().ReportResult(ctx, &sendgatev1.ReportResultRequest{
		SenderIp: ip, RecipientDomain: domain, SmtpCode: code, EnhancedCode: enhanced, Reply: reply,
	})
	if err != nil {
		t.Fatalf("ReportResult(%s, %s, %d): %v", ip, domain, code, err)
	}
	return resp
}

// getState calls GetState.
func getState(t *testing.T, c *client.Client, ip, provider string) *sendgatev1.KeyState {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	resp, err := c.Admin().GetState(ctx, &sendgatev1.GetStateRequest{SenderIp: ip, RecipientDomainOrProvider: provider})
	if err != nil {
		t.Fatalf("GetState(%s, %s): %v", ip, provider, err)
	}
	return resp.GetState()
}

// tierRemaining returns the remaining of the tier named name, and whether
// the tier is there.
func tierRemaining(tiers []*sendgatev1.TierStatus, name string) (uint64, bool) {
	for _, ts := range tiers {
		if ts.GetName() == name {
			return ts.GetRemaining(), true
		}
	}
	return 0, false
}

// skipOrFail skips t, or fails it when the CI environment variable is set:
// in CI every end-to-end test must run.
func skipOrFail(t *testing.T, msg string) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// redisProc is a redis-server a test started (not daemonized, so the test
// owns its process and can kill it).
type redisProc struct {
	addr string
	cmd  *exec.Cmd
	done chan struct{}
}

// startRedis starts redis-server on addr ("" for a free loopback port) with
// extra arguments (none: no persistence), waits until it answers PING (10s at most), and stops it
// when t ends. It skips t (fails it in CI) when redis-server is not
// installed.
func startRedis(t *testing.T, addr string, extra ...string) *redisProc {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		skipOrFail(t, fmt.Sprintf("no redis-server: %v (apt-get install redis-server, or set SENDGATE_TEST_REDIS)", err))
	}
	if addr == "" {
		addr = freeAddr(t)
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	if len(extra) == 0 {
		extra = []string{"--save", "", "--appendonly", "no"}
	}
	args := append([]string{"--port", port, "--bind", "127.0.0.1"}, extra...)
	r := &redisProc{addr: addr, cmd: exec.Command(bin, args...), done: make(chan struct{})}
	var logs syncBuffer
	r.cmd.Stdout, r.cmd.Stderr = &logs, &logs
	if err := r.cmd.Start(); err != nil {
		t.Fatalf("redis-server: %v", err)
	}
	go func() {
		r.cmd.Wait()
		close(r.done)
	}()
	t.Cleanup(r.kill)
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialTimeout: time.Second})
	defer c.Close()
	for deadline := time.Now().Add(10 * time.Second); ; {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := c.Ping(ctx).Err()
		cancel()
		if err == nil {
			return r
		}
		select {
		case <-r.done:
			t.Fatalf("redis-server on %s exited: %s", addr, logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("redis-server on %s does not answer: %v\n%s", addr, err, logs.String())
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// kill stops the server with SIGKILL (no shutdown save) and waits for it.
func (r *redisProc) kill() {
	select {
	case <-r.done:
	default:
		r.cmd.Process.Kill()
		<-r.done
	}
}
