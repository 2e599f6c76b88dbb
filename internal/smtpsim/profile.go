// Package smtpsim is a fake mailbox provider: an SMTP server on loopback
// that enforces hidden per-sender-IP limits per minute, hour and day and
// answers like a real provider when they are exceeded (QQ's `550 Ip
// frequency limited` and its minute/hour/day blocks, Gmail's 421 4.7.28
// throttling before a 550 5.7.1 block, Yahoo's 421 [TSS04] deferrals for
// hours), optionally with a reputation that complaints wear down.
//
// The sending IP is the connection's source address, so clients that bind
// 127.0.0.2, 127.0.0.3 ... (see [Dial]) are distinct senders. The clock is
// injected ([Options.Now]), so the provider runs in the virtual time of a
// simulation as well as in real time.
//
// A [Profile] is the provider's hidden behaviour; [Listen] serves one; the
// [Server] counts, per IP, the messages accepted and refused, the blocks
// incurred and the time spent blocked. [Profile.Capacity] is what the
// hidden limits allow one IP over an interval: the yardstick of goodput.
package smtpsim

import (
	"fmt"
	"strings"
	"time"
)

// Tier indexes the hidden limits: per minute, per hour, per day.
type Tier uint8

// The tiers, shortest window first.
const (
	Minute Tier = iota
	Hour
	Day
	// NumTiers is the number of tiers.
	NumTiers = 3
)

var tierNames = [NumTiers]string{"minute", "hour", "day"}

// String returns "minute", "hour" or "day". It never panics.
func (t Tier) String() string {
	if int(t) < NumTiers {
		return tierNames[t]
	}
	return fmt.Sprintf("Tier(%d)", uint8(t))
}

// Window returns the tier's window: 1m, 1h or 24h.
func (t Tier) Window() time.Duration {
	switch t {
	case Minute:
		return time.Minute
	case Hour:
		return time.Hour
	case Day:
		return 24 * time.Hour
	}
	return 0
}

// Limits holds one hidden limit per tier, in messages per sender IP per
// window. Zero means the tier does not apply.
type Limits [NumTiers]uint64

// Counting is how the provider counts messages against a limit of L per
// window W. Real providers do not say; the three models differ in how they
// treat bursts, and so in what a sender that paces with token buckets may do.
type Counting uint8

const (
	// Fixed counts per natural window in the provider's time zone (the
	// calendar minute, the clock hour, the local day), like a counter that
	// expires at the end of its window. At most L in each such window.
	Fixed Counting = iota
	// Sliding allows at most L in any window of length W: the strictest.
	Sliding
	// Bucket is a token bucket holding L that refills L per W: a full burst
	// of L, then one every W/L. sendgate's own tiers mean this.
	Bucket
)

var countingNames = [...]string{"fixed", "sliding", "bucket"}

// String returns "fixed", "sliding" or "bucket". It never panics.
func (c Counting) String() string {
	if int(c) < len(countingNames) {
		return countingNames[c]
	}
	return fmt.Sprintf("Counting(%d)", uint8(c))
}

// ParseCounting returns the counting model named s.
func ParseCounting(s string) (Counting, error) {
	for i, n := range countingNames {
		if strings.EqualFold(n, s) {
			return Counting(i), nil
		}
	}
	return 0, fmt.Errorf("unknown counting %q (want fixed, sliding or bucket)", s)
}

// Reply is an SMTP reply. Code 0 means there was none (the connection
// failed).
type Reply struct {
	// Code is the basic reply code (250, 421, 550).
	Code int
	// Enhanced is the enhanced status code ("4.7.28"), "" when the reply
	// has none.
	Enhanced string
	// Message is the text after the codes.
	Message string
}

// String returns the reply as it travels: "550 5.7.1 text", or "550 text"
// without an enhanced code.
func (r Reply) String() string {
	if r.Enhanced == "" {
		return fmt.Sprintf("%d %s", r.Code, r.Message)
	}
	return fmt.Sprintf("%d %s %s", r.Code, r.Enhanced, r.Message)
}

// OK reports whether the reply is a 2xx.
func (r Reply) OK() bool { return r.Code >= 200 && r.Code < 300 }

// withIP replaces every "{ip}" in the message with ip.
func (r Reply) withIP(ip string) Reply {
	if strings.Contains(r.Message, "{ip}") {
		r.Message = strings.ReplaceAll(r.Message, "{ip}", ip)
	}
	return r
}

// Block is how long a breach of a tier blocks the IP.
type Block struct {
	// For is the block's length.
	For time.Duration
	// DayEnd blocks until the next midnight in the provider's time zone
	// instead (and at least For).
	DayEnd bool
}

// Reputation is an optional model of an IP's standing with the provider:
// it starts at 1, every complaint lowers it by Cost, and at zero every
// message is refused with the block reply, whatever the volume (QQ's `Ip
// frequency limited` after one message a month: the fix is a whitelisting
// request, not waiting).
type Reputation struct {
	// ComplaintRate is the share of accepted messages that draw a
	// complaint (0.001 = one in a thousand), counted deterministically: the
	// n-th complaint comes with the ceil(n/rate)-th message.
	ComplaintRate float64
	// Cost is the reputation a complaint takes away (0.1 = ten complaints
	// to zero).
	Cost float64
	// RecoveryPerDay is the reputation regained per day without a
	// complaint; 0 means a lost reputation never comes back by itself.
	RecoveryPerDay float64
}

// Profile is the hidden behaviour of a simulated provider. The zero value
// accepts everything; start from [QQ], [Gmail] or [Yahoo].
type Profile struct {
	// Name is the profile's name ("qq").
	Name string
	// Provider is the name sendgate knows the provider by ("tencent").
	Provider string
	// Domain is the recipient domain the simulation sends to ("qq.com").
	Domain string
	// Limits are the hidden per-IP limits.
	Limits Limits
	// Counting is how the minute and hour tiers (and the day tier unless
	// CalendarDay) count.
	Counting Counting
	// CalendarDay makes the day tier a calendar day in Location, whatever
	// Counting says: QQ's "rest of the day" is a Beijing-time day.
	CalendarDay bool
	// Location is the provider's time zone (natural windows, calendar day,
	// day-end blocks); nil means UTC.
	Location *time.Location
	// Blocks says, per tier, how long a breach blocks the IP.
	Blocks [NumTiers]Block
	// BlockReply is the answer to a breach and to every message during a
	// block; "{ip}" in its message is replaced with the sender's IP.
	BlockReply Reply
	// FarOver, when positive, puts a throttling stage before the block:
	// a message over a limit is refused with ThrottleReply, and only when
	// the attempts in the tier's window reach FarOver times its limit is
	// the IP blocked (Gmail). Zero blocks on the first message over a
	// limit (QQ, Yahoo).
	FarOver float64
	// ThrottleReply is the answer over a limit while FarOver is not reached.
	ThrottleReply Reply
	// OKReply is the answer to an accepted message.
	OKReply Reply
	// Reputation, when non-nil, turns on the reputation model.
	Reputation *Reputation
}

// Validate reports the first problem with p.
func (p *Profile) Validate() error {
	switch {
	case p.Name == "":
		return fmt.Errorf("name: empty")
	case p.Domain == "":
		return fmt.Errorf("domain: empty")
	case p.Counting > Bucket:
		return fmt.Errorf("counting: %v is unknown", p.Counting)
	case p.FarOver < 0 || (p.FarOver > 0 && p.FarOver <= 1):
		return fmt.Errorf("far_over: %v is neither 0 nor above 1", p.FarOver)
	case p.FarOver > 0 && p.ThrottleReply.Code == 0:
		return fmt.Errorf("throttle_reply: missing, but far_over is set")
	case p.CalendarDay && p.Limits[Day] == 0:
		return fmt.Errorf("calendar_day: set, but there is no day limit")
	}
	for t, l := range p.Limits {
		if l > 1<<32 {
			return fmt.Errorf("limits.%s: %d is too large", Tier(t), l)
		}
		if l > 0 && p.Blocks[t].For <= 0 && !p.Blocks[t].DayEnd {
			return fmt.Errorf("blocks.%s: no block length", Tier(t))
		}
		if l > 0 && p.BlockReply.Code == 0 {
			return fmt.Errorf("block_reply: missing")
		}
	}
	if r := p.Reputation; r != nil {
		if r.ComplaintRate < 0 || r.ComplaintRate > 1 || r.Cost < 0 || r.RecoveryPerDay < 0 {
			return fmt.Errorf("reputation: rates must be in [0, 1] and costs not negative")
		}
		if p.BlockReply.Code == 0 {
			return fmt.Errorf("block_reply: missing")
		}
	}
	return nil
}

func (p *Profile) location() *time.Location {
	if p.Location == nil {
		return time.UTC
	}
	return p.Location
}

// okReply returns the reply to an accepted message.
func (p *Profile) okReply() Reply {
	if p.OKReply.Code != 0 {
		return p.OKReply
	}
	return Reply{Code: 250, Enhanced: "2.0.0", Message: "OK: queued"}
}

// Shanghai returns the Asia/Shanghai time zone, or a fixed UTC+8 zone of
// that name when the system has no time zone database.
func Shanghai() *time.Location {
	if loc, err := time.LoadLocation("Asia/Shanghai"); err == nil {
		return loc
	}
	return time.FixedZone("Asia/Shanghai", 8*3600)
}

// QQ returns a QQ-like profile (provider "tencent", domain "qq.com"):
// hidden limits of 20 a minute, 300 an hour and 5,000 a Beijing-time day
// per IP, counted in natural windows; the first message over a limit is
// refused with `550 Ip frequency limited` and blocks the IP for 10 minutes
// (minute limit), 2 hours (hour limit) or the rest of its day (day limit).
// Every field may be changed before use.
func QQ() Profile {
	return Profile{
		Name:        "qq",
		Provider:    "tencent",
		Domain:      "qq.com",
		Limits:      Limits{Minute: 20, Hour: 300, Day: 5000},
		Counting:    Fixed,
		CalendarDay: true,
		Location:    Shanghai(),
		Blocks:      [NumTiers]Block{Minute: {For: 10 * time.Minute}, Hour: {For: 2 * time.Hour}, Day: {DayEnd: true}},
		BlockReply: Reply{Code: 550, Message: "Ip frequency limited. " +
			"http://service.mail.qq.com/cgi-bin/help?subtype=1&&id=20022&&no=1000725"},
		OKReply: Reply{Code: 250, Message: "Ok: queued as "},
	}
}

// Gmail returns a Gmail-like profile (provider "google", domain
// "gmail.com"): soft limits of 60 a minute, 1,500 an hour and 20,000 a
// rolling day per IP; a message over a limit is refused with `421 4.7.28`
// (temporarily rate limited), and when the attempts in a window reach twice
// its limit the IP is blocked with `550 5.7.1` for an hour (minute and hour
// limits) or a day.
func Gmail() Profile {
	return Profile{
		Name:     "gmail",
		Provider: "google",
		Domain:   "gmail.com",
		Limits:   Limits{Minute: 60, Hour: 1500, Day: 20000},
		Counting: Fixed,
		Blocks:   [NumTiers]Block{Minute: {For: time.Hour}, Hour: {For: time.Hour}, Day: {For: 24 * time.Hour}},
		FarOver:  2,
		ThrottleReply: Reply{Code: 421, Enhanced: "4.7.28", Message: "[{ip}] Our system has detected an unusual rate of " +
			"unsolicited mail originating from your IP address. To protect our users from spam, mail sent from your " +
			"IP address has been temporarily rate limited. Please visit " +
			"https://support.google.com/mail/?p=UnsolicitedRateLimitError to review our Bulk Email Senders Guidelines."},
		BlockReply: Reply{Code: 550, Enhanced: "5.7.1", Message: "[{ip} 1] Our system has detected an unusual rate of " +
			"unsolicited mail originating from your IP address. To protect our users from spam, mail sent from your " +
			"IP address has been blocked. Please visit https://support.google.com/mail/?p=UnsolicitedIPError to " +
			"review our Bulk Email Senders Guidelines."},
		OKReply: Reply{Code: 250, Enhanced: "2.0.0", Message: "OK  1700000000 a1si123456wmq.12 - gsmtp"},
	}
}

// Yahoo returns a Yahoo-like profile (provider "yahoo", domain
// "yahoo.com"): hidden limits of 30 a minute, 600 an hour and 8,000 a
// rolling day per IP; the first message over a limit is deferred with `421
// 4.7.0 [TSS04]`, and so is every message for hours afterwards: 1 hour
// after a minute-limit breach, 4 after an hour-limit breach, 12 after a
// day-limit breach.
func Yahoo() Profile {
	return Profile{
		Name:     "yahoo",
		Provider: "yahoo",
		Domain:   "yahoo.com",
		Limits:   Limits{Minute: 30, Hour: 600, Day: 8000},
		Counting: Fixed,
		Blocks:   [NumTiers]Block{Minute: {For: time.Hour}, Hour: {For: 4 * time.Hour}, Day: {For: 12 * time.Hour}},
		BlockReply: Reply{Code: 421, Enhanced: "4.7.0", Message: "[TSS04] Messages from {ip} temporarily deferred due " +
			"to unexpected volume or user complaints - 4.16.55.1; see https://postmaster.yahooinc.com/error-codes"},
		OKReply: Reply{Code: 250, Message: "ok dirdel"},
	}
}

// ByName returns the built-in profile named "qq", "gmail" or "yahoo".
func ByName(name string) (Profile, error) {
	switch strings.ToLower(name) {
	case "qq", "tencent":
		return QQ(), nil
	case "gmail", "google":
		return Gmail(), nil
	case "yahoo":
		return Yahoo(), nil
	}
	return Profile{}, fmt.Errorf("unknown provider profile %q (want qq, gmail or yahoo)", name)
}
