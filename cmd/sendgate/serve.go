package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc"

	"github.com/sendgate/sendgate/internal/boltstore"
	"github.com/sendgate/sendgate/internal/config"
	"github.com/sendgate/sendgate/internal/failover"
	"github.com/sendgate/sendgate/internal/gctune"
	"github.com/sendgate/sendgate/internal/redisstore"
	"github.com/sendgate/sendgate/internal/resolve"
	"github.com/sendgate/sendgate/internal/telemetry"
	"github.com/sendgate/sendgate/limiter"
	"github.com/sendgate/sendgate/limiter/memstore"
	"github.com/sendgate/sendgate/server"
)

// shutdownTimeout bounds the graceful part of a shutdown; in-flight calls
// still running then are cut off.
const shutdownTimeout = 10 * time.Second

func serveCommand() *command {
	return &command{
		name:    "serve",
		summary: "run the sendgate gRPC service (and its HTTP health endpoints)",
		help: `Serves the AdmissionService and AdminService of sendgate.v1, the standard gRPC
health service and server reflection on --grpc-addr, and /healthz (the
process is up) and /readyz (it accepts calls) on --http-addr.

The policy is the built-in one, or the built-in one overridden and extended by
the YAML file --config names ('sendgate policy --config FILE' prints the
result). A bad file is refused at start with the file, line and reason.

SIGINT or SIGTERM shuts down gracefully: health and /readyz turn NOT_SERVING,
calls in flight finish (for at most 10s), then the process exits 0.`,
		example: `  sendgate serve
  sendgate serve --config /etc/sendgate.yaml --grpc-addr 0.0.0.0:7878 --log-format json`,
		maxArgs: 0,
		define: func(fs *flag.FlagSet) runner {
			var o serveOptions
			fs.StringVar(&o.grpcAddr, "grpc-addr", "127.0.0.1:7878", "listen `address` of the gRPC service")
			fs.StringVar(&o.httpAddr, "http-addr", "127.0.0.1:7879", "listen `address` of /healthz and /readyz (empty: none)")
			fs.StringVar(&o.configPath, "config", "", "policy `file` (YAML) over the built-in policy; empty: the built-in policy")
			fs.StringVar(&o.store, "store", "embedded", "where key state lives: embedded (a local file under --data-dir), memory (lost at exit) or redis (shared by replicas)")
			fs.StringVar(&o.dataDir, "data-dir", "./sendgate-data", "`directory` of the embedded store's file (sendgate.db)")
			fs.DurationVar(&o.flushInterval, "flush-interval", time.Second, "embedded store: how often tier consumption is written; a crash loses at most this much")
			fs.StringVar(&o.redisAddr, "redis-addr", "127.0.0.1:6379", "redis store: `addresses`, comma-separated (several, or one Cluster node: Cluster is detected)")
			fs.BoolVar(&o.redisCluster, "redis-cluster", false, "redis store: force Cluster mode")
			fs.StringVar(&o.redisPrefix, "redis-prefix", "sg:", "redis store: key `prefix`")
			fs.StringVar(&o.redisUser, "redis-username", "", "redis store: ACL user (the password comes from $SENDGATE_REDIS_PASSWORD)")
			fs.BoolVar(&o.redisTLS, "redis-tls", false, "redis store: connect with TLS (system roots)")
			fs.DurationVar(&o.redisTimeout, "redis-timeout", 500*time.Millisecond, "redis store: longest wait for one Redis call")
			fs.DurationVar(&o.redisIdleTTL, "redis-idle-ttl", redisstore.DefaultIdleTTL, "redis store: Redis deletes a key this long after its last write; HELD keys and keys that need remediation are kept (0: keep every key)")
			fs.BoolVar(&o.failOpen, "redis-fail-open", false, "redis store: while Redis is unreachable, decide from a local memory store at --fallback-share of every limit instead of answering DEFER (fail closed)")
			fs.Float64Var(&o.fallbackShare, "fallback-share", 0.5, "redis store, fail-open: share of every tier limit the local fallback allows")
			fs.StringVar(&o.logFormat, "log-format", "text", "log format: text or json")
			fs.StringVar(&o.logLevel, "log-level", "info", "least log level: debug, info, warn or error")
			fs.BoolVar(&o.noDNS, "no-dns", false, "resolve providers from the table only, without MX lookups")
			fs.StringVar(&o.sec.tlsCert, "tls-cert", "", "TLS certificate `file` (PEM chain) for the gRPC and HTTP ports; reloaded when it changes")
			fs.StringVar(&o.sec.tlsKey, "tls-key", "", "TLS private key `file` (PEM) of --tls-cert")
			fs.StringVar(&o.sec.tlsClientCA, "tls-client-ca", "", "CA bundle `file`: require gRPC callers to present a client certificate it signed (mutual TLS; needs --auth-file)")
			fs.StringVar(&o.sec.authFile, "auth-file", "", "callers `file` (YAML): hashed tokens and certificate identities with their roles; reloaded on SIGHUP and when it changes")
			fs.BoolVar(&o.sec.insecure, "insecure", false, "allow listening on a non-loopback address without TLS or an auth file")
			fs.IntVar(&o.sec.maxConns, "max-conns", 4096, "most gRPC connections open at once (0: no limit)")
			fs.IntVar(&o.gcHeapFloor, "gc-heap-floor", gctune.DefaultFloor>>20, "least heap goal of the Go garbage collector, in `MiB`: fewer collections under load for that much memory (0: GOGC's default; ignored when GOGC or GOMEMLIMIT is set)")
			return func(inv *invocation) error { return serve(inv, o) }
		},
	}
}

type serveOptions struct {
	grpcAddr, httpAddr  string
	configPath          string
	store               string
	logFormat, logLevel string
	noDNS               bool
	sec                 securityOptions

	dataDir       string
	flushInterval time.Duration

	redisAddr, redisPrefix, redisUser string
	redisCluster, redisTLS, failOpen  bool
	redisTimeout, redisIdleTTL        time.Duration
	fallbackShare                     float64

	gcHeapFloor int // MiB
}

// newLogger returns the serve log, on w.
func newLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, &usageError{cmd: "serve", msg: fmt.Sprintf("serve: --log-level %q: want debug, info, warn or error", level)}
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text": // lines written inside a call carry its trace_id and span_id
		return slog.New(telemetry.NewTraceHandler(slog.NewTextHandler(w, opts))), nil
	case "json":
		return slog.New(telemetry.NewTraceHandler(slog.NewJSONHandler(w, opts))), nil
	}
	return nil, &usageError{cmd: "serve", msg: fmt.Sprintf("serve: --log-format %q: want text or json", format)}
}

// loadConfig returns the policy of path, or the built-in one when path is
// empty.
func loadConfig(path string) (*config.Config, error) {
	if path == "" {
		return config.Builtin()
	}
	return config.Load(path)
}

// openStore opens the store o names. It is the one place that knows the
// kinds of store.
func openStore(ctx context.Context, o serveOptions, pol *limiter.Policy, log *slog.Logger) (limiter.Store, error) {
	switch o.store {
	case "memory":
		return memstore.New(memstore.Options{Policy: pol.For}), nil
	case "embedded":
		if err := os.MkdirAll(o.dataDir, 0o700); err != nil {
			return nil, fmt.Errorf("data directory: %w", err)
		}
		return boltstore.Open(boltstore.DefaultPath(o.dataDir), boltstore.Options{
			Policy: pol.For, FlushInterval: o.flushInterval, Logger: log,
		})
	case "redis":
		if o.redisIdleTTL < 0 {
			return nil, &usageError{cmd: "serve", msg: fmt.Sprintf("serve: --redis-idle-ttl %v: want 0 (keep every key) or a positive duration", o.redisIdleTTL)}
		}
		ro := redisstore.Options{
			Addrs:    splitList(o.redisAddr),
			Cluster:  o.redisCluster,
			Prefix:   o.redisPrefix,
			Username: o.redisUser,
			Password: os.Getenv("SENDGATE_REDIS_PASSWORD"),
			Timeout:  o.redisTimeout,
			IdleTTL:  o.redisIdleTTL,
		}
		if o.redisIdleTTL == 0 {
			ro.IdleTTL = -1 // keep every key
		}
		if o.redisTLS {
			ro.TLS = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		rs, err := redisstore.New(ctx, ro)
		if err != nil {
			return nil, fmt.Errorf("redis %s: %w", o.redisAddr, err)
		}
		fo := failover.Options{Mode: failover.Closed}
		if o.failOpen {
			fo = failover.Options{Mode: failover.Open, Share: o.fallbackShare, Fallback: memstore.New(memstore.Options{Policy: pol.For})}
		}
		return failover.New(rs, fo)
	}
	return nil, &usageError{cmd: "serve", msg: fmt.Sprintf("serve: --store %q: want embedded, memory or redis", o.store)}
}

// splitList splits a comma-separated flag value, dropping empty items.
func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// storeHealth reports whether the store can serve: an embedded store whose
// writes fail, or a Redis that does not answer, is not ready.
func storeHealth(ctx context.Context, st limiter.Store) error {
	switch h := st.(type) {
	case interface{ Healthy() error }:
		return h.Healthy()
	case interface{ Ping(context.Context) error }:
		ctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		return h.Ping(ctx)
	}
	return nil
}

// lookuper returns the MX lookups of provider resolution: nil with --no-dns,
// the DNS server the configuration names, or the system resolver.
func lookuper(dns config.DNSConfig, noDNS bool) resolve.MXLookuper {
	switch {
	case noDNS:
		return nil
	case dns.Server != "":
		return &resolve.DNSClient{Server: dns.Server}
	}
	return &net.Resolver{}
}

func serve(inv *invocation, o serveOptions) error {
	log, err := newLogger(inv.stderr, o.logFormat, o.logLevel)
	if err != nil {
		return err
	}
	sec, err := newSecurity(o.sec, o.grpcAddr, o.httpAddr, log)
	if err != nil {
		return err
	}
	if o.gcHeapFloor < 0 || o.gcHeapFloor > 1<<20 {
		return &usageError{cmd: "serve", msg: fmt.Sprintf("serve: --gc-heap-floor %d: want 0 to %d MiB", o.gcHeapFloor, 1<<20)}
	}
	if v := gctune.Overridden(); v != "" && o.gcHeapFloor > 0 {
		log.Info("gc heap floor off: the environment sets " + v)
	} else if o.gcHeapFloor > 0 {
		defer gctune.Start(uint64(o.gcHeapFloor)<<20, gctune.DefaultInterval)()
		log.Debug("gc heap floor", "mib", o.gcHeapFloor)
	}
	cfg, err := loadConfig(o.configPath)
	if err != nil {
		return err
	}
	res, err := resolve.New(cfg.Providers, lookuper(cfg.DNS, o.noDNS), resolve.Options{
		Timeout:     cfg.DNS.Timeout,
		MinTTL:      cfg.DNS.MinTTL,
		MaxTTL:      cfg.DNS.MaxTTL,
		NegativeTTL: cfg.DNS.NegativeTTL,
	})
	if err != nil {
		return fmt.Errorf("provider table: %w", err)
	}
	cls, err := cfg.Classifier()
	if err != nil {
		return fmt.Errorf("reply rules: %w", err)
	}
	start := time.Now()
	store, err := openStore(inv.ctx, o, cfg.Policy, log)
	if err != nil {
		return err
	}
	log.Info("store open", "store", o.store, "took", time.Since(start).Round(time.Millisecond).String())
	defer store.Close()
	tel, err := startTelemetry(inv.ctx, log, res.IsProvider)
	if err != nil {
		return err
	}
	measured, err := tel.instrument(store)
	if err != nil {
		return err
	}
	// Transitions are logged (once, with the call's trace) and counted by
	// the server's Observer, which sees every transition the hook would.
	lim := limiter.New(measured, cfg.Policy, limiter.Options{})
	if err := tel.gauges(lim, store, res); err != nil {
		return err
	}
	srv, err := server.New(server.Options{Limiter: lim, Resolver: res, Classifier: cls, Logger: log, Actor: sec.actor, Observer: tel.obs})
	if err != nil {
		return err
	}

	glis, err := net.Listen("tcp", o.grpcAddr)
	if err != nil {
		return fmt.Errorf("grpc listener: %w", err)
	}
	glis = sec.listenGRPC(glis)
	telOpts, err := tel.grpcOptions()
	if err != nil {
		glis.Close()
		return err
	}
	g := grpc.NewServer(append(sec.grpcOptions(), telOpts...)...)
	srv.Register(g)

	ready := &readiness{health: srv.Health(), log: log}
	wctx, stopWatch := context.WithCancel(inv.ctx)
	defer stopWatch()
	var hsrv *http.Server
	var hlis net.Listener
	if o.httpAddr != "" {
		hlis, err = net.Listen("tcp", o.httpAddr)
		if err != nil {
			glis.Close()
			return fmt.Errorf("http listener: %w", err)
		}
		hsrv = &http.Server{Handler: tel.handler(healthHandler(ready)), ReadHeaderTimeout: 5 * time.Second}
		hlis = sec.httpServer(hlis, hsrv)
	}

	errc := make(chan error, 2)
	go func() { errc <- g.Serve(glis) }()
	if hsrv != nil {
		go func() {
			if err := hsrv.Serve(hlis); !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("http: %w", err)
			}
		}()
	}
	ready.set(func() { ready.started = true })
	sec.watch(wctx)
	go ready.watchStore(wctx, 2*time.Second, func(ctx context.Context) error { return storeHealth(ctx, store) })
	attrs := []any{"grpc", glis.Addr().String(), "store", o.store, "config", configName(o.configPath),
		"providers", len(cfg.Providers), "rules", len(cfg.Rules)}
	if hlis != nil {
		attrs = append(attrs, "http", hlis.Addr().String())
	}
	log.Info("sendgate serving", attrs...)

	var serveErr error
	select {
	case <-inv.ctx.Done():
		log.Info("shutting down", "deadline", shutdownTimeout.String())
	case serveErr = <-errc:
		log.Error("server failed, shutting down", "error", serveErr)
	}
	stopWatch()
	ready.set(func() { ready.stopping = true })
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx, g); err != nil {
		log.Warn("graceful shutdown timed out; calls in flight were cut off", "error", err)
	}
	if hsrv != nil {
		if err := hsrv.Shutdown(sctx); err != nil {
			hsrv.Close()
		}
	}
	if err := store.Close(); err != nil {
		log.Warn("closing the store", "error", err)
	}
	tel.shutdown(sctx)
	if serveErr != nil {
		return serveErr
	}
	log.Info("stopped")
	return nil
}

func configName(path string) string {
	if path == "" {
		return "built-in"
	}
	return path
}

// policyCommand prints the effective policy; it needs no server.
func policyCommand() *command {
	return &command{
		name:    "policy",
		summary: "print the effective policy as YAML (no server needed)",
		help: `Prints the built-in policy, or the built-in policy overridden and extended by
--config, in the configuration file format: providers, tiers, state machine
parameters, reply rules and DNS settings. The output loads again as a file.
A bad file is refused with the file, line and reason.`,
		example: `  sendgate policy
  sendgate policy --config /etc/sendgate.yaml > effective.yaml`,
		maxArgs: 0,
		define: func(fs *flag.FlagSet) runner {
			path := fs.String("config", "", "policy `file` (YAML) over the built-in policy")
			return func(inv *invocation) error {
				cfg, err := loadConfig(*path)
				if err != nil {
					return err
				}
				out, err := cfg.YAML()
				if err != nil {
					return fmt.Errorf("print policy: %w", err)
				}
				_, err = inv.stdout.Write(out)
				return err
			}
		},
	}
}
