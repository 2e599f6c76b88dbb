package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sendgate/sendgate/internal/auth"
)

// startSecureServe runs "sendgate serve args..." in this process until the test
// ends, and waits until it serves.
func startSecureServe(t *testing.T, args ...string) (logs *syncBuffer) {
	t.Helper()
	logs = &syncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, append([]string{"serve", "--store", "memory", "--no-dns"}, args...), logs, logs)
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(logs.String(), "sendgate serving") {
		select {
		case err := <-done:
			t.Fatalf("serve ended: %v\n%s", err, logs)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve did not start:\n%s", logs)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return logs
}

// secCLI runs a client command in this process and returns its output and
// error.
func secCLI(args ...string) (string, error) {
	var out bytes.Buffer
	err := run(context.Background(), args, &out, &out)
	return out.String(), err
}

func TestServeRefusesNonLoopback(t *testing.T) {
	var stderr bytes.Buffer
	err := run(context.Background(), []string{"serve", "--grpc-addr", "0.0.0.0:0", "--http-addr", "", "--store", "memory", "--no-dns"}, &stderr, &stderr)
	if err == nil || exitCode(err, &stderr) == exitOK {
		t.Fatalf("serve on 0.0.0.0 without TLS or tokens: %v, want a refusal", err)
	}
	for _, s := range []string{"refusing to listen on 0.0.0.0:0 without TLS or tokens", "--tls-cert", "--auth-file", "--insecure"} {
		if !strings.Contains(stderr.String(), s) {
			t.Errorf("the message lacks %q:\n%s", s, stderr.String())
		}
	}
	// The HTTP port counts too.
	err = run(context.Background(), []string{"serve", "--grpc-addr", "127.0.0.1:0", "--http-addr", ":0", "--store", "memory", "--no-dns"}, &stderr, &stderr)
	if err == nil || !strings.Contains(err.Error(), "refusing to listen on :0") {
		t.Fatalf("serve with --http-addr :0: %v", err)
	}
	logs := startSecureServe(t, "--grpc-addr", "0.0.0.0:0", "--http-addr", "", "--insecure")
	if !strings.Contains(logs.String(), "--insecure: no authentication") {
		t.Errorf("no warning for --insecure:\n%s", logs)
	}
}

func TestServeWithTokens(t *testing.T) {
	dir := t.TempDir()
	const alice, mailer = "sgt_alice", "sgt_mailer"
	authFile := filepath.Join(dir, "callers.yaml")
	if err := os.WriteFile(authFile, []byte("tokens:\n"+
		"  - {name: alice, token_sha256: "+auth.HashToken(alice)+", role: admin}\n"+
		"  - {name: mta, token_sha256: "+auth.HashToken(mailer)+", role: mailer, sender_ips: [203.0.113.0/24]}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	logs := startSecureServe(t, "--grpc-addr", addr, "--http-addr", "", "--auth-file", authFile)

	if out, err := secCLI("hold", "203.0.113.5", "qq.com", "--addr", addr, "--note", "ticket 7"); err == nil || !strings.Contains(err.Error(), "Unauthenticated") {
		t.Fatalf("hold without a token: %v %s", err, out)
	}
	if out, err := secCLI("hold", "203.0.113.5", "qq.com", "--addr", addr, "--note", "ticket 7", "--token", mailer); err == nil || !strings.Contains(err.Error(), "PermissionDenied") {
		t.Fatalf("hold by a mailer: %v %s", err, out)
	}
	if out, err := secCLI("check", "198.51.100.1", "qq.com", "--addr", addr, "--token", mailer); err == nil || !strings.Contains(err.Error(), "may not speak for sender IP 198.51.100.1") {
		t.Fatalf("check of another IP by a restricted mailer: %v %s", err, out)
	}
	if out, err := secCLI("hold", "203.0.113.5", "qq.com", "--addr", addr, "--note", "ticket 7", "--token", alice); err != nil {
		t.Fatalf("hold by alice: %v %s", err, out)
	}
	t.Setenv("SENDGATE_TOKEN", alice)
	out, err := secCLI("state", "203.0.113.5", "qq.com", "--addr", addr, "--json")
	if err != nil || !strings.Contains(strings.ReplaceAll(out, " ", ""), `"actor":"alice"`) || !strings.Contains(out, "ticket 7") {
		t.Fatalf("state with $SENDGATE_TOKEN: %v\n%s", err, out)
	}
	if l := logs.String(); !strings.Contains(l, `msg="audit: SetState" actor=alice`) || strings.Contains(l, alice+" ") {
		t.Errorf("audit log:\n%s", l)
	}
}

// TestServeMutualTLS generates certificates with scripts/gen-certs.sh and
// drives a mutual-TLS server with the CLI.
func TestServeMutualTLS(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl not installed")
	}
	dir := t.TempDir()
	if out, err := exec.Command("../../scripts/gen-certs.sh", dir).CombinedOutput(); err != nil {
		t.Fatalf("gen-certs.sh: %v\n%s", err, out)
	}
	authFile := filepath.Join(dir, "callers.yaml")
	if err := os.WriteFile(authFile, []byte("identities:\n"+
		"  - {name: ops-admin, san: spiffe://sendgate.test/admin, role: admin}\n"+
		"  - {name: mta-1, san: spiffe://sendgate.test/mailer, role: mailer}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f := func(name string) string { return filepath.Join(dir, name) }
	addr := freeAddr(t)
	startSecureServe(t, "--grpc-addr", addr, "--http-addr", "", "--auth-file", authFile,
		"--tls-cert", f("server.crt"), "--tls-key", f("server.key"), "--tls-client-ca", f("ca.crt"))
	as := func(who string) []string {
		return []string{"--addr", addr, "--timeout", "2s", "--tls-ca", f("ca.crt"), "--tls-cert", f(who + ".crt"), "--tls-key", f(who + ".key")}
	}
	if out, err := secCLI(append([]string{"hold", "203.0.113.5", "qq.com", "--note", "by cert"}, as("mailer")...)...); err == nil || !strings.Contains(err.Error(), "PermissionDenied") {
		t.Fatalf("hold by the mailer certificate: %v %s", err, out)
	}
	if out, err := secCLI(append([]string{"hold", "203.0.113.5", "qq.com", "--note", "by cert"}, as("admin")...)...); err != nil {
		t.Fatalf("hold by the admin certificate: %v %s", err, out)
	}
	out, err := secCLI(append([]string{"state", "203.0.113.5", "qq.com", "--json"}, as("admin")...)...)
	if err != nil || !strings.Contains(strings.ReplaceAll(out, " ", ""), `"actor":"ops-admin"`) {
		t.Fatalf("state: %v\n%s", err, out)
	}
	if out, err := secCLI("state", "203.0.113.5", "qq.com", "--addr", addr, "--timeout", "2s", "--tls-ca", f("ca.crt")); err == nil {
		t.Fatalf("no client certificate: want a refusal, got\n%s", out)
	}
}
