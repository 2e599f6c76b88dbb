package smtpsim

import (
	"errors"
	"fmt"
	"io"
	"log"
	"math"
	"net"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/emersion/go-smtp"
)

// Options configure a [Server].
type Options struct {
	// Now is the provider's clock; nil means time.Now. A simulation passes
	// its virtual clock: every decision reads it once.
	Now func() time.Time
	// ErrorLog receives the SMTP server's unexpected errors; nil discards
	// them.
	ErrorLog *log.Logger
}

// Server is a simulated provider speaking SMTP on a loopback listener. It
// decides every RCPT by the hidden limits of its [Profile] for the
// connection's source IP. It is safe for concurrent use. Create it with
// [Listen]; stop it with [Server.Close].
type Server struct {
	profile Profile
	now     func() time.Time
	smtp    *smtp.Server
	lis     net.Listener
	done    chan struct{}

	mu  sync.Mutex
	ips map[string]*ipState
}

// ipState is everything the provider keeps about one sender IP.
type ipState struct {
	tiers    [NumTiers]counter // accepted messages, per tier
	attempts [NumTiers]counter // attempts, for the throttling stage (FarOver)
	stats    IPStats
	// blockedUntil is the end of the current rate block (a breach); zero
	// or past when there is none. A reputation block is reputation <= 0.
	blockedUntil time.Time
	// complaint accounting of the reputation model
	reputation   float64
	complaintDue float64 // messages until the next complaint
	reputationAt time.Time
}

// IPStats are the provider's counters for one sender IP.
type IPStats struct {
	IP string `json:"ip"`
	// Accepted counts messages accepted (250).
	Accepted uint64 `json:"accepted"`
	// Refused counts messages refused: throttled, breaching, or during a
	// block.
	Refused uint64 `json:"refused"`
	// Throttled counts the refusals of the throttling stage (Gmail's 421
	// 4.7.28), a subset of Refused.
	Throttled uint64 `json:"throttled"`
	// Blocks counts the blocks incurred: each breach that started a block,
	// and each fall of the reputation to zero. Messages refused during a
	// block do not start another.
	Blocks uint64 `json:"blocks"`
	// BlockedFor is the time spent blocked, up to the instant of the
	// snapshot.
	BlockedFor time.Duration `json:"blocked_ns"`
	// BlockLog lists every block, oldest first.
	BlockLog []BlockSpan `json:"block_log,omitempty"`
	// Reputation is the IP's reputation (1 without the reputation model).
	Reputation float64 `json:"reputation"`
}

// BlockSpan is one block of an IP.
type BlockSpan struct {
	// At is when the block began, Until when it ends (zero: a reputation
	// block, which does not end by itself).
	At    time.Time `json:"at"`
	Until time.Time `json:"until"`
	// Cause is the tier that was breached ("minute", "hour", "day"), or
	// "reputation".
	Cause string `json:"cause"`
}

// BlockedWithin returns how much of [from, to) the blocks of log cover,
// counting time covered by several blocks once. log must be ordered by At,
// as IPStats.BlockLog is.
func BlockedWithin(log []BlockSpan, from, to time.Time) time.Duration {
	var total time.Duration
	covered := from // everything before this is counted
	for _, b := range log {
		s, e := b.At, b.Until
		if e.IsZero() || e.After(to) {
			e = to
		}
		if s.Before(covered) {
			s = covered
		}
		if e.After(s) {
			total += e.Sub(s)
			covered = e
		}
	}
	return total
}

// Listen validates p, listens on addr ("127.0.0.1:0" when empty) and serves
// SMTP there until Close.
func Listen(addr string, p Profile, opts Options) (*Server, error) {
	if err := p.Validate(); err != nil {
		return nil, fmt.Errorf("profile %s: %w", p.Name, err)
	}
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", addr, err)
	}
	s := &Server{profile: p, now: opts.Now, lis: lis, done: make(chan struct{}), ips: make(map[string]*ipState)}
	if s.now == nil {
		s.now = time.Now
	}
	s.smtp = smtp.NewServer(smtp.BackendFunc(s.newSession))
	s.smtp.Domain = "mx." + p.Domain
	s.smtp.MaxRecipients = 100
	s.smtp.MaxMessageBytes = 1 << 20
	s.smtp.ErrorLog = opts.ErrorLog
	if s.smtp.ErrorLog == nil {
		s.smtp.ErrorLog = log.New(io.Discard, "", 0)
	}
	go func() {
		defer close(s.done)
		_ = s.smtp.Serve(lis)
	}()
	return s, nil
}

// Addr returns the address the server listens on ("127.0.0.1:40123").
func (s *Server) Addr() string { return s.lis.Addr().String() }

// Profile returns the server's profile.
func (s *Server) Profile() Profile { return s.profile }

// Close stops the server and closes every connection.
func (s *Server) Close() error {
	err := s.smtp.Close()
	// Serve may not have registered the listener with go-smtp yet, in which
	// case smtp.Close did not close it.
	s.lis.Close()
	<-s.done
	if errors.Is(err, smtp.ErrServerClosed) {
		return nil
	}
	return err
}

// Stats returns a snapshot of every IP's counters at now (time blocked is
// counted up to now), sorted by IP.
func (s *Server) Stats(now time.Time) []IPStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]IPStats, 0, len(s.ips))
	for _, st := range s.ips {
		out = append(out, st.snapshot(now))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].IP < out[j].IP })
	return out
}

// IP returns the counters of one sender IP at now (zero counters for an IP
// never seen).
func (s *Server) IP(ip string, now time.Time) IPStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st, ok := s.ips[ip]; ok {
		return st.snapshot(now)
	}
	return IPStats{IP: ip, Reputation: 1}
}

func (st *ipState) snapshot(now time.Time) IPStats {
	out := st.stats
	out.BlockLog = slices.Clone(st.stats.BlockLog)
	if len(out.BlockLog) > 0 {
		out.BlockedFor = BlockedWithin(out.BlockLog, out.BlockLog[0].At, now)
	}
	out.Reputation = st.reputation
	return out
}

// Complain lowers ip's reputation as n complaints would, at now. It does
// nothing without the reputation model.
func (s *Server) Complain(ip string, n int, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.profile.Reputation == nil {
		return
	}
	st := s.state(ip)
	s.recover(st, now)
	st.reputation = math.Max(0, st.reputation-float64(n)*s.profile.Reputation.Cost)
	s.checkReputation(st, now)
}

// state returns ip's state, creating it. Call with mu held.
func (s *Server) state(ip string) *ipState {
	st, ok := s.ips[ip]
	if !ok {
		st = &ipState{stats: IPStats{IP: ip}, reputation: 1}
		p := &s.profile
		for t := Tier(0); t < NumTiers; t++ {
			if l := p.Limits[t]; l > 0 {
				st.tiers[t] = newCounter(p, t, l)
				if p.FarOver > 0 {
					st.attempts[t] = newCounter(p, t, uint64(math.Ceil(p.FarOver*float64(l))))
				}
			}
		}
		if r := p.Reputation; r != nil && r.ComplaintRate > 0 {
			st.complaintDue = 1 / r.ComplaintRate
		}
		s.ips[ip] = st
	}
	return st
}

// Attempt decides one message from ip at now, as a RCPT would, and counts
// it. Tests and simulations normally go through SMTP instead.
func (s *Server) Attempt(ip string, now time.Time) Reply {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.attempt(ip, now)
}

// attempt is the provider's whole decision for one message. Call with mu
// held.
func (s *Server) attempt(ip string, now time.Time) Reply {
	p := &s.profile
	st := s.state(ip)
	n := now.UnixNano()
	if p.Reputation != nil {
		s.recover(st, now)
		if st.reputation <= 0 {
			st.stats.Refused++
			return p.BlockReply.withIP(ip)
		}
	}
	if now.Before(st.blockedUntil) {
		st.stats.Refused++
		return p.BlockReply.withIP(ip)
	}
	// Which tiers would this message breach? The longest one decides the
	// block.
	over := -1
	for t := Tier(0); t < NumTiers; t++ {
		if st.tiers[t] != nil && st.tiers[t].avail(n) == 0 {
			over = int(t)
		}
	}
	if p.FarOver > 0 {
		farOver := -1
		for t := Tier(0); t < NumTiers; t++ {
			if c := st.attempts[t]; c != nil {
				if c.avail(n) == 0 {
					farOver = int(t)
				} else {
					c.add(n)
				}
			}
		}
		if over >= 0 && farOver < 0 {
			st.stats.Refused++
			st.stats.Throttled++
			return p.ThrottleReply.withIP(ip)
		}
		if farOver > over {
			over = farOver
		}
	}
	if over >= 0 {
		s.block(st, Tier(over), now)
		st.stats.Refused++
		return p.BlockReply.withIP(ip)
	}
	for t := Tier(0); t < NumTiers; t++ {
		if st.tiers[t] != nil {
			st.tiers[t].add(n)
		}
	}
	st.stats.Accepted++
	if r := p.Reputation; r != nil && r.ComplaintRate > 0 {
		st.complaintDue--
		for st.complaintDue <= 0 {
			st.complaintDue += 1 / r.ComplaintRate
			st.reputation = math.Max(0, st.reputation-r.Cost)
		}
		s.checkReputation(st, now)
	}
	return p.okReply()
}

// block starts a block of st for a breach of tier t at now.
func (s *Server) block(st *ipState, t Tier, now time.Time) {
	b := s.profile.Blocks[t]
	until := now.Add(b.For)
	if b.DayEnd {
		loc := s.profile.location()
		tm := now.In(loc)
		y, m, d := tm.Date()
		if mid := time.Date(y, m, d+1, 0, 0, 0, 0, loc); mid.After(until) {
			until = mid
		}
	}
	st.blockedUntil = until
	st.stats.Blocks++
	st.stats.BlockLog = append(st.stats.BlockLog, BlockSpan{At: now, Until: until, Cause: t.String()})
}

// recover adds the reputation regained since it was last looked at.
func (s *Server) recover(st *ipState, now time.Time) {
	r := s.profile.Reputation
	if st.reputationAt.IsZero() || !now.After(st.reputationAt) {
		if st.reputationAt.IsZero() {
			st.reputationAt = now
		}
		return
	}
	if r.RecoveryPerDay > 0 && st.reputation < 1 {
		st.reputation = math.Min(1, st.reputation+r.RecoveryPerDay*now.Sub(st.reputationAt).Hours()/24)
		if st.reputation > 0 {
			s.endReputationBlock(st, now)
		}
	}
	st.reputationAt = now
}

// checkReputation starts a reputation block when the reputation reached
// zero.
func (s *Server) checkReputation(st *ipState, now time.Time) {
	if st.reputation > 0 {
		return
	}
	if k := len(st.stats.BlockLog); k > 0 && st.stats.BlockLog[k-1].Cause == "reputation" && st.stats.BlockLog[k-1].Until.IsZero() {
		return
	}
	st.stats.Blocks++
	st.stats.BlockLog = append(st.stats.BlockLog, BlockSpan{At: now, Cause: "reputation"})
}

// endReputationBlock closes an open reputation block at now.
func (s *Server) endReputationBlock(st *ipState, now time.Time) {
	if k := len(st.stats.BlockLog); k > 0 && st.stats.BlockLog[k-1].Cause == "reputation" && st.stats.BlockLog[k-1].Until.IsZero() {
		st.stats.BlockLog[k-1].Until = now
	}
}

// session is one SMTP connection; its IP is the connection's source
// address.
type session struct {
	s    *Server
	ip   string
	rcpt int // recipients accepted in the current transaction
}

func (s *Server) newSession(c *smtp.Conn) (smtp.Session, error) {
	ip := c.Conn().RemoteAddr().String()
	if host, _, err := net.SplitHostPort(ip); err == nil {
		ip = host
	}
	return &session{s: s, ip: ip}, nil
}

func (x *session) Mail(from string, opts *smtp.MailOptions) error { return nil }

// Rcpt decides the message: each recipient counts as one message.
func (x *session) Rcpt(to string, opts *smtp.RcptOptions) error {
	r := x.s.Attempt(x.ip, x.s.now())
	if r.OK() {
		x.rcpt++
		return nil
	}
	return toSMTPError(r)
}

func (x *session) Data(r io.Reader) error {
	if _, err := io.Copy(io.Discard, r); err != nil {
		return fmt.Errorf("read data: %w", err)
	}
	ok := x.s.profile.okReply()
	if ok.Message == "" {
		return nil
	}
	// go-smtp answers a nil error with its own 250; to send the provider's
	// own words, use the error path with a 2xx code, which it writes as is.
	return toSMTPError(ok)
}

func (x *session) Reset()        { x.rcpt = 0 }
func (x *session) Logout() error { return nil }

// toSMTPError turns a reply into the error go-smtp writes as that reply.
func toSMTPError(r Reply) *smtp.SMTPError {
	e := &smtp.SMTPError{Code: r.Code, Message: r.Message, EnhancedCode: smtp.NoEnhancedCode}
	if r.Enhanced != "" {
		var a, b, c int
		if _, err := fmt.Sscanf(r.Enhanced, "%d.%d.%d", &a, &b, &c); err == nil {
			e.EnhancedCode = smtp.EnhancedCode{a, b, c}
		}
	}
	return e
}

// Capacity returns how many messages one IP could deliver over [from, to)
// without ever being refused: what a sender that knew the hidden limits
// exactly, and sent each message at the first instant they allow it, would
// deliver. It ignores the reputation model. Its cost grows with the result.
func (p Profile) Capacity(from, to time.Time) uint64 {
	return uint64(len(p.Schedule(from, to)))
}

// Schedule returns the instants of that ideal sender's deliveries over
// [from, to), in order: Capacity is its length, and the number of its
// entries before t is the capacity of [from, t). A profile without limits
// has an unbounded capacity; Schedule then returns nil.
func (p Profile) Schedule(from, to time.Time) []time.Time {
	var cs []counter
	for t := Tier(0); t < NumTiers; t++ {
		if l := p.Limits[t]; l > 0 {
			cs = append(cs, newCounter(&p, t, l))
		}
	}
	if len(cs) == 0 {
		return nil
	}
	var out []time.Time
	n, end := from.UnixNano(), to.UnixNano()
	for n < end {
		avail := uint64(math.MaxUint64)
		for _, c := range cs {
			avail = min(avail, c.avail(n))
		}
		if avail == 0 {
			// Every exhausted tier must free up: jump to the latest of the
			// instants they do (a tier that is exhausted again by then makes
			// the loop jump once more).
			next := n + 1
			for _, c := range cs {
				if c.avail(n) == 0 {
					next = max(next, c.next(n))
				}
			}
			n = next
			continue
		}
		at := time.Unix(0, n)
		for range avail {
			for _, c := range cs {
				c.add(n)
			}
			out = append(out, at)
		}
	}
	return out
}
