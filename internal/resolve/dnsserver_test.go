package resolve_test

import (
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/sendgate/sendgate/internal/resolve"
)

// zone is what the test DNS server knows about one name.
type zone struct {
	mx     []mxRecord
	ttl    uint32 // TTL of the MX records
	cname  string // answer with a CNAME (TTL cnameTTL) to this name first
	rcode  int    // answer with this rcode instead (e.g. dns.RcodeServerFailure)
	silent bool   // never answer
}

type mxRecord struct {
	pref uint16
	host string
}

const cnameTTL = 30

// dnsServer is a real DNS server on loopback UDP serving fixed zones and
// counting the queries it receives per name.
type dnsServer struct {
	addr  string
	zones map[string]zone // by fully qualified lower-case name; read-only

	mu      sync.Mutex
	queries map[string]int
}

// startDNS starts a server for zones (keys without trailing dot); names not
// listed are NXDOMAIN. It stops when the test ends.
func startDNS(t testing.TB, zones map[string]zone) *dnsServer {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &dnsServer{addr: pc.LocalAddr().String(), zones: make(map[string]zone), queries: make(map[string]int)}
	for name, z := range zones {
		s.zones[dns.Fqdn(name)] = z
	}
	started := make(chan struct{})
	srv := &dns.Server{PacketConn: pc, Handler: s, NotifyStartedFunc: func() { close(started) }}
	go func() {
		if err := srv.ActivateAndServe(); err != nil {
			t.Errorf("dns server: %v", err)
		}
	}()
	<-started
	t.Cleanup(func() {
		if err := srv.Shutdown(); err != nil {
			t.Errorf("dns server shutdown: %v", err)
		}
	})
	return s
}

func (s *dnsServer) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	if len(req.Question) != 1 {
		return
	}
	q := req.Question[0]
	name := strings.ToLower(q.Name)
	s.mu.Lock()
	s.queries[name]++
	s.mu.Unlock()

	z, ok := s.zones[name]
	if z.silent {
		return
	}
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	m.RecursionAvailable = true
	switch {
	case !ok:
		m.Rcode = dns.RcodeNameError
	case z.rcode != dns.RcodeSuccess:
		m.Rcode = z.rcode
	case q.Qtype == dns.TypeMX:
		owner := q.Name
		if z.cname != "" {
			m.Answer = append(m.Answer, &dns.CNAME{
				Hdr:    dns.RR_Header{Name: owner, Rrtype: dns.TypeCNAME, Class: dns.ClassINET, Ttl: cnameTTL},
				Target: dns.Fqdn(z.cname),
			})
			owner = dns.Fqdn(z.cname)
		}
		for _, r := range z.mx {
			m.Answer = append(m.Answer, &dns.MX{
				Hdr:        dns.RR_Header{Name: owner, Rrtype: dns.TypeMX, Class: dns.ClassINET, Ttl: z.ttl},
				Preference: r.pref,
				Mx:         dns.Fqdn(r.host),
			})
		}
	}
	_ = w.WriteMsg(m)
}

// queriesFor returns how many queries the server received for name.
func (s *dnsServer) queriesFor(name string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.queries[dns.Fqdn(name)]
}

// total returns how many queries the server received.
func (s *dnsServer) total() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, c := range s.queries {
		n += c
	}
	return n
}

// lookuper is one way of asking the test server.
type lookuper struct {
	name string
	new  func(addr string) resolve.MXLookuper
}

// lookupers are the two lookupers every DNS test runs with: the standard
// library's resolver (no TTL) and DNSClient (TTL).
var lookupers = []lookuper{
	{"net.Resolver", func(addr string) resolve.MXLookuper {
		return &net.Resolver{
			PreferGo: true,
			Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, network, addr)
			},
		}
	}},
	{"DNSClient", func(addr string) resolve.MXLookuper {
		return &resolve.DNSClient{Server: addr, Timeout: 2 * time.Second}
	}},
}

// clock is a settable Options.Now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock {
	return &clock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}
