package main

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	sendgatev1 "github.com/sendgate/sendgate/proto/sendgate/v1"
)

// readiness is whether the service accepts calls: not while it starts or
// shuts down, and not while its store cannot serve. /readyz and the gRPC
// health service both report it, so they always agree.
type readiness struct {
	mu       sync.Mutex
	started  bool
	stopping bool
	storeErr error
	health   *health.Server
	log      *slog.Logger
}

// reason returns why the service is not ready, or "" when it is.
func (r *readiness) reason() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case r.stopping:
		return "shutting down"
	case !r.started:
		return "starting"
	case r.storeErr != nil:
		return "store: " + r.storeErr.Error()
	}
	return ""
}

func (r *readiness) set(fn func()) {
	r.mu.Lock()
	fn()
	r.mu.Unlock()
	if r.health == nil {
		return
	}
	st := healthpb.HealthCheckResponse_SERVING
	if r.reason() != "" {
		st = healthpb.HealthCheckResponse_NOT_SERVING
	}
	r.mu.Lock()
	stopping := r.stopping
	r.mu.Unlock()
	if !stopping { // Shutdown owns the health server from then on
		// The whole server and each service: a probe of any name agrees
		// with /readyz.
		for _, name := range []string{"", sendgatev1.AdmissionService_ServiceDesc.ServiceName, sendgatev1.AdminService_ServiceDesc.ServiceName} {
			r.health.SetServingStatus(name, st)
		}
	}
}

// watchStore checks the store every interval until ctx ends, and logs each
// change of its health once.
func (r *readiness) watchStore(ctx context.Context, interval time.Duration, check func(context.Context) error) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		err := check(ctx)
		r.mu.Lock()
		was := r.storeErr
		r.mu.Unlock()
		if (err == nil) != (was == nil) {
			if err != nil {
				r.log.Error("store not ready", "error", err)
			} else {
				r.log.Info("store ready again")
			}
		}
		r.set(func() { r.storeErr = err })
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// healthHandler serves /healthz (200 while the process runs) and /readyz
// (200 while it accepts calls, 503 with the reason otherwise).
func healthHandler(r *readiness) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if why := r.reason(); why != "" {
			w.WriteHeader(http.StatusServiceUnavailable)
			io.WriteString(w, why+"\n")
			return
		}
		io.WriteString(w, "ready\n")
	})
	return mux
}
