package resolve_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/miekg/dns"

	"github.com/sendgate/sendgate/internal/resolve"
)

var testProviders = []resolve.Provider{
	{Name: "google", Domains: []string{"gmail.com", "googlemail.com"}, MXPatterns: []string{"*.google.com", "*.googlemail.com"}},
	{Name: "tencent", Domains: []string{"qq.com", "foxmail.com", "vip.qq.com"}, MXPatterns: []string{"*.qq.com"}},
	{Name: "microsoft", Domains: []string{"outlook.com", "hotmail.com"}, MXPatterns: []string{"*.outlook.com"}},
	{Name: "m365", MXPatterns: []string{"*.protection.outlook.com"}},
	{Name: "corp", MXPatterns: []string{"mail.corp.example"}},
}

var testZones = map[string]zone{
	"googlehosted.test": {mx: []mxRecord{{5, "alt1.aspmx.l.google.com"}, {1, "aspmx.l.google.com"}}, ttl: 300},
	"ukcorp.test":       {mx: []mxRecord{{20, "mx2.mailhost.example.co.uk"}, {10, "mx1.mailhost.example.co.uk"}}, ttl: 300},
	"selfhosted.test":   {mx: []mxRecord{{10, "MX1.Mailhost.Example"}}, ttl: 300},
	"secondary.test":    {mx: []mxRecord{{10, "mx.own.example"}, {20, "mx3.qq.com"}}, ttl: 300},
	"foxhosted.test":    {mx: []mxRecord{{10, "mx.foxmail.com"}}, ttl: 300},
	"m365.test":         {mx: []mxRecord{{0, "m365-test.mail.protection.outlook.com"}}, ttl: 300},
	"pslhost.test":      {mx: []mxRecord{{10, "co.uk"}}, ttl: 300},
	"alias.test":        {cname: "target.test", mx: []mxRecord{{10, "mx.target.example"}}, ttl: 300},
	"short.test":        {mx: []mxRecord{{10, "mx.short.example"}}, ttl: 5},
	"long.test":         {mx: []mxRecord{{10, "mx.long.example"}}, ttl: 7 * 24 * 3600},
	"nomx.test":         {},
	"nullmx.test":       {mx: []mxRecord{{0, "."}}, ttl: 300},
	"servfail.test":     {rcode: dns.RcodeServerFailure},
	"refused.test":      {rcode: dns.RcodeRefused},
	"silent.test":       {silent: true},
}

func newResolver(t testing.TB, lookup resolve.MXLookuper, opts resolve.Options) *resolve.Resolver {
	t.Helper()
	r, err := resolve.New(testProviders, lookup, opts)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestNew(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		providers []resolve.Provider
		opts      resolve.Options
		wantErr   string
	}{
		{name: "ok", providers: testProviders},
		{name: "no providers"},
		{name: "same domain twice in one provider", providers: []resolve.Provider{{Name: "a", Domains: []string{"a.com", "A.com."}}}},
		{name: "empty name", providers: []resolve.Provider{{Domains: []string{"a.com"}}}, wantErr: "provider with empty name"},
		{name: "name twice", providers: []resolve.Provider{{Name: "a"}, {Name: "a"}}, wantErr: `provider "a" listed twice`},
		{name: "bad domain", providers: []resolve.Provider{{Name: "a", Domains: []string{"a..com"}}}, wantErr: `provider "a": domain: empty label: "a..com"`},
		{name: "domain of two providers", providers: []resolve.Provider{{Name: "a", Domains: []string{"x.com"}}, {Name: "b", Domains: []string{"X.COM"}}}, wantErr: `provider "b": domain "x.com" already belongs to "a"`},
		{name: "bad pattern", providers: []resolve.Provider{{Name: "a", MXPatterns: []string{"mx.*.com"}}}, wantErr: `provider "a": mx pattern "mx.*.com": '*' only as a leading label`},
		{name: "bare star", providers: []resolve.Provider{{Name: "a", MXPatterns: []string{"*"}}}, wantErr: `provider "a": mx pattern "*": '*' only as a leading label`},
		{name: "pattern of two providers", providers: []resolve.Provider{{Name: "a", MXPatterns: []string{"*.x.com"}}, {Name: "b", MXPatterns: []string{"*.X.com"}}}, wantErr: `provider "b": mx pattern "*.x.com" already belongs to "a"`},
		{name: "negative timeout", opts: resolve.Options{Timeout: -1}, wantErr: "negative option"},
		{name: "min above max", opts: resolve.Options{MinTTL: time.Hour, MaxTTL: time.Minute}, wantErr: "MinTTL 1h0m0s above MaxTTL 1m0s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := resolve.New(tt.providers, nil, tt.opts)
			if got := fmt.Sprint(err); (tt.wantErr == "" && err != nil) || (tt.wantErr != "" && got != tt.wantErr) {
				t.Fatalf("New() error = %v, want %q", err, tt.wantErr)
			}
		})
	}
}

// TestResolveTable: table domains are answered without DNS, exactly.
func TestResolveTable(t *testing.T) {
	t.Parallel()
	srv := startDNS(t, nil)
	for _, l := range lookupers {
		r := newResolver(t, l.new(srv.addr), resolve.Options{})
		for _, tt := range []struct{ domain, want string }{
			{"qq.com", "tencent"},
			{"vip.qq.com", "tencent"},
			{"foxmail.com", "tencent"},
			{"gmail.com", "google"},
			{"hotmail.com", "microsoft"},
		} {
			got := r.Resolve(t.Context(), tt.domain)
			if want := (resolve.Result{Provider: tt.want, Via: resolve.ViaTable}); !equal(got, want) {
				t.Errorf("%s: Resolve(%q) = %+v, want %+v", l.name, tt.domain, got, want)
			}
		}
		if n := srv.total(); n != 0 {
			t.Errorf("%s: table hits made %d DNS queries", l.name, n)
		}
		if s := r.Stats(); s.TableHits != 5 || s.Lookups != 0 {
			t.Errorf("%s: stats = %+v", l.name, s)
		}
	}
	// Exact only: a subdomain of a table domain goes to DNS.
	r := newResolver(t, lookupers[1].new(srv.addr), resolve.Options{})
	if got, want := r.Resolve(t.Context(), "sub.qq.com"), (resolve.Result{Provider: "sub.qq.com", Via: resolve.ViaDomain}); !equal(got, want) {
		t.Errorf("Resolve(sub.qq.com) = %+v, want %+v", got, want)
	}
	if !r.IsProvider("tencent") || !r.IsProvider("m365") || r.IsProvider("qq.com") || r.IsProvider("") {
		t.Error("IsProvider wrong")
	}
}

// TestResolveDNS: MX rollup and fallbacks against a real DNS server, with
// both lookupers.
func TestResolveDNS(t *testing.T) {
	t.Parallel()
	srv := startDNS(t, testZones)
	tests := []struct {
		domain string
		want   resolve.Result
	}{
		{"googlehosted.test", resolve.Result{Provider: "google", Via: "mx", MXHosts: []string{"aspmx.l.google.com", "alt1.aspmx.l.google.com"}}},
		{"ukcorp.test", resolve.Result{Provider: "example.co.uk", Via: "mx", MXHosts: []string{"mx1.mailhost.example.co.uk", "mx2.mailhost.example.co.uk"}}},
		{"selfhosted.test", resolve.Result{Provider: "mailhost.example", Via: "mx", MXHosts: []string{"mx1.mailhost.example"}}},
		{"secondary.test", resolve.Result{Provider: "tencent", Via: "mx", MXHosts: []string{"mx.own.example", "mx3.qq.com"}}},
		{"foxhosted.test", resolve.Result{Provider: "tencent", Via: "mx", MXHosts: []string{"mx.foxmail.com"}}},
		{"m365.test", resolve.Result{Provider: "m365", Via: "mx", MXHosts: []string{"m365-test.mail.protection.outlook.com"}}},
		{"pslhost.test", resolve.Result{Provider: "pslhost.test", Via: "domain", MXHosts: []string{"co.uk"}}},
		{"alias.test", resolve.Result{Provider: "target.example", Via: "mx", MXHosts: []string{"mx.target.example"}}},
		{"nomx.test", resolve.Result{Provider: "nomx.test", Via: "domain"}},
		{"nullmx.test", resolve.Result{Provider: "nullmx.test", Via: "domain"}},
		{"nx.test", resolve.Result{Provider: "nx.test", Via: "domain"}},
		{"servfail.test", resolve.Result{Provider: "servfail.test", Via: "domain"}},
		{"refused.test", resolve.Result{Provider: "refused.test", Via: "domain"}},
	}
	for _, l := range lookupers {
		r := newResolver(t, l.new(srv.addr), resolve.Options{Timeout: 2 * time.Second})
		for _, tt := range tests {
			t.Run(l.name+"/"+tt.domain, func(t *testing.T) {
				t.Parallel()
				if got := r.Resolve(t.Context(), tt.domain); !equal(got, tt.want) {
					t.Errorf("Resolve(%q) = %+v, want %+v", tt.domain, got, tt.want)
				}
			})
		}
	}
}

// TestResolveTTL: answers are cached for their TTL clamped to [MinTTL,
// MaxTTL]; *net.Resolver answers, without TTL, for UnknownTTL.
func TestResolveTTL(t *testing.T) {
	t.Parallel()
	tests := []struct {
		domain         string
		minTTL, maxTTL time.Duration
		wantDNSClient  time.Duration // TTL-aware lookuper
		wantNet        time.Duration // *net.Resolver
	}{
		{"googlehosted.test", 0, 0, 300 * time.Second, resolve.UnknownTTL},
		{"short.test", 0, 0, time.Minute, resolve.UnknownTTL},
		{"long.test", 0, 0, 24 * time.Hour, resolve.UnknownTTL},
		{"alias.test", time.Second, 0, cnameTTL * time.Second, resolve.UnknownTTL},
		{"googlehosted.test", 2 * time.Hour, 3 * time.Hour, 2 * time.Hour, 2 * time.Hour},
		{"googlehosted.test", time.Second, 10 * time.Second, 10 * time.Second, 10 * time.Second},
	}
	for _, l := range lookupers {
		for i, tt := range tests {
			t.Run(fmt.Sprintf("%s/%d/%s", l.name, i, tt.domain), func(t *testing.T) {
				t.Parallel()
				srv := startDNS(t, testZones)
				clk := newClock()
				r := newResolver(t, l.new(srv.addr), resolve.Options{Timeout: 2 * time.Second, MinTTL: tt.minTTL, MaxTTL: tt.maxTTL, Now: clk.Now})
				want := tt.wantDNSClient
				if l.name == "net.Resolver" {
					want = tt.wantNet
				}
				steps := []struct {
					advance     time.Duration
					wantQueries int
				}{
					{0, 1},
					{want - time.Second, 1},
					{time.Second, 2}, // expired
					{want - time.Second, 2},
					{time.Second, 3},
				}
				for j, s := range steps {
					clk.Advance(s.advance)
					if got := r.Resolve(t.Context(), tt.domain); got.Via != resolve.ViaMX {
						t.Fatalf("step %d: Resolve = %+v", j, got)
					}
					if got := srv.queriesFor(tt.domain); got != s.wantQueries {
						t.Fatalf("step %d: server saw %d queries, want %d", j, got, s.wantQueries)
					}
				}
				if s := r.Stats(); s.Lookups != 3 || s.CacheHits != 2 {
					t.Errorf("stats = %+v", s)
				}
			})
		}
	}
}

// TestResolveNegativeCache: failures are cached for NegativeTTL.
func TestResolveNegativeCache(t *testing.T) {
	t.Parallel()
	const negTTL = 30 * time.Second
	tests := []struct {
		domain                 string
		wantNotFound, wantErrs uint64
	}{
		{"nx.test", 1, 0},
		{"nomx.test", 1, 0},
		{"nullmx.test", 1, 0},
		{"servfail.test", 0, 1},
		{"refused.test", 0, 1},
	}
	for _, l := range lookupers {
		for _, tt := range tests {
			t.Run(l.name+"/"+tt.domain, func(t *testing.T) {
				t.Parallel()
				srv := startDNS(t, testZones)
				clk := newClock()
				r := newResolver(t, l.new(srv.addr), resolve.Options{Timeout: 2 * time.Second, NegativeTTL: negTTL, Now: clk.Now})
				want := resolve.Result{Provider: tt.domain, Via: resolve.ViaDomain}

				check := func(step string, advance time.Duration, wantMore bool) {
					t.Helper()
					before := srv.queriesFor(tt.domain)
					clk.Advance(advance)
					if got := r.Resolve(t.Context(), tt.domain); !equal(got, want) {
						t.Fatalf("%s: Resolve = %+v, want %+v", step, got, want)
					}
					// *net.Resolver may try a failing server more than once:
					// count lookups, not packets.
					if more := srv.queriesFor(tt.domain) > before; more != wantMore {
						t.Fatalf("%s: queried the server: %v, want %v", step, more, wantMore)
					}
				}
				check("first", 0, true)
				check("cached", negTTL-time.Second, false)
				check("expired", time.Second, true)
				s := r.Stats()
				if s.Lookups != 2 || s.NegativeHits != 1 || s.NotFound != 2*tt.wantNotFound || s.Errors != 2*tt.wantErrs || s.Timeouts != 0 {
					t.Errorf("stats = %+v", s)
				}
			})
		}
	}
}

// TestResolveSingleflight: concurrent callers for one uncached domain share
// one lookup.
func TestResolveSingleflight(t *testing.T) {
	t.Parallel()
	for _, l := range lookupers {
		t.Run(l.name, func(t *testing.T) {
			t.Parallel()
			srv := startDNS(t, testZones)
			r := newResolver(t, l.new(srv.addr), resolve.Options{Timeout: 5 * time.Second})
			const callers = 100
			var (
				wg    sync.WaitGroup
				start = make(chan struct{})
				got   = make([]resolve.Result, callers)
			)
			for i := range callers {
				wg.Go(func() {
					<-start
					got[i] = r.Resolve(t.Context(), "googlehosted.test")
				})
			}
			close(start)
			wg.Wait()
			for i, g := range got {
				if g.Provider != "google" || g.Via != resolve.ViaMX {
					t.Fatalf("caller %d: %+v", i, g)
				}
			}
			if n := srv.queriesFor("googlehosted.test"); n != 1 {
				t.Errorf("server saw %d queries, want 1", n)
			}
			if s := r.Stats(); s.Lookups != 1 {
				t.Errorf("stats = %+v", s)
			}
		})
	}
}

// TestResolveTimeout: a server that never answers delays a caller by
// Timeout, no more; later callers get the fallback at once; the background
// lookup ends by LookupTimeout and counts as a timeout.
func TestResolveTimeout(t *testing.T) {
	t.Parallel()
	const (
		timeout = 100 * time.Millisecond
		slack   = 400 * time.Millisecond // scheduling, race detector
	)
	for _, l := range lookupers {
		t.Run(l.name, func(t *testing.T) {
			t.Parallel()
			srv := startDNS(t, testZones)
			r := newResolver(t, l.new(srv.addr), resolve.Options{Timeout: timeout, LookupTimeout: 300 * time.Millisecond})
			want := resolve.Result{Provider: "silent.test", Via: resolve.ViaDomain}

			start := time.Now()
			got := r.Resolve(t.Context(), "silent.test")
			if d := time.Since(start); d < timeout || d > timeout+slack {
				t.Errorf("first Resolve took %v, want %v", d, timeout)
			}
			if !equal(got, want) {
				t.Errorf("first Resolve = %+v, want %+v", got, want)
			}

			start = time.Now()
			got = r.Resolve(t.Context(), "silent.test")
			if d := time.Since(start); d > slack {
				t.Errorf("second Resolve took %v, want it immediate", d)
			}
			if !equal(got, want) {
				t.Errorf("second Resolve = %+v, want %+v", got, want)
			}

			deadline := time.Now().Add(5 * time.Second)
			for r.Stats().Timeouts == 0 && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			s := r.Stats()
			if s.Lookups != 1 || s.WaitTimeouts != 1 || s.NegativeHits != 1 || s.Timeouts != 1 || s.Errors != 1 {
				t.Errorf("stats = %+v", s)
			}
			if srv.queriesFor("silent.test") == 0 {
				t.Error("server saw no query")
			}
		})
	}
}

func TestDNSClient(t *testing.T) {
	t.Parallel()
	srv := startDNS(t, testZones)
	c := &resolve.DNSClient{Server: srv.addr, Timeout: 200 * time.Millisecond}
	tests := []struct {
		name    string
		wantMX  []*net.MX
		wantTTL time.Duration
		wantErr error
	}{
		{name: "googlehosted.test", wantMX: []*net.MX{{Host: "aspmx.l.google.com.", Pref: 1}, {Host: "alt1.aspmx.l.google.com.", Pref: 5}}, wantTTL: 300 * time.Second},
		{name: "alias.test.", wantMX: []*net.MX{{Host: "mx.target.example.", Pref: 10}}, wantTTL: cnameTTL * time.Second},
		{name: "nx.test", wantErr: resolve.ErrNXDomain},
		{name: "nomx.test", wantErr: resolve.ErrNoMX},
		{name: "servfail.test", wantErr: resolve.ErrServFail},
		{name: "silent.test", wantErr: resolve.ErrTimeout},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			mx, ttl, err := c.LookupMXTTL(t.Context(), tt.name)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("error = %v, want %v", err, tt.wantErr)
			}
			if ttl != tt.wantTTL || !slices.EqualFunc(mx, tt.wantMX, func(a, b *net.MX) bool { return *a == *b }) {
				t.Errorf("LookupMXTTL = %v, %v; want %v, %v", mx, ttl, tt.wantMX, tt.wantTTL)
			}
		})
	}
	t.Run("refused", func(t *testing.T) {
		t.Parallel()
		_, _, err := c.LookupMXTTL(t.Context(), "refused.test")
		if err == nil || errors.Is(err, resolve.ErrServFail) || errors.Is(err, resolve.ErrTimeout) {
			t.Fatalf("error = %v", err)
		}
	})
	t.Run("context deadline", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err := c.LookupMX(ctx, "silent.test")
		if !errors.Is(err, resolve.ErrTimeout) || time.Since(start) > 150*time.Millisecond {
			t.Fatalf("error = %v after %v", err, time.Since(start))
		}
	})
}

// fakeLookuper answers from a map (keys without trailing dot), optionally
// after a delay, and counts calls.
type fakeLookuper struct {
	answers map[string]fakeAnswer // read-only

	mu    sync.Mutex
	calls map[string]int
}

type fakeAnswer struct {
	mx    []*net.MX
	ttl   time.Duration
	err   error
	delay time.Duration // answer after this long; block until ctx ends if < 0
}

func newFake(answers map[string]fakeAnswer) *fakeLookuper {
	return &fakeLookuper{answers: answers, calls: make(map[string]int)}
}

func (f *fakeLookuper) LookupMX(ctx context.Context, name string) ([]*net.MX, error) {
	mx, _, err := f.LookupMXTTL(ctx, name)
	return mx, err
}

func (f *fakeLookuper) LookupMXTTL(ctx context.Context, name string) ([]*net.MX, time.Duration, error) {
	name = name[:len(name)-1] // the Resolver asks for rooted names
	f.mu.Lock()
	f.calls[name]++
	f.mu.Unlock()
	a, ok := f.answers[name]
	if !ok {
		return nil, 0, resolve.ErrNXDomain
	}
	if a.delay != 0 {
		var wait <-chan time.Time
		if a.delay > 0 {
			wait = time.After(a.delay)
		}
		select {
		case <-wait:
		case <-ctx.Done():
			return nil, 0, ctx.Err()
		}
	}
	return a.mx, a.ttl, a.err
}

func (f *fakeLookuper) callsFor(name string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[name]
}

func mx(pref uint16, host string) *net.MX { return &net.MX{Host: host, Pref: pref} }

// TestRollup: the rules of MX rollup, with a fake lookuper.
func TestRollup(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		mx   []*net.MX
		want resolve.Result
	}{
		{"pattern", []*net.MX{mx(10, "mx1.qq.com.")}, resolve.Result{Provider: "tencent", Via: "mx", MXHosts: []string{"mx1.qq.com"}}},
		{"apex: table domain of the MX", []*net.MX{mx(10, "qq.com.")}, resolve.Result{Provider: "tencent", Via: "mx", MXHosts: []string{"qq.com"}}},
		{"exact host pattern", []*net.MX{mx(10, "Mail.Corp.Example.")}, resolve.Result{Provider: "corp", Via: "mx", MXHosts: []string{"mail.corp.example"}}},
		{"exact host only", []*net.MX{mx(10, "x.mail.corp.example.")}, resolve.Result{Provider: "corp.example", Via: "mx", MXHosts: []string{"x.mail.corp.example"}}},
		{"most specific pattern", []*net.MX{mx(0, "a.mail.protection.outlook.com.")}, resolve.Result{Provider: "m365", Via: "mx", MXHosts: []string{"a.mail.protection.outlook.com"}}},
		{"less specific pattern", []*net.MX{mx(0, "a.olc.outlook.com.")}, resolve.Result{Provider: "microsoft", Via: "mx", MXHosts: []string{"a.olc.outlook.com"}}},
		{"preference order", []*net.MX{mx(20, "mx.qq.com."), mx(10, "aspmx.l.google.com.")}, resolve.Result{Provider: "google", Via: "mx", MXHosts: []string{"aspmx.l.google.com", "mx.qq.com"}}},
		{"ties by name", []*net.MX{mx(10, "b.example.net."), mx(10, "a.example.org.")}, resolve.Result{Provider: "example.org", Via: "mx", MXHosts: []string{"a.example.org", "b.example.net"}}},
		{"duplicates", []*net.MX{mx(20, "a.example.org."), mx(10, "a.example.org.")}, resolve.Result{Provider: "example.org", Via: "mx", MXHosts: []string{"a.example.org"}}},
		{"invalid host skipped", []*net.MX{mx(5, "bad host."), nil, mx(10, "mx.example.org")}, resolve.Result{Provider: "example.org", Via: "mx", MXHosts: []string{"mx.example.org"}}},
		{"private suffix", []*net.MX{mx(10, "mx.foo.blogspot.com.")}, resolve.Result{Provider: "foo.blogspot.com", Via: "mx", MXHosts: []string{"mx.foo.blogspot.com"}}},
		{"single label", []*net.MX{mx(10, "localhost.")}, resolve.Result{Provider: "d.test", Via: "domain", MXHosts: []string{"localhost"}}},
		{"null mx", []*net.MX{mx(0, ".")}, resolve.Result{Provider: "d.test", Via: "domain"}},
		{"empty", nil, resolve.Result{Provider: "d.test", Via: "domain"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := newResolver(t, newFake(map[string]fakeAnswer{"d.test": {mx: tt.mx, ttl: time.Hour}}), resolve.Options{})
			if got := r.Resolve(t.Context(), "d.test"); !equal(got, tt.want) {
				t.Errorf("Resolve = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestResolveNoLookuper(t *testing.T) {
	t.Parallel()
	r := newResolver(t, nil, resolve.Options{})
	for _, tt := range []struct {
		domain string
		want   resolve.Result
	}{
		{"qq.com", resolve.Result{Provider: "tencent", Via: "table"}},
		{"corp.example", resolve.Result{Provider: "corp.example", Via: "domain"}},
		{"", resolve.Result{Via: "domain"}},
	} {
		if got := r.Resolve(t.Context(), tt.domain); !equal(got, tt.want) {
			t.Errorf("Resolve(%q) = %+v, want %+v", tt.domain, got, tt.want)
		}
	}
}

// TestResolveBackgroundFill: a lookup slower than Timeout fills the cache
// after the caller has gone (fake time).
func TestResolveBackgroundFill(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		f := newFake(map[string]fakeAnswer{"slow.test": {mx: []*net.MX{mx(1, "aspmx.l.google.com.")}, ttl: time.Hour, delay: 2 * time.Second}})
		r := newResolver(t, f, resolve.Options{Timeout: 500 * time.Millisecond})
		start := time.Now()
		steps := []struct {
			at   time.Duration // since start
			want resolve.Result
		}{
			{0, resolve.Result{Provider: "slow.test", Via: "domain"}},                                                 // waits 500ms
			{time.Second, resolve.Result{Provider: "slow.test", Via: "domain"}},                                       // at once
			{2 * time.Second, resolve.Result{Provider: "google", Via: "mx", MXHosts: []string{"aspmx.l.google.com"}}}, // filled
		}
		for i, s := range steps {
			time.Sleep(start.Add(s.at).Sub(time.Now()))
			synctest.Wait()
			before := time.Now()
			if got := r.Resolve(t.Context(), "slow.test"); !equal(got, s.want) {
				t.Errorf("step %d: Resolve = %+v, want %+v", i, got, s.want)
			}
			wantWait := time.Duration(0)
			if i == 0 {
				wantWait = 500 * time.Millisecond
			}
			if d := time.Since(before); d != wantWait {
				t.Errorf("step %d: Resolve took %v, want %v", i, d, wantWait)
			}
		}
		if n := f.callsFor("slow.test"); n != 1 {
			t.Errorf("%d lookups, want 1", n)
		}
		if s := r.Stats(); s.WaitTimeouts != 1 || s.NegativeHits != 1 || s.CacheHits != 1 || s.Errors != 0 {
			t.Errorf("stats = %+v", s)
		}
	})
}

// TestResolveLookupTimeout: a lookup that never ends is cut at
// LookupTimeout, then negatively cached (fake time).
func TestResolveLookupTimeout(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		f := newFake(map[string]fakeAnswer{"hang.test": {delay: -1}})
		r := newResolver(t, f, resolve.Options{Timeout: 100 * time.Millisecond, LookupTimeout: time.Second, NegativeTTL: time.Minute})
		want := resolve.Result{Provider: "hang.test", Via: "domain"}
		start := time.Now()
		if got := r.Resolve(t.Context(), "hang.test"); !equal(got, want) {
			t.Fatalf("Resolve = %+v", got)
		}
		time.Sleep(time.Second)
		synctest.Wait()
		if s := r.Stats(); s.Timeouts != 1 || s.Errors != 1 || s.WaitTimeouts != 1 {
			t.Fatalf("stats = %+v", s)
		}
		// Cached from the end of the lookup, at 1s, for a minute.
		steps := []struct {
			at        time.Duration // since start
			wantCalls int
		}{
			{time.Second + time.Minute - time.Millisecond, 1},
			{time.Second + time.Minute, 2},
		}
		for i, s := range steps {
			time.Sleep(start.Add(s.at).Sub(time.Now()))
			if got := r.Resolve(t.Context(), "hang.test"); !equal(got, want) {
				t.Errorf("step %d: Resolve = %+v", i, got)
			}
			if n := f.callsFor("hang.test"); n != s.wantCalls {
				t.Errorf("step %d: %d lookups, want %d", i, n, s.wantCalls)
			}
		}
		time.Sleep(time.Second) // let the last lookup end
		synctest.Wait()
	})
}

// TestResolveCallerContext: a caller whose context ends stops waiting; the
// lookup goes on.
func TestResolveCallerContext(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		f := newFake(map[string]fakeAnswer{"slow.test": {mx: []*net.MX{mx(1, "mx.qq.com.")}, ttl: time.Hour, delay: 100 * time.Millisecond}})
		r := newResolver(t, f, resolve.Options{Timeout: time.Second})
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Millisecond)
		defer cancel()
		if got := r.Resolve(ctx, "slow.test"); got.Via != resolve.ViaDomain {
			t.Fatalf("Resolve = %+v", got)
		}
		time.Sleep(100 * time.Millisecond)
		synctest.Wait()
		if got := r.Resolve(t.Context(), "slow.test"); got.Provider != "tencent" {
			t.Fatalf("after the lookup, Resolve = %+v", got)
		}
	})
}

func TestResolveEviction(t *testing.T) {
	t.Parallel()
	answers := make(map[string]fakeAnswer)
	for i := range 10 {
		answers[fmt.Sprintf("d%d.test", i)] = fakeAnswer{mx: []*net.MX{mx(1, "mx.example.org.")}, ttl: time.Hour}
	}
	r := newResolver(t, newFake(answers), resolve.Options{MaxEntries: 3})
	for i := range 10 {
		r.Resolve(t.Context(), fmt.Sprintf("d%d.test", i))
	}
	if s := r.Stats(); s.Entries != 3 || s.Evictions != 7 || s.Lookups != 10 {
		t.Errorf("stats = %+v", s)
	}
}

// TestResolveClockBackwards: an entry stored after "now" counts as stale.
func TestResolveClockBackwards(t *testing.T) {
	t.Parallel()
	f := newFake(map[string]fakeAnswer{"d.test": {mx: []*net.MX{mx(1, "mx.example.org.")}, ttl: time.Hour}})
	clk := newClock()
	r := newResolver(t, f, resolve.Options{Now: clk.Now})
	r.Resolve(t.Context(), "d.test")
	clk.Advance(-time.Minute)
	r.Resolve(t.Context(), "d.test")
	if n := f.callsFor("d.test"); n != 2 {
		t.Errorf("%d lookups, want 2", n)
	}
}

// TestResolveNoAllocs guards the hot paths measured by the benchmarks.
func TestResolveNoAllocs(t *testing.T) {
	f := newFake(map[string]fakeAnswer{"corp.test": {mx: []*net.MX{mx(1, "aspmx.l.google.com.")}, ttl: time.Hour}})
	r := newResolver(t, f, resolve.Options{})
	ctx := t.Context()
	r.Resolve(ctx, "corp.test")
	r.Resolve(ctx, "nx.test")
	for _, d := range []string{"qq.com", "corp.test", "nx.test"} {
		if n := testing.AllocsPerRun(100, func() { r.Resolve(ctx, d) }); n != 0 {
			t.Errorf("Resolve(%q): %v allocs, want 0", d, n)
		}
	}
}

func equal(a, b resolve.Result) bool {
	return a.Provider == b.Provider && a.Via == b.Via && slices.Equal(a.MXHosts, b.MXHosts) && (a.MXHosts == nil) == (b.MXHosts == nil)
}
