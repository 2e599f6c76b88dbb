package resolve

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"time"

	"github.com/miekg/dns"
)

// Errors of DNSClient, matched with errors.Is. A timeout also wraps the
// underlying error.
var (
	ErrNXDomain = errors.New("no such domain (NXDOMAIN)")
	ErrNoMX     = errors.New("no MX records")
	ErrServFail = errors.New("server failure (SERVFAIL)")
	ErrTimeout  = errors.New("timeout")
)

// DefaultDNSTimeout is the DNSClient timeout when its Timeout is zero.
const DefaultDNSTimeout = 2 * time.Second

// ednsSize is the UDP payload size advertised (the DNS flag day 2020 value).
const ednsSize = 1232

// DNSClient looks MX records up by asking one DNS server, normally a
// recursive resolver, directly. Unlike *net.Resolver it reports the TTL of the
// answer and tells apart NXDOMAIN ([ErrNXDomain]), an empty answer
// ([ErrNoMX]), SERVFAIL ([ErrServFail]) and timeouts ([ErrTimeout]).
//
// The zero value is not usable: set Server. A DNSClient is safe for
// concurrent use and must not be modified once in use.
type DNSClient struct {
	// Server is the address of the DNS server, "ip:port".
	Server string
	// Timeout bounds one lookup, including the retry over TCP of a
	// truncated UDP answer; zero means DefaultDNSTimeout. A deadline of the
	// context applies too; the earlier one wins.
	Timeout time.Duration
}

var (
	_ MXLookuper  = (*DNSClient)(nil)
	_ TTLLookuper = (*DNSClient)(nil)
)

// LookupMX returns the MX records of name, as LookupMXTTL does.
func (c *DNSClient) LookupMX(ctx context.Context, name string) ([]*net.MX, error) {
	mxs, _, err := c.LookupMXTTL(ctx, name)
	return mxs, err
}

// LookupMXTTL returns the MX records of name by preference, hosts as in the
// answer (fully qualified, with a trailing dot), and how long the answer may
// be cached: the least TTL of the answer's records (CNAMEs included).
// An answer without MX records is an error, ErrNoMX.
func (c *DNSClient) LookupMXTTL(ctx context.Context, name string) ([]*net.MX, time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, cmp.Or(c.Timeout, DefaultDNSTimeout))
	defer cancel()

	q := new(dns.Msg)
	q.SetQuestion(dns.Fqdn(name), dns.TypeMX)
	q.SetEdns0(ednsSize, false)
	in, err := c.exchange(ctx, q, "udp")
	if err == nil && in.Truncated {
		in, err = c.exchange(ctx, q, "tcp")
	}
	if err != nil {
		if isTimeout(err) {
			return nil, 0, fmt.Errorf("lookup mx %s: %w: %w", name, ErrTimeout, err)
		}
		return nil, 0, fmt.Errorf("lookup mx %s: %w", name, err)
	}
	switch in.Rcode {
	case dns.RcodeSuccess:
	case dns.RcodeNameError:
		return nil, 0, fmt.Errorf("lookup mx %s: %w", name, ErrNXDomain)
	case dns.RcodeServerFailure:
		return nil, 0, fmt.Errorf("lookup mx %s: %w", name, ErrServFail)
	default:
		return nil, 0, fmt.Errorf("lookup mx %s: rcode %s", name, dns.RcodeToString[in.Rcode])
	}

	var (
		mxs    []*net.MX
		minTTL uint32
	)
	for i, rr := range in.Answer {
		if ttl := rr.Header().Ttl; i == 0 || ttl < minTTL {
			minTTL = ttl
		}
		if mx, ok := rr.(*dns.MX); ok {
			mxs = append(mxs, &net.MX{Host: mx.Mx, Pref: mx.Preference})
		}
	}
	if len(mxs) == 0 {
		return nil, 0, fmt.Errorf("lookup mx %s: %w", name, ErrNoMX)
	}
	slices.SortStableFunc(mxs, func(a, b *net.MX) int { return cmp.Compare(a.Pref, b.Pref) })
	return mxs, time.Duration(minTTL) * time.Second, nil
}

func (c *DNSClient) exchange(ctx context.Context, q *dns.Msg, network string) (*dns.Msg, error) {
	cl := dns.Client{Net: network}
	in, _, err := cl.ExchangeContext(ctx, q, c.Server)
	if err == nil && in == nil {
		err = errors.New("empty response")
	}
	return in, err
}

func isTimeout(err error) bool {
	var netErr net.Error
	return errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &netErr) && netErr.Timeout())
}
