package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/sendgate/sendgate/internal/testutil"
	sendgatev1 "github.com/sendgate/sendgate/proto/sendgate/v1"
)

// testConfig narrows QQ to 3 a minute, so that the fourth check defers.
const testConfig = `# plain token buckets (no pacing): these tests take bursts
machine: {burst: 0}
providers:
  tencent:
    tiers: {minute: 3, hour: 100, day: 1000}
`

// syncBuffer collects output written concurrently while the test reads it.
type syncBuffer = testutil.SyncBuffer

func freeAddr(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	return lis.Addr().String()
}

// TestServeAndDrive builds the binary, starts "sendgate serve" on free
// ports, drives it with the CLI, and stops it with SIGTERM.
func TestServeAndDrive(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "sendgate")
	build := exec.Command("go", "build", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	cfgPath := filepath.Join(dir, "sendgate.yaml")
	if err := os.WriteFile(cfgPath, []byte(testConfig), 0o644); err != nil {
		t.Fatal(err)
	}
	grpcAddr, httpAddr := freeAddr(t), freeAddr(t)
	var logs syncBuffer
	srv := exec.Command(bin, "serve", "--grpc-addr", grpcAddr, "--http-addr", httpAddr, "--config", cfgPath, "--no-dns", "--log-format", "json", "--data-dir", filepath.Join(dir, "data"))
	srv.Stdout, srv.Stderr = &logs, &logs
	// Without GOGC and GOMEMLIMIT, as on a newcomer's machine: the heap
	// floor is on (checked below).
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "GOGC=") && !strings.HasPrefix(kv, "GOMEMLIMIT=") {
			srv.Env = append(srv.Env, kv)
		}
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{}) // closed when serve has exited, with waitErr set
	var waitErr error
	go func() {
		waitErr = srv.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		select {
		case <-exited:
		default:
			srv.Process.Kill()
			<-exited
		}
	})

	// Wait for readiness.
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := http.Get("http://" + httpAddr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		select {
		case <-exited:
			t.Fatalf("serve exited early: %v\n%s", waitErr, logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("not ready after 15s:\n%s", logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}

	// The garbage collector's heap floor (--gc-heap-floor, 128 MiB) set
	// GOGC far above 100 for this small heap; the Go runtime's own metric
	// says so on /metrics.
	if gogc := scrapeGauge(t, httpAddr, "go_config_gogc_percent"); gogc <= 100 {
		t.Errorf("go_config_gogc_percent %v, want above 100 (the heap floor is off)", gogc)
	}

	// sg runs the CLI against the server and returns its stdout, stderr and
	// exit code.
	sg := func(args ...string) (string, string, int) {
		t.Helper()
		cmd := exec.Command(bin, append(args, "--addr", grpcAddr)...)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		code := 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		return stdout.String(), stderr.String(), code
	}
	parse := func(out string, m proto.Message) {
		t.Helper()
		if err := protojson.Unmarshal([]byte(out), m); err != nil {
			t.Fatalf("not protojson: %v\n%s", err, out)
		}
	}
	const ip = "203.0.113.7"

	steps := []struct {
		args []string
		code int
		want []string // substrings of stdout
	}{
		{[]string{"check", ip, "qq.com"}, 0, []string{"verdict:", "ALLOW", "tencent", "minute"}},
		{[]string{"check", ip, "user@QQ.com", "--count", "2"}, 0, []string{"ALLOW"}},
		{[]string{"check", ip, "qq.com", "--dry-run"}, 3, []string{"DEFER", "RATE_LIMITED", "minute tier: 0 of 3 left"}},
		{[]string{"check", ip, "qq.com"}, 3, []string{"DEFER", "retry after:"}},
		{[]string{"report", ip, "qq.com", "0", "--not-attempted", "--count", "1"}, 0, []string{"NOT_ATTEMPTED"}},
		{[]string{"check", ip, "qq.com"}, 0, []string{"ALLOW"}},
		{[]string{"report", ip, "qq.com", "550", "Ip", "frequency", "limited"}, 0, []string{"IP_BLOCKED", "tencent/ip-frequency-limited", "BLOCKED (changed by this report)"}},
		{[]string{"check", ip, "foxmail.com"}, 3, []string{"BLOCKED", "blocked until", "by tencent/ip-frequency-limited"}},
		{[]string{"state", ip, "qq.com"}, 0, []string{"state:        BLOCKED", "last reply:", "History, newest first:", "HEALTHY -> BLOCKED"}},
		{[]string{"list"}, 0, []string{ip, "tencent", "BLOCKED"}},
		{[]string{"hold", ip, "tencent", "--note", "investigating"}, 0, []string{"state:        HELD", "investigating", "released by an operator"}},
		{[]string{"check", ip, "qq.com"}, 3, []string{"HELD", "held until released: investigating"}},
		{[]string{"release", ip, "tencent", "--note", "whitelisted"}, 0, []string{"state:        HEALTHY", "whitelisted"}},
		{[]string{"list"}, 0, []string{"no keys outside HEALTHY"}},
		{[]string{"resolve", "x@Foxmail.com"}, 0, []string{"provider:  tencent", "via:       table"}},
		{[]string{"classify", "qq.com", "550", "Ip frequency limited"}, 0, []string{"IP_BLOCKED", "tencent/ip-frequency-limited"}},
		{[]string{"reset", ip, "tencent"}, 0, []string{"HEALTHY", "strikes:      0"}},
		{[]string{"check", "999.1.1.1", "qq.com"}, 1, nil},
		{[]string{"check", ip}, 2, nil},
		{[]string{"check", ip, "qq.com", "--count", "x"}, 2, nil},
	}
	for _, s := range steps {
		out, errOut, code := sg(s.args...)
		if code != s.code {
			t.Errorf("sendgate %s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", strings.Join(s.args, " "), code, s.code, out, errOut)
			continue
		}
		for _, w := range s.want {
			if !strings.Contains(out, w) {
				t.Errorf("sendgate %s: output lacks %q:\n%s", strings.Join(s.args, " "), w, out)
			}
		}
	}
	if _, errOut, _ := sg("check", "999.1.1.1", "qq.com"); !strings.Contains(errOut, `sender_ip: not an IP address: "999.1.1.1"`) {
		t.Errorf("bad IP: stderr %q", errOut)
	}

	// --json for scripts.
	out, _, code := sg("check", ip, "qq.com", "--json", "--dry-run")
	var cs sendgatev1.CanSendResponse
	parse(out, &cs)
	if code != 0 || cs.GetVerdict() != sendgatev1.Verdict_VERDICT_ALLOW || cs.GetProvider() != "tencent" || len(cs.GetTiers()) != 3 {
		t.Errorf("check --json: exit %d, %v", code, &cs)
	}
	out, _, _ = sg("hold", ip, "qq.com", "--until", "1h", "--json")
	var ss sendgatev1.SetStateResponse
	parse(out, &ss)
	if ss.GetState().GetState() != sendgatev1.ReputationState_REPUTATION_STATE_HELD || ss.GetState().GetUntil() == nil {
		t.Errorf("hold --json: %v", &ss)
	}
	out, _, code = sg("check", ip, "qq.com", "--json")
	parse(out, &cs)
	if code != 3 || cs.GetReason() != sendgatev1.DeferReason_DEFER_REASON_HELD || cs.GetRetryAfter().AsDuration() <= 0 {
		t.Errorf("check --json while held: exit %d, %v", code, &cs)
	}
	out, _, _ = sg("state", ip, "tencent", "--json")
	var gs sendgatev1.GetStateResponse
	parse(out, &gs)
	if st := gs.GetState(); st.GetState() != sendgatev1.ReputationState_REPUTATION_STATE_HELD || len(st.GetHistory()) < 2 ||
		st.GetHistory()[0].GetTo() != sendgatev1.ReputationState_REPUTATION_STATE_HELD {
		t.Errorf("state --json: %v", st)
	}
	out, _, _ = sg("list", "--state", "held", "--json")
	var ls sendgatev1.ListStatesResponse
	parse(out, &ls)
	if len(ls.GetStates()) != 1 || ls.GetStates()[0].GetSenderIp() != ip {
		t.Errorf("list --json: %v", &ls)
	}

	// SIGTERM: a clean exit, code 0, within the deadline.
	if err := srv.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
		if waitErr != nil {
			t.Errorf("serve after SIGTERM: %v\n%s", waitErr, logs.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("serve still running 15s after SIGTERM\n%s", logs.String())
	}
	for _, w := range []string{`"msg":"sendgate serving"`, `"msg":"transition"`, `"msg":"shutting down"`, `"msg":"stopped"`} {
		if !strings.Contains(logs.String(), w) {
			t.Errorf("log lacks %s:\n%s", w, logs.String())
		}
	}
}

// TestRunInProcess covers what needs no server: help, usage errors and
// policy.
func TestRunInProcess(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "sendgate.yaml")
	if err := os.WriteFile(cfgPath, []byte(testConfig), 0o644); err != nil {
		t.Fatal(err)
	}
	badPath := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(badPath, []byte("providers:\n  tencent:\n    tiers: {minute: abc}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		args        []string
		code        int
		stdout      []string
		stderr      []string
		notInStdout []string
	}{
		{args: []string{"--help"}, code: 0, stdout: []string{"Usage: sendgate COMMAND", "serve", "check", "Exit codes"}},
		{args: []string{"help", "hold"}, code: 0, stdout: []string{"Usage: sendgate hold IP PROVIDER", "--until", "Example:"}},
		{args: []string{}, code: 2, stderr: []string{"no command given"}},
		{args: []string{"frobnicate"}, code: 2, stderr: []string{`unknown command "frobnicate"`}},
		{args: []string{"check", "--help"}, code: 0, stdout: []string{"exit 3", "--dry-run", "--count", "Example:"}},
		{args: []string{"check", "--bogus"}, code: 2, stderr: []string{"flag provided but not defined: -bogus", "sendgate check --help"}},
		{args: []string{"serve", "--store", "redis", "--redis-addr", "127.0.0.1:1", "--redis-timeout", "200ms", "--grpc-addr", "127.0.0.1:0", "--http-addr", ""}, code: 1, stderr: []string{"redis 127.0.0.1:1", "store unavailable"}},
		{args: []string{"serve", "--store", "sqlite"}, code: 2, stderr: []string{`--store "sqlite": want embedded, memory or redis`}},
		{args: []string{"serve", "--log-format", "xml"}, code: 2, stderr: []string{`--log-format "xml"`}},
		{args: []string{"serve", "--gc-heap-floor", "-1"}, code: 2, stderr: []string{"--gc-heap-floor -1: want 0 to"}},
		{args: []string{"serve", "--store", "redis", "--redis-idle-ttl", "-1h", "--grpc-addr", "127.0.0.1:0", "--http-addr", ""}, code: 2, stderr: []string{"--redis-idle-ttl -1h0m0s: want 0"}},
		{args: []string{"serve", "--config", badPath}, code: 1, stderr: []string{"bad.yaml:3"}},
		{args: []string{"policy"}, code: 0, stdout: []string{"tencent:", "qq.com"}},
		{args: []string{"policy", "--config", cfgPath}, code: 0, stdout: []string{"minute: 3"}},
		{args: []string{"hold", "1.2.3.4", "tencent", "--until", "yesterday"}, code: 2, stderr: []string{`--until "yesterday"`}},
		{args: []string{"list", "--state", "sleepy"}, code: 2, stderr: []string{`--state "sleepy"`}},
	}
	for _, c := range cases {
		var stdout, stderr bytes.Buffer
		code := exitCode(run(context.Background(), c.args, &stdout, &stderr), &stderr)
		name := "sendgate " + strings.Join(c.args, " ")
		if code != c.code {
			t.Errorf("%s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", name, code, c.code, stdout.String(), stderr.String())
		}
		for _, w := range c.stdout {
			if !strings.Contains(stdout.String(), w) {
				t.Errorf("%s: stdout lacks %q:\n%s", name, w, stdout.String())
			}
		}
		for _, w := range c.stderr {
			if !strings.Contains(stderr.String(), w) {
				t.Errorf("%s: stderr lacks %q:\n%s", name, w, stderr.String())
			}
		}
	}
}

func TestParseInterleaved(t *testing.T) {
	t.Parallel()
	cases := []struct {
		args  []string
		pos   string
		count uint
		dry   bool
	}{
		{[]string{"1.2.3.4", "qq.com"}, "1.2.3.4 qq.com", 1, false},
		{[]string{"--count", "5", "1.2.3.4", "qq.com"}, "1.2.3.4 qq.com", 5, false},
		{[]string{"1.2.3.4", "--dry-run", "qq.com", "--count=3"}, "1.2.3.4 qq.com", 3, true},
		{[]string{"1.2.3.4", "--", "--count", "x"}, "1.2.3.4 --count x", 1, false},
	}
	for _, c := range cases {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		count := fs.Uint("count", 1, "")
		dry := fs.Bool("dry-run", false, "")
		pos, err := parseInterleaved(fs, c.args)
		if err != nil || strings.Join(pos, " ") != c.pos || *count != c.count || *dry != c.dry {
			t.Errorf("%v: %q count %d dry %v err %v", c.args, pos, *count, *dry, err)
		}
	}
}

func TestHumanAndUntil(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		d    time.Duration
		want string
	}{
		{0, "0s"}, {250 * time.Millisecond, "250ms"}, {4200 * time.Millisecond, "4.2s"}, {4*time.Minute + 12*time.Second, "4m12s"},
		{4*time.Minute + 11*time.Second + time.Millisecond, "4m12s"}, {2 * time.Hour, "2h"}, {2*time.Hour + 5*time.Minute, "2h5m"},
		{26 * time.Hour, "1d2h"}, {3*24*time.Hour + 4*time.Hour + 5*time.Minute, "3d4h"},
	} {
		if got := human(c.d); got != c.want {
			t.Errorf("human(%v) = %q, want %q", c.d, got, c.want)
		}
	}
	now := time.Date(2026, 11, 27, 8, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		in   string
		want time.Time
		ok   bool
	}{
		{"2h", now.Add(2 * time.Hour), true},
		{"1d12h", now.Add(36 * time.Hour), true},
		{"2026-11-28T00:00:00+08:00", time.Date(2026, 11, 27, 16, 0, 0, 0, time.UTC), true},
		{"-1h", time.Time{}, false},
		{"soon", time.Time{}, false},
	} {
		got, err := parseUntil(c.in, now)
		if (err == nil) != c.ok || c.ok && !got.Equal(c.want) {
			t.Errorf("parseUntil(%q) = %v, %v", c.in, got, err)
		}
	}
}

// scrapeGauge returns the value of the unlabelled metric name on the
// /metrics page at httpAddr.
func scrapeGauge(t *testing.T, httpAddr, name string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + httpAddr + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read /metrics: %v", err)
	}
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			return f
		}
	}
	t.Fatalf("/metrics has no %s", name)
	return 0
}
