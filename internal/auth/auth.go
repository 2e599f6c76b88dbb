package auth

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/sendgate/sendgate/internal/normalize"
	sendgatev1 "github.com/sendgate/sendgate/proto/sendgate/v1"
)

// access is what a method needs.
type access uint8

const (
	accessAdmin  access = iota // admin only: SetState and any method not listed
	accessOpen                 // no credentials: health, reflection
	accessMailer               // mailer or admin: the AdmissionService
	accessRead                 // reader or admin: read-only AdminService RPCs
)

// methodAccess returns what the gRPC method (full name) needs. A method it
// does not know needs admin, so that a new RPC is closed until listed here.
func methodAccess(method string) access {
	switch method {
	case sendgatev1.AdmissionService_CanSend_FullMethodName,
		sendgatev1.AdmissionService_CanSendBatch_FullMethodName,
		sendgatev1.AdmissionService_ReportResult_FullMethodName,
		sendgatev1.AdmissionService_ReportResultBatch_FullMethodName:
		return accessMailer
	case sendgatev1.AdminService_GetState_FullMethodName,
		sendgatev1.AdminService_ListStates_FullMethodName,
		sendgatev1.AdminService_ResolveProvider_FullMethodName,
		sendgatev1.AdminService_ClassifyReply_FullMethodName:
		return accessRead
	}
	if strings.HasPrefix(method, "/grpc.health.v1.Health/") || strings.HasPrefix(method, "/grpc.reflection.") {
		return accessOpen
	}
	return accessAdmin
}

// allows reports whether role may call a method that needs a.
func (a access) allows(r Role) bool {
	switch a {
	case accessOpen:
		return true
	case accessMailer:
		return r == RoleMailer || r == RoleAdmin
	case accessRead:
		return r == RoleReader || r == RoleAdmin
	}
	return r == RoleAdmin
}

func (a access) needs() string {
	switch a {
	case accessMailer:
		return "mailer or admin"
	case accessRead:
		return "reader or admin"
	}
	return "admin"
}

// DefaultCheckEvery is how often [Authenticator.Watch] looks at the file
// when no interval is given.
const DefaultCheckEvery = 5 * time.Second

// Authenticator enforces a callers file: it authenticates each call by its
// bearer token or verified client certificate, checks the caller's role and
// sender IPs, and records the caller in the call's context ([Actor]). It is
// safe for concurrent use; [Authenticator.Reload] swaps the file atomically.
type Authenticator struct {
	path string
	log  *slog.Logger
	file atomic.Pointer[File]

	mu    sync.Mutex // guards stamp
	stamp fileStamp
}

// fileStamp identifies a version of a file.
type fileStamp struct {
	mod  time.Time
	size int64
}

func stampOf(path string) (fileStamp, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{}, err
	}
	return fileStamp{mod: fi.ModTime(), size: fi.Size()}, nil
}

// New loads the callers file at path; log (nil: discard) receives refusals,
// reloads and the audit of operator actions.
func New(path string, log *slog.Logger) (*Authenticator, error) {
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	a := &Authenticator{path: path, log: log}
	if err := a.Reload(); err != nil {
		return nil, err
	}
	return a, nil
}

// NewFromFile returns an Authenticator over an already parsed file, which
// [Authenticator.Reload] cannot refresh. For tests and embedding.
func NewFromFile(f *File, log *slog.Logger) *Authenticator {
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	a := &Authenticator{log: log}
	a.file.Store(f)
	return a
}

// Reload reads the file again. On an error the previous file stays in force
// and the error is returned (and logged).
func (a *Authenticator) Reload() error {
	if a.path == "" {
		return nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	st, _ := stampOf(a.path)
	f, err := Load(a.path)
	if err != nil {
		if a.file.Load() != nil {
			a.log.Error("auth file not reloaded; the previous one stays in force", "error", err)
		}
		return err
	}
	old := a.file.Swap(f)
	a.stamp = st
	if old != nil {
		a.log.Info("auth file reloaded", "path", a.path, "tokens", len(f.Tokens), "identities", len(f.Identities))
	}
	return nil
}

// Watch reloads the file whenever its modification time or size changes,
// looking every interval (0: [DefaultCheckEvery]) until ctx ends.
func (a *Authenticator) Watch(ctx context.Context, interval time.Duration) {
	if interval <= 0 {
		interval = DefaultCheckEvery
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		st, err := stampOf(a.path)
		a.mu.Lock()
		changed := err == nil && st != a.stamp
		a.mu.Unlock()
		if changed {
			a.Reload() // logs its own failure
		}
	}
}

// principalKey is the context key of the caller.
type principalKey struct{}

// FromContext returns the caller an Authenticator admitted, if any.
func FromContext(ctx context.Context) (*Principal, bool) {
	p, ok := ctx.Value(principalKey{}).(*Principal)
	return p, ok
}

// Actor returns the name of the caller an Authenticator admitted, or ""
// (no authentication). It fits server.Options.Actor with a fallback.
func Actor(ctx context.Context) string {
	if p, ok := FromContext(ctx); ok {
		return p.Name
	}
	return ""
}

// credentialsOf are what a call presented.
type credentialsOf struct {
	authz   []string          // authorization header values
	cert    *x509.Certificate // the verified client certificate, or nil
	peer    string            // the remote address, for the log
	hasCert bool              // a certificate was presented but not verified
}

// refusal is a denied call: its code and the message the caller gets.
type refusal struct {
	code codes.Code
	msg  string
	who  string // logged: the token's name or hash prefix, or the certificate identity
}

// authenticate finds the caller of creds. A token, when present, wins over
// a certificate.
func (a *Authenticator) authenticate(c credentialsOf) (*Principal, *refusal) {
	f := a.file.Load()
	if len(c.authz) > 0 {
		tok, ok := bearerToken(c.authz[0])
		if !ok || len(c.authz) > 1 {
			return nil, &refusal{codes.Unauthenticated, `malformed authorization metadata: want one "Bearer <token>"`, ""}
		}
		sum := sha256.Sum256([]byte(tok))
		prefix := hex.EncodeToString(sum[:4])
		var found *Token
		for i := range f.Tokens {
			// Compare against every entry, without an early exit.
			if subtle.ConstantTimeCompare(sum[:], f.Tokens[i].Hash[:]) == 1 {
				found = &f.Tokens[i]
			}
		}
		if found == nil {
			return nil, &refusal{codes.Unauthenticated, "unknown token", "token sha256:" + prefix}
		}
		return &Principal{Name: found.Name, Role: found.Role, SenderIPs: found.SenderIPs, Via: "token", Subject: "sha256:" + prefix}, nil
	}
	if c.cert != nil {
		id, subject := matchIdentity(f.Identities, c.cert)
		if id == nil {
			return nil, &refusal{codes.PermissionDenied, "client certificate " + strconv.Quote(certName(c.cert)) + " is not mapped to a role", "certificate " + certName(c.cert)}
		}
		return &Principal{Name: id.Name, Role: id.Role, SenderIPs: id.SenderIPs, Via: "certificate", Subject: subject}, nil
	}
	return nil, &refusal{codes.Unauthenticated, `no credentials: send "authorization: Bearer <token>" metadata or a client certificate`, ""}
}

// bearerToken returns the token of "Bearer <token>" (scheme in any case).
func bearerToken(v string) (string, bool) {
	const scheme = "bearer "
	if len(v) <= len(scheme) || !strings.EqualFold(v[:len(scheme)], scheme) {
		return "", false
	}
	tok := strings.TrimSpace(v[len(scheme):])
	return tok, tok != ""
}

// matchIdentity returns the first identity whose SAN (URI, DNS name or
// e-mail address) or CN the certificate carries, and the matching value.
func matchIdentity(ids []Identity, c *x509.Certificate) (*Identity, string) {
	for i := range ids {
		id := &ids[i]
		if id.CN != "" {
			if c.Subject.CommonName == id.CN {
				return id, "CN=" + id.CN
			}
			continue
		}
		for _, u := range c.URIs {
			if u.String() == id.SAN {
				return id, id.SAN
			}
		}
		for _, s := range append(append([]string(nil), c.DNSNames...), c.EmailAddresses...) {
			if strings.EqualFold(s, id.SAN) {
				return id, id.SAN
			}
		}
	}
	return nil, ""
}

// certName names a certificate in messages: its first URI or DNS SAN, else
// its CN.
func certName(c *x509.Certificate) string {
	switch {
	case len(c.URIs) > 0:
		return c.URIs[0].String()
	case len(c.DNSNames) > 0:
		return c.DNSNames[0]
	}
	return "CN=" + c.Subject.CommonName
}

// authorize authenticates a call of method with request req (nil for a
// stream) and checks role and sender IPs. It returns the caller, or nil for
// an open method, or a refusal.
func (a *Authenticator) authorize(method string, req any, c credentialsOf) (*Principal, *refusal) {
	acc := methodAccess(method)
	if acc == accessOpen {
		return nil, nil
	}
	p, ref := a.authenticate(c)
	if ref != nil {
		return nil, ref
	}
	if !acc.allows(p.Role) {
		return nil, &refusal{codes.PermissionDenied, fmt.Sprintf("%s %q (role %s) may not call %s: needs %s", p.Via, p.Name, p.Role, shortMethod(method), acc.needs()), p.Name}
	}
	if field, ip, ok := checkIPs(p, req); !ok {
		return nil, &refusal{codes.PermissionDenied, fmt.Sprintf("%s: %s %q may not speak for sender IP %s", field, p.Via, p.Name, ip), p.Name}
	}
	return p, nil
}

// checkIPs checks every sender IP of a mailer request against p's
// SenderIPs, returning the first refused field and IP. An IP that is not
// valid passes, for the server's validation to refuse with
// INVALID_ARGUMENT.
func checkIPs(p *Principal, req any) (field, ip string, ok bool) {
	if len(p.SenderIPs) == 0 {
		return "", "", true
	}
	one := func(field, s string) (string, string, bool) {
		n, err := normalize.IP(s)
		if err != nil || p.AllowsIP(n) {
			return "", "", true
		}
		return field, n, false
	}
	switch r := req.(type) {
	case *sendgatev1.CanSendRequest:
		return one("sender_ip", r.GetSenderIp())
	case *sendgatev1.ReportResultRequest:
		return one("sender_ip", r.GetSenderIp())
	case *sendgatev1.CanSendBatchRequest:
		for i, it := range r.GetRequests() {
			if f, ip, ok := one("requests["+strconv.Itoa(i)+"].sender_ip", it.GetSenderIp()); !ok {
				return f, ip, false
			}
		}
	case *sendgatev1.ReportResultBatchRequest:
		for i, it := range r.GetResults() {
			if f, ip, ok := one("results["+strconv.Itoa(i)+"].sender_ip", it.GetSenderIp()); !ok {
				return f, ip, false
			}
		}
	}
	return "", "", true
}

func shortMethod(m string) string {
	if i := strings.LastIndexByte(m, '/'); i >= 0 {
		return m[i+1:]
	}
	return m
}

// grpcCredentials collects what a gRPC call presented.
func grpcCredentials(ctx context.Context) credentialsOf {
	var c credentialsOf
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		c.authz = md.Get("authorization")
	}
	if p, ok := peer.FromContext(ctx); ok {
		if p.Addr != nil {
			c.peer = p.Addr.String()
		}
		if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok {
			if len(ti.State.VerifiedChains) > 0 && len(ti.State.VerifiedChains[0]) > 0 {
				c.cert = ti.State.VerifiedChains[0][0]
			}
		}
	}
	return c
}

// refuse logs a refusal (never the secret) and returns its status error.
func (a *Authenticator) refuse(ctx context.Context, method string, c credentialsOf, r *refusal) error {
	a.log.LogAttrs(ctx, slog.LevelWarn, "call refused",
		slog.String("method", method), slog.String("code", r.code.String()),
		slog.String("caller", r.who), slog.String("peer", c.peer), slog.String("reason", r.msg))
	return status.Error(r.code, r.msg)
}

// UnaryInterceptor authorizes every unary call, and logs each SetState (who,
// what, the note, the result) as an audit record.
func (a *Authenticator) UnaryInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		c := grpcCredentials(ctx)
		p, ref := a.authorize(info.FullMethod, req, c)
		if ref != nil {
			return nil, a.refuse(ctx, info.FullMethod, c, ref)
		}
		if p == nil {
			return handler(ctx, req)
		}
		ctx = context.WithValue(ctx, principalKey{}, p)
		resp, err := handler(ctx, req)
		if r, ok := req.(*sendgatev1.SetStateRequest); ok {
			a.audit(ctx, p, r, c, err)
		}
		return resp, err
	}
}

// audit logs one operator action.
func (a *Authenticator) audit(ctx context.Context, p *Principal, r *sendgatev1.SetStateRequest, c credentialsOf, err error) {
	until := ""
	if r.GetUntil() != nil {
		until = r.GetUntil().AsTime().UTC().Format(time.RFC3339)
	}
	a.log.LogAttrs(ctx, slog.LevelInfo, "audit: SetState",
		slog.String("actor", p.Name), slog.String("via", p.Via), slog.String("subject", p.Subject),
		slog.String("peer", c.peer), slog.String("sender_ip", r.GetSenderIp()), slog.String("provider", r.GetProvider()),
		slog.String("action", r.GetAction().String()), slog.String("until", until), slog.String("note", r.GetNote()),
		slog.String("code", status.Code(err).String()))
}

// StreamInterceptor authorizes every streaming call by method and role
// (the only streams are health Watch and reflection, which are open).
func (a *Authenticator) StreamInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		ctx := ss.Context()
		c := grpcCredentials(ctx)
		if _, ref := a.authorize(info.FullMethod, nil, c); ref != nil {
			return a.refuse(ctx, info.FullMethod, c, ref)
		}
		return handler(srv, ss)
	}
}

// ServerOptions returns the interceptors as gRPC server options.
func (a *Authenticator) ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(a.UnaryInterceptor()),
		grpc.ChainStreamInterceptor(a.StreamInterceptor()),
	}
}

// HTTP wraps an HTTP handler: the paths in open (e.g. /healthz, /readyz)
// need no credentials; every other path needs a reader or admin token
// ("Authorization: Bearer <token>") or a verified client certificate mapped
// to one. Missing or bad credentials get 401, the wrong role 403.
func (a *Authenticator) HTTP(next http.Handler, open ...string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for _, o := range open {
			if r.URL.Path == o {
				next.ServeHTTP(w, r)
				return
			}
		}
		c := credentialsOf{authz: r.Header.Values("Authorization"), peer: r.RemoteAddr}
		if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 && len(r.TLS.VerifiedChains[0]) > 0 {
			c.cert = r.TLS.VerifiedChains[0][0]
		}
		p, ref := a.authenticate(c)
		if ref == nil && !accessRead.allows(p.Role) {
			ref = &refusal{codes.PermissionDenied, fmt.Sprintf("%s %q (role %s) may not read %s: needs reader or admin", p.Via, p.Name, p.Role, r.URL.Path), p.Name}
		}
		if ref != nil {
			a.refuse(r.Context(), "HTTP "+r.URL.Path, c, ref)
			code := http.StatusForbidden
			if ref.code == codes.Unauthenticated {
				code = http.StatusUnauthorized
				w.Header().Set("WWW-Authenticate", `Bearer realm="sendgate"`)
			}
			http.Error(w, ref.msg, code)
			return
		}
		next.ServeHTTP(w, r)
	})
}
