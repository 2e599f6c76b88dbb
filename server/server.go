// Package server is sendgate's gRPC adapter: it implements the
// AdmissionService and AdminService of sendgate.v1 over a [limiter.Limiter],
// a provider resolver and a reply classifier.
//
// The package converts between the wire and the core in one place
// (convert.go), validates every input in one place (validate.go) and maps
// errors to gRPC status codes in one place (errors.go). A denial is data: a
// DEFER is a normal CanSend response; gRPC errors are INVALID_ARGUMENT for bad
// input (naming the field by its proto name) and UNAVAILABLE for the
// service's own trouble.
//
// Typical use:
//
//	srv, err := server.New(server.Options{Limiter: l, Resolver: r, Classifier: c})
//	g := grpc.NewServer()
//	srv.Register(g)
//	go g.Serve(lis)
//	...
//	srv.Shutdown(ctx, g) // health NOT_SERVING, then GracefulStop until ctx ends
package server

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	"github.com/sendgate/sendgate/internal/resolve"
	"github.com/sendgate/sendgate/limiter"
	"github.com/sendgate/sendgate/limiter/smtpreply"
	sendgatev1 "github.com/sendgate/sendgate/proto/sendgate/v1"
)

// Resolver maps a canonical recipient domain to its provider. It is
// satisfied by *resolve.Resolver. Both methods must be safe for concurrent
// use; Resolve is on the hot path and must answer quickly (from a cache, or
// within a short DNS timeout).
type Resolver interface {
	// Resolve returns the provider of a canonical domain; it never fails
	// (a domain outside the table is its own provider).
	Resolve(ctx context.Context, domain string) resolve.Result
	// IsProvider reports whether name is a configured provider's name.
	IsProvider(name string) bool
}

// Classifier turns an SMTP reply into a classification. It is satisfied by
// *smtpreply.Classifier and must be safe for concurrent use. An empty
// enhanced code is parsed from text by the classifier.
type Classifier interface {
	Classify(provider string, code uint32, enhanced, text string) smtpreply.Result
}

var (
	_ Resolver   = (*resolve.Resolver)(nil)
	_ Classifier = (*smtpreply.Classifier)(nil)
)

// DefaultActor is the actor recorded for operator actions when
// Options.Actor is nil.
const DefaultActor = "operator"

// Options configure a [Server]. Limiter, Resolver and Classifier are
// required.
type Options struct {
	// Limiter makes every decision and keeps every key's state.
	Limiter *limiter.Limiter
	// Resolver maps recipient domains to providers.
	Resolver Resolver
	// Classifier classifies SMTP replies.
	Classifier Classifier
	// Now is the clock; nil means time.Now. Every RPC reads it once.
	Now func() time.Time
	// Actor names who performs an operator action (SetState), from the
	// call's context; nil means every action is by [DefaultActor]. The
	// authentication layer supplies it later.
	Actor func(ctx context.Context) string
	// Logger receives failures of the store (never request contents beyond
	// the key); nil discards them.
	Logger *slog.Logger
	// Observer is told of every decision, report and operator transition
	// (metrics, transition logs); nil means none.
	Observer Observer
}

// Server implements sendgatev1.AdmissionServiceServer and
// sendgatev1.AdminServiceServer. It is safe for concurrent use. Build it with
// [New].
type Server struct {
	sendgatev1.UnimplementedAdmissionServiceServer
	sendgatev1.UnimplementedAdminServiceServer

	lim      *limiter.Limiter
	resolver Resolver
	classify Classifier
	now      func() time.Time
	actor    func(ctx context.Context) string
	log      *slog.Logger
	health   *health.Server
	obs      Observer // nil: none
}

var (
	_ sendgatev1.AdmissionServiceServer = (*Server)(nil)
	_ sendgatev1.AdminServiceServer     = (*Server)(nil)
)

// New returns a Server over the limiter, resolver and classifier of opts.
// It fails when one of them is missing.
func New(opts Options) (*Server, error) {
	switch {
	case opts.Limiter == nil:
		return nil, errors.New("server: no limiter")
	case opts.Resolver == nil:
		return nil, errors.New("server: no resolver")
	case opts.Classifier == nil:
		return nil, errors.New("server: no classifier")
	}
	s := &Server{
		lim:      opts.Limiter,
		resolver: opts.Resolver,
		classify: opts.Classifier,
		now:      opts.Now,
		actor:    opts.Actor,
		log:      opts.Logger,
		health:   health.NewServer(),
		obs:      opts.Observer,
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.actor == nil {
		s.actor = func(context.Context) string { return DefaultActor }
	}
	if s.log == nil {
		s.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return s, nil
}

// Register registers the AdmissionService, the AdminService, the standard
// health service (grpc.health.v1.Health) and server reflection on g, and
// marks the server and both services SERVING. Call it before g.Serve.
func (s *Server) Register(g *grpc.Server) {
	sendgatev1.RegisterAdmissionServiceServer(g, s)
	sendgatev1.RegisterAdminServiceServer(g, s)
	healthpb.RegisterHealthServer(g, s.health)
	reflection.Register(g)
	for _, name := range []string{"", sendgatev1.AdmissionService_ServiceDesc.ServiceName, sendgatev1.AdminService_ServiceDesc.ServiceName} {
		s.health.SetServingStatus(name, healthpb.HealthCheckResponse_SERVING)
	}
}

// Health returns the health service Register installs, for callers that
// want to change the serving status themselves.
func (s *Server) Health() *health.Server { return s.health }

// Shutdown stops g gracefully: it marks every service NOT_SERVING (so load
// balancers and probes stop sending), then lets in-flight RPCs finish with
// GracefulStop. When ctx ends first it stops g hard and returns ctx's error;
// otherwise it returns nil. Give ctx a deadline (sendgate serve uses 10s).
func (s *Server) Shutdown(ctx context.Context, g *grpc.Server) error {
	s.health.Shutdown()
	done := make(chan struct{})
	go func() {
		g.GracefulStop()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		g.Stop()
		<-done
		return ctx.Err()
	}
}
