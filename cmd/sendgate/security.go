package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"

	"golang.org/x/net/netutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/sendgate/sendgate/client"
	"github.com/sendgate/sendgate/internal/auth"
	"github.com/sendgate/sendgate/server"
)

// securityOptions are serve's flags about who may call.
type securityOptions struct {
	tlsCert, tlsKey, tlsClientCA string
	authFile                     string
	insecure                     bool
	maxConns                     int
}

// security is how serve authenticates and bounds its callers.
type security struct {
	certs *auth.CertReloader // nil without TLS
	authn *auth.Authenticator
	o     securityOptions
}

// newSecurity loads the TLS files and the auth file, and refuses a
// configuration that would expose an unauthenticated service to the
// network.
func newSecurity(o securityOptions, grpcAddr, httpAddr string, log *slog.Logger) (*security, error) {
	s := &security{o: o}
	if (o.tlsCert == "") != (o.tlsKey == "") {
		return nil, &usageError{cmd: "serve", msg: "serve: --tls-cert and --tls-key go together"}
	}
	if o.tlsClientCA != "" && o.tlsCert == "" {
		return nil, &usageError{cmd: "serve", msg: "serve: --tls-client-ca needs --tls-cert and --tls-key"}
	}
	if o.tlsClientCA != "" && o.authFile == "" {
		return nil, &usageError{cmd: "serve", msg: "serve: --tls-client-ca needs --auth-file, whose identities map client certificates to roles"}
	}
	if o.tlsCert != "" {
		c, err := auth.NewCertReloader(auth.TLSFiles{CertFile: o.tlsCert, KeyFile: o.tlsKey, ClientCAFile: o.tlsClientCA}, 0, nil, log)
		if err != nil {
			return nil, err
		}
		s.certs = c
	}
	if o.authFile != "" {
		a, err := auth.New(o.authFile, log)
		if err != nil {
			return nil, err
		}
		s.authn = a
	}
	if s.certs == nil && s.authn == nil && !o.insecure {
		for _, addr := range []string{grpcAddr, httpAddr} {
			if addr != "" && !isLoopback(addr) {
				return nil, fmt.Errorf("refusing to listen on %s without TLS or tokens: anyone who can reach it could hold or release your senders' mail. "+
					"Give --tls-cert and --tls-key (with --tls-client-ca for client certificates) or --auth-file, "+
					"listen on 127.0.0.1, or pass --insecure if the network itself is trusted", addr)
			}
		}
	}
	if s.authn == nil && s.certs != nil {
		log.Warn("TLS without --auth-file: every caller that reaches the port may call every RPC")
	}
	if o.insecure && s.authn == nil {
		log.Warn("--insecure: no authentication; every caller that reaches the port may call every RPC")
	}
	return s, nil
}

// isLoopback reports whether a listen address binds only loopback: a
// loopback IP or "localhost". An empty host (every interface) is not.
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// grpcOptions are the gRPC server's transport limits, TLS and interceptors.
func (s *security) grpcOptions() []grpc.ServerOption {
	opts := server.GRPCOptions()
	if s.certs != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(s.certs.Config(tls.RequireAndVerifyClientCert, "h2"))))
	}
	if s.authn != nil {
		opts = append(opts, s.authn.ServerOptions()...)
	}
	return opts
}

// actor names who performs an operator action: the token's or
// certificate's name, or server.DefaultActor without authentication.
func (s *security) actor(ctx context.Context) string {
	if n := auth.Actor(ctx); n != "" {
		return n
	}
	return server.DefaultActor
}

// listenGRPC bounds the connections of the gRPC listener.
func (s *security) listenGRPC(lis net.Listener) net.Listener {
	if s.o.maxConns > 0 {
		return netutil.LimitListener(lis, s.o.maxConns)
	}
	return lis
}

// httpServer puts TLS and credentials around the HTTP handler: /healthz and
// /readyz stay open; every other page needs a reader or admin caller when
// an auth file is given.
func (s *security) httpServer(lis net.Listener, hs *http.Server) net.Listener {
	if s.authn != nil {
		hs.Handler = s.authn.HTTP(hs.Handler, "/healthz", "/readyz")
	}
	if s.certs == nil {
		return lis
	}
	hs.TLSConfig = s.certs.Config(tls.VerifyClientCertIfGiven, "h2", "http/1.1")
	return tls.NewListener(lis, hs.TLSConfig)
}

// watch reloads the auth file on SIGHUP and when it changes, until ctx ends.
func (s *security) watch(ctx context.Context) {
	if s.authn == nil {
		return
	}
	go s.authn.Watch(ctx, 0)
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		defer signal.Stop(hup)
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				s.authn.Reload() // logs its own failure
			}
		}
	}()
}

// security returns the client options of the token and TLS flags: TLS when
// any --tls-* flag is given, a token from --token or $SENDGATE_TOKEN.
func (f *clientFlags) security() ([]client.Option, error) {
	var opts []client.Option
	if f.tlsCA != "" || f.tlsCert != "" || f.tlsKey != "" || f.tlsSN != "" {
		cfg, err := auth.ClientTLS(f.tlsCA, f.tlsCert, f.tlsKey, f.tlsSN)
		if err != nil {
			return nil, err
		}
		opts = append(opts, client.WithTLS(cfg))
	}
	tok := f.token
	if tok == "" {
		tok = os.Getenv("SENDGATE_TOKEN")
	}
	if tok != "" {
		opts = append(opts, client.WithToken(tok))
	}
	return opts, nil
}
