package smtpsim_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sendgate/sendgate/internal/smtpsim"
)

// clock is a settable virtual clock shared by a test and its provider.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

// bj is 10:00 on a Monday in Beijing: natural minutes and hours start here.
var bj = time.Date(2026, 1, 5, 10, 0, 0, 0, smtpsim.Shanghai())

// step sends one message at t0+at from ip and expects a reply.
type step struct {
	at       time.Duration
	ip       string
	code     int
	enhanced string
	text     string // a substring of the reply's message
}

func qqProfile(l smtpsim.Limits) smtpsim.Profile {
	p := smtpsim.QQ()
	p.Limits = l
	return p
}

func TestProfiles(t *testing.T) {
	t.Parallel()
	const a, b = "127.0.0.2", "127.0.0.3"
	const freq = "Ip frequency limited"
	withRep := qqProfile(smtpsim.Limits{smtpsim.Minute: 100, smtpsim.Hour: 1000, smtpsim.Day: 10000})
	withRep.Reputation = &smtpsim.Reputation{ComplaintRate: 1, Cost: 0.5}
	gmail := smtpsim.Gmail()
	gmail.Limits = smtpsim.Limits{smtpsim.Minute: 3, smtpsim.Hour: 100, smtpsim.Day: 1000}
	yahoo := smtpsim.Yahoo()
	yahoo.Limits = smtpsim.Limits{smtpsim.Minute: 2, smtpsim.Hour: 100, smtpsim.Day: 1000}
	sliding := qqProfile(smtpsim.Limits{smtpsim.Minute: 2})
	sliding.Counting, sliding.CalendarDay = smtpsim.Sliding, false
	bucket := qqProfile(smtpsim.Limits{smtpsim.Minute: 2})
	bucket.Counting, bucket.CalendarDay = smtpsim.Bucket, false

	tests := []struct {
		name    string
		profile smtpsim.Profile
		steps   []step
		// want per IP at the end (t0 + the last step's offset)
		want map[string]smtpsim.IPStats
	}{
		{
			name:    "qq minute limit blocks for 10 minutes, per IP",
			profile: qqProfile(smtpsim.Limits{smtpsim.Minute: 3, smtpsim.Hour: 100, smtpsim.Day: 1000}),
			steps: []step{
				{0, a, 250, "", "queued"},
				{time.Second, a, 250, "", ""},
				{2 * time.Second, a, 250, "", ""},
				{10 * time.Second, a, 550, "", freq}, // the 4th in the minute: block
				{11 * time.Second, b, 250, "", ""},   // another IP is another sender
				{61 * time.Second, a, 550, "", freq}, // a new minute, but blocked
				{5 * time.Minute, a, 550, "", freq},  // still blocked: a refusal, not a new block
				{10*time.Minute + 9*time.Second, a, 550, "", freq},
				{10*time.Minute + 10*time.Second, a, 250, "", ""}, // the block is over
			},
			want: map[string]smtpsim.IPStats{
				a: {Accepted: 4, Refused: 4, Blocks: 1, BlockedFor: 10 * time.Minute},
				b: {Accepted: 1},
			},
		},
		{
			name:    "qq hour limit blocks for 2 hours",
			profile: qqProfile(smtpsim.Limits{smtpsim.Minute: 100, smtpsim.Hour: 3, smtpsim.Day: 1000}),
			steps: []step{
				{0, a, 250, "", ""},
				{time.Minute, a, 250, "", ""},
				{59 * time.Minute, a, 250, "", ""},
				{59*time.Minute + 30*time.Second, a, 550, "", freq},
				{61 * time.Minute, a, 550, "", freq}, // a new hour, still blocked
				{2*time.Hour + 59*time.Minute + 30*time.Second, a, 250, "", ""},
			},
			want: map[string]smtpsim.IPStats{a: {Accepted: 4, Refused: 2, Blocks: 1, BlockedFor: 2 * time.Hour}},
		},
		{
			name:    "qq day limit blocks for the rest of the Beijing day",
			profile: qqProfile(smtpsim.Limits{smtpsim.Minute: 100, smtpsim.Hour: 100, smtpsim.Day: 2}),
			steps: []step{
				{0, a, 250, "", ""},
				{time.Hour, a, 250, "", ""},
				{13 * time.Hour, a, 550, "", freq},                // 23:00 Beijing: the day's third
				{13*time.Hour + 59*time.Minute, a, 550, "", freq}, // 23:59
				{14 * time.Hour, a, 250, "", ""},                  // 00:00 Beijing: a new day
			},
			want: map[string]smtpsim.IPStats{a: {Accepted: 3, Refused: 2, Blocks: 1, BlockedFor: time.Hour}},
		},
		{
			name:    "qq reputation at zero refuses every message far below the limits",
			profile: withRep,
			steps: []step{
				{0, a, 250, "", ""},
				{time.Hour, a, 250, "", ""}, // second complaint: reputation 0
				{48 * time.Hour, a, 550, "", freq},
				{30 * 24 * time.Hour, a, 550, "", freq}, // a month later: still refused
				{30 * 24 * time.Hour, b, 250, "", ""},
			},
			want: map[string]smtpsim.IPStats{
				a: {Accepted: 2, Refused: 2, Blocks: 1, BlockedFor: 30*24*time.Hour - time.Hour},
				b: {Accepted: 1, Reputation: 0.5}, // one complaint
			},
		},
		{
			name:    "gmail throttles with 421 4.7.28, then blocks with 550 5.7.1 when far over",
			profile: gmail,
			steps: []step{
				{0, a, 250, "2.0.0", "gsmtp"},
				{time.Second, a, 250, "2.0.0", ""},
				{2 * time.Second, a, 250, "2.0.0", ""},
				{3 * time.Second, a, 421, "4.7.28", "[127.0.0.2] Our system has detected an unusual rate"},
				{4 * time.Second, a, 421, "4.7.28", "temporarily rate limited"},
				{5 * time.Second, a, 421, "4.7.28", ""},
				{6 * time.Second, a, 550, "5.7.1", "has been blocked"}, // 7th attempt: twice the limit reached
				{2 * time.Minute, a, 550, "5.7.1", ""},
				{time.Hour + 6*time.Second, a, 250, "2.0.0", ""},
			},
			want: map[string]smtpsim.IPStats{a: {Accepted: 4, Refused: 5, Throttled: 3, Blocks: 1, BlockedFor: time.Hour}},
		},
		{
			name:    "yahoo defers with 421 4.7.0 [TSS04] for an hour",
			profile: yahoo,
			steps: []step{
				{0, a, 250, "", "ok"},
				{time.Second, a, 250, "", ""},
				{2 * time.Second, a, 421, "4.7.0", "[TSS04] Messages from 127.0.0.2 temporarily deferred"},
				{59 * time.Minute, a, 421, "4.7.0", "[TSS04]"},
				{time.Hour + 2*time.Second, a, 250, "", ""},
			},
			want: map[string]smtpsim.IPStats{a: {Accepted: 3, Refused: 2, Blocks: 1, BlockedFor: time.Hour}},
		},
		{
			name:    "sliding window: at most the limit in any 60 seconds",
			profile: sliding,
			steps: []step{
				{30 * time.Second, a, 250, "", ""},
				{59 * time.Second, a, 250, "", ""},
				{89 * time.Second, a, 550, "", freq}, // 30s and 59s are both within the last minute
			},
			want: map[string]smtpsim.IPStats{a: {Accepted: 2, Refused: 1, Blocks: 1, BlockedFor: 0}},
		},
		{
			name:    "fixed window: a new calendar minute starts afresh",
			profile: func() smtpsim.Profile { p := sliding; p.Counting = smtpsim.Fixed; return p }(),
			steps: []step{
				{30 * time.Second, a, 250, "", ""},
				{59 * time.Second, a, 250, "", ""},
				{60 * time.Second, a, 250, "", ""},
				{61 * time.Second, a, 250, "", ""},
				{62 * time.Second, a, 550, "", freq},
			},
			want: map[string]smtpsim.IPStats{a: {Accepted: 4, Refused: 1, Blocks: 1, BlockedFor: 0}},
		},
		{
			name:    "bucket: a burst of the limit, then one per window/limit",
			profile: bucket,
			steps: []step{
				{0, a, 250, "", ""},
				{0, a, 250, "", ""},
				{29 * time.Second, a, 550, "", freq}, // one token back only at 30s
				{10*time.Minute + 29*time.Second, a, 250, "", ""},
			},
			want: map[string]smtpsim.IPStats{a: {Accepted: 3, Refused: 1, Blocks: 1, BlockedFor: 10 * time.Minute}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			clk := &clock{t: bj}
			srv, err := smtpsim.Listen("", tt.profile, smtpsim.Options{Now: clk.Now})
			if err != nil {
				t.Fatalf("Listen: %v", err)
			}
			t.Cleanup(func() { srv.Close() })
			ctx := context.Background()
			senders := map[string]*smtpsim.Sender{}
			var last time.Duration
			for i, s := range tt.steps {
				snd, ok := senders[s.ip]
				if !ok {
					snd, err = smtpsim.Dial(ctx, srv.Addr(), s.ip)
					if err != nil {
						t.Fatalf("Dial: %v", err)
					}
					t.Cleanup(func() { snd.Close() })
					senders[s.ip] = snd
				}
				clk.Set(bj.Add(s.at))
				r, err := snd.Send(ctx, "news@sender.example", "user@"+tt.profile.Domain, []byte("Subject: hi\r\n\r\nhello\r\n"))
				if err != nil {
					t.Fatalf("step %d: Send: %v", i, err)
				}
				if r.Code != s.code || r.Enhanced != s.enhanced || !strings.Contains(r.Message, s.text) {
					t.Errorf("step %d (+%v from %s): got %q (enhanced %q), want %d %q containing %q", i, s.at, s.ip, r.String(), r.Enhanced, s.code, s.enhanced, s.text)
				}
				last = s.at
			}
			for ip, want := range tt.want {
				got := srv.IP(ip, bj.Add(last))
				if got.Accepted != want.Accepted || got.Refused != want.Refused || got.Throttled != want.Throttled ||
					got.Blocks != want.Blocks || got.BlockedFor != want.BlockedFor {
					t.Errorf("%s: got accepted %d refused %d throttled %d blocks %d blocked %v, want %d %d %d %d %v", ip,
						got.Accepted, got.Refused, got.Throttled, got.Blocks, got.BlockedFor,
						want.Accepted, want.Refused, want.Throttled, want.Blocks, want.BlockedFor)
				}
				if want.Reputation != 0 && got.Reputation != want.Reputation {
					t.Errorf("%s: reputation %v, want %v", ip, got.Reputation, want.Reputation)
				}
			}
		})
	}
}

func TestComplain(t *testing.T) {
	t.Parallel()
	p := qqProfile(smtpsim.Limits{smtpsim.Minute: 100})
	p.CalendarDay = false
	p.Reputation = &smtpsim.Reputation{Cost: 0.25, RecoveryPerDay: 0.5}
	srv, err := smtpsim.Listen("", p, smtpsim.Options{Now: func() time.Time { return bj }})
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	defer srv.Close()
	const ip = "127.0.0.9"
	steps := []struct {
		at         time.Duration
		complaints int
		want       int
	}{
		{0, 3, 250},              // 0.25 left
		{time.Minute, 2, 550},    // zero: a block, whatever the volume
		{12 * time.Hour, 0, 250}, // half a day at 0.5 a day: the block is over
		{36 * time.Hour, 0, 250},
	}
	for i, s := range steps {
		now := bj.Add(s.at)
		srv.Complain(ip, s.complaints, now)
		if r := srv.Attempt(ip, now); r.Code != s.want {
			t.Errorf("step %d: %v, want %d", i, r, s.want)
		}
	}
	st := srv.IP(ip, bj.Add(36*time.Hour))
	if st.Blocks != 1 || st.BlockedFor != 12*time.Hour-time.Minute {
		t.Errorf("blocks %d blocked %v, want 1 and 11h59m", st.Blocks, st.BlockedFor)
	}
}

func TestCapacity(t *testing.T) {
	t.Parallel()
	mid := time.Date(2026, 1, 5, 0, 0, 0, 0, smtpsim.Shanghai())
	qq := smtpsim.QQ() // 20/min, 300/h, 5000 a Beijing day
	sliding, bucket := qq, qq
	sliding.Counting, bucket.Counting = smtpsim.Sliding, smtpsim.Bucket
	tests := []struct {
		name     string
		p        smtpsim.Profile
		from, to time.Time
		lo, hi   uint64
	}{
		{"fixed hour", qq, mid, mid.Add(time.Hour), 300, 300},
		{"fixed minute", qq, mid, mid.Add(time.Minute), 20, 20},
		{"fixed day is the day limit", qq, mid, mid.Add(24 * time.Hour), 5000, 5000},
		{"fixed two days", qq, mid, mid.Add(48 * time.Hour), 10000, 10000},
		{"fixed half past: two clock hours", qq, mid.Add(30 * time.Minute), mid.Add(90 * time.Minute), 600, 600},
		{"sliding hour", sliding, mid, mid.Add(time.Hour), 300, 300},
		{"sliding two hours", sliding, mid, mid.Add(2 * time.Hour), 600, 600},
		// A full hour bucket, then its refill, within the minute tier's pace.
		{"bucket hour", bucket, mid, mid.Add(time.Hour), 595, 601},
		{"bucket day is still the calendar day", bucket, mid, mid.Add(24 * time.Hour), 5000, 5000},
	}
	for _, tt := range tests {
		if got := tt.p.Capacity(tt.from, tt.to); got < tt.lo || got > tt.hi {
			t.Errorf("%s: capacity %d, want [%d, %d]", tt.name, got, tt.lo, tt.hi)
		}
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	bad := []func(p *smtpsim.Profile){
		func(p *smtpsim.Profile) { p.Domain = "" },
		func(p *smtpsim.Profile) { p.FarOver = 0.5 },
		func(p *smtpsim.Profile) { p.Blocks[smtpsim.Hour] = smtpsim.Block{} },
		func(p *smtpsim.Profile) { p.Limits[smtpsim.Day] = 0 }, // calendar day without a day limit
	}
	for i, f := range bad {
		p := smtpsim.QQ()
		f(&p)
		if err := p.Validate(); err == nil {
			t.Errorf("case %d: Validate accepted a bad profile", i)
		}
	}
	for _, name := range []string{"qq", "gmail", "yahoo"} {
		p, err := smtpsim.ByName(name)
		if err != nil {
			t.Fatalf("ByName(%s): %v", name, err)
		}
		if err := p.Validate(); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestBlockedWithin(t *testing.T) {
	t.Parallel()
	at := func(m int) time.Time { return bj.Add(time.Duration(m) * time.Minute) }
	log := []smtpsim.BlockSpan{
		{At: at(0), Until: at(10)},
		{At: at(5), Until: at(15)}, // overlaps the first: counted once
		{At: at(30), Until: at(40)},
		{At: at(50)}, // open-ended: up to the end of the interval
	}
	tests := []struct {
		from, to int
		want     time.Duration
	}{
		{0, 60, (15 + 10 + 10) * time.Minute},
		{8, 35, (7 + 5) * time.Minute},
		{15, 30, 0},
		{55, 56, time.Minute},
	}
	for _, tt := range tests {
		if got := smtpsim.BlockedWithin(log, at(tt.from), at(tt.to)); got != tt.want {
			t.Errorf("[%d, %d): %v, want %v", tt.from, tt.to, got, tt.want)
		}
	}
}
