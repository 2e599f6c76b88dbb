package auth

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"time"
)

// DefaultReloadCheck is how often, at most, a [CertReloader] looks at its
// files when no interval is given.
const DefaultReloadCheck = 2 * time.Second

// TLSFiles name the server's TLS material.
type TLSFiles struct {
	// CertFile and KeyFile are the PEM certificate chain and private key.
	CertFile, KeyFile string
	// ClientCAFile, when set, is a PEM bundle of the CAs that client
	// certificates must chain to (mutual TLS).
	ClientCAFile string
}

// CertReloader serves the certificate, key and client CA bundle of a
// [TLSFiles], re-reading them when one of their files changes: every
// handshake looks at the files' modification times and sizes, at most once
// per check interval, and reloads when one changed. A failed reload (say, a
// new certificate written before its key) keeps the previous material and is
// retried at the next check. It is safe for concurrent use.
type CertReloader struct {
	files TLSFiles
	every time.Duration
	now   func() time.Time
	log   *slog.Logger

	mu      sync.Mutex // guards the fields below
	cert    *tls.Certificate
	pool    *x509.CertPool
	stamps  [3]fileStamp
	checked time.Time
}

// NewCertReloader loads the files once and fails when they do not load.
// every (0: [DefaultReloadCheck]) bounds how often the files are looked at;
// now is the clock (nil: time.Now); log (nil: discard) receives reloads and
// their failures.
func NewCertReloader(files TLSFiles, every time.Duration, now func() time.Time, log *slog.Logger) (*CertReloader, error) {
	if files.CertFile == "" || files.KeyFile == "" {
		return nil, errors.New("tls: need both a certificate and a key file")
	}
	if every <= 0 {
		every = DefaultReloadCheck
	}
	if now == nil {
		now = time.Now
	}
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	r := &CertReloader{files: files, every: every, now: now, log: log}
	if err := r.load(r.currentStamps()); err != nil {
		return nil, err
	}
	r.checked = now()
	return r, nil
}

func (r *CertReloader) currentStamps() [3]fileStamp {
	var s [3]fileStamp
	for i, p := range []string{r.files.CertFile, r.files.KeyFile, r.files.ClientCAFile} {
		if p != "" {
			s[i], _ = stampOf(p)
		}
	}
	return s
}

// load reads every file; the caller holds mu (or owns r).
func (r *CertReloader) load(stamps [3]fileStamp) error {
	cert, err := tls.LoadX509KeyPair(r.files.CertFile, r.files.KeyFile)
	if err != nil {
		return fmt.Errorf("tls certificate %s, key %s: %w", r.files.CertFile, r.files.KeyFile, err)
	}
	var pool *x509.CertPool
	if r.files.ClientCAFile != "" {
		pool, err = loadPool(r.files.ClientCAFile)
		if err != nil {
			return err
		}
	}
	r.cert, r.pool, r.stamps = &cert, pool, stamps
	return nil
}

// loadPool reads a PEM bundle of CA certificates.
func loadPool(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("tls CA bundle: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("tls CA bundle %s: no PEM certificate in it", path)
	}
	return pool, nil
}

// current returns the material, reloading first when a check is due and a
// file changed.
func (r *CertReloader) current() (*tls.Certificate, *x509.CertPool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if now := r.now(); now.Sub(r.checked) >= r.every || now.Before(r.checked) {
		r.checked = now
		if st := r.currentStamps(); st != r.stamps {
			if err := r.load(st); err != nil {
				r.log.Error("tls files not reloaded; the previous certificate stays in use", "error", err)
			} else {
				r.log.Info("tls files reloaded", "cert", r.files.CertFile, "expires", r.cert.Leaf.NotAfter.UTC().Format(time.RFC3339))
			}
		}
	}
	return r.cert, r.pool
}

// Config returns a server TLS configuration (TLS 1.2 and later) whose every
// handshake uses the current material. With a client CA, clientAuth says
// whether a client certificate is required (tls.RequireAndVerifyClientCert,
// for gRPC) or only verified when given (tls.VerifyClientCertIfGiven, for
// the HTTP port, so that probes reach /healthz); without one it is ignored.
// nextProtos are the ALPN protocols ("h2" for gRPC).
func (r *CertReloader) Config(clientAuth tls.ClientAuthType, nextProtos ...string) *tls.Config {
	protos := append([]string(nil), nextProtos...)
	base := &tls.Config{MinVersion: tls.VersionTLS12, NextProtos: protos}
	base.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		cert, pool := r.current()
		c := &tls.Config{MinVersion: tls.VersionTLS12, NextProtos: protos, Certificates: []tls.Certificate{*cert}}
		if pool != nil {
			c.ClientCAs, c.ClientAuth = pool, clientAuth
		}
		return c, nil
	}
	return base
}

// ClientTLS returns the TLS configuration of a client: the CAs of caFile
// (empty: the system's roots) verify the server, serverName (empty: the
// address's host) is the name it must carry, and certFile and keyFile (both
// or neither) are the client certificate for mutual TLS.
func ClientTLS(caFile, certFile, keyFile, serverName string) (*tls.Config, error) {
	c := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: serverName}
	if caFile != "" {
		pool, err := loadPool(caFile)
		if err != nil {
			return nil, err
		}
		c.RootCAs = pool
	}
	switch {
	case certFile != "" && keyFile != "":
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("tls client certificate: %w", err)
		}
		c.Certificates = []tls.Certificate{cert}
	case certFile != "" || keyFile != "":
		return nil, errors.New("tls client certificate: need both --tls-cert and --tls-key")
	}
	return c, nil
}
