package smtpsim

import "time"

// counter counts messages against one limit under one counting model. Its
// methods take the instant as Unix nanoseconds and must be called with
// instants that never go backwards by more than the model tolerates (a
// clock that goes back is treated as standing still). A counter is not safe
// for concurrent use; the Server guards it.
type counter interface {
	// avail returns how many messages the limit allows at n.
	avail(n int64) uint64
	// add counts one message at n; the caller checked avail.
	add(n int64)
	// next returns the earliest instant after n at which avail will be at
	// least 1, for a counter that is exhausted at n.
	next(n int64) int64
}

// newCounter returns the counter for tier t of p with the given limit (p's
// own limit, or a multiple of it for the attempts of a throttling stage).
func newCounter(p *Profile, t Tier, limit uint64) counter {
	if t == Day && p.CalendarDay {
		return &fixedCounter{limit: limit, tier: t, loc: p.location()}
	}
	switch p.Counting {
	case Sliding:
		return &slidingCounter{limit: limit, window: int64(t.Window())}
	case Bucket:
		w := int64(t.Window())
		return &bucketCounter{limit: limit, interval: (w + int64(limit) - 1) / int64(limit)}
	}
	return &fixedCounter{limit: limit, tier: t, loc: p.location()}
}

// fixedCounter counts per natural window in loc: calendar minute, clock
// hour, local day.
type fixedCounter struct {
	limit uint64
	tier  Tier
	loc   *time.Location
	start int64 // start of the window that used counts
	end   int64 // its end
	used  uint64
}

// bounds returns the natural window of c's tier containing n.
func (c *fixedCounter) bounds(n int64) (start, end int64) {
	if c.start != 0 && n >= c.start && n < c.end {
		return c.start, c.end
	}
	tm := time.Unix(0, n).In(c.loc)
	y, mo, d := tm.Date()
	h, mi, _ := tm.Clock()
	var s, e time.Time
	switch c.tier {
	case Minute:
		s = time.Date(y, mo, d, h, mi, 0, 0, c.loc)
		e = s.Add(time.Minute)
	case Hour:
		s = time.Date(y, mo, d, h, 0, 0, 0, c.loc)
		e = s.Add(time.Hour)
	default:
		s = time.Date(y, mo, d, 0, 0, 0, 0, c.loc)
		e = time.Date(y, mo, d+1, 0, 0, 0, 0, c.loc)
	}
	return s.UnixNano(), e.UnixNano()
}

func (c *fixedCounter) avail(n int64) uint64 {
	s, _ := c.bounds(n)
	if s != c.start {
		if s < c.start {
			// A clock that went back into an earlier window keeps the later
			// window's count: nothing is minted.
			return c.limit - min(c.used, c.limit)
		}
		return c.limit
	}
	return c.limit - min(c.used, c.limit)
}

func (c *fixedCounter) add(n int64) {
	s, e := c.bounds(n)
	if s > c.start {
		c.start, c.end, c.used = s, e, 0
	}
	c.used++
}

func (c *fixedCounter) next(n int64) int64 {
	_, e := c.bounds(n)
	return e
}

// slidingCounter allows at most limit messages in any window of length
// window: it keeps the instants of the last limit messages in a ring.
type slidingCounter struct {
	limit  uint64
	window int64
	ring   []int64 // instants, oldest at head
	head   int
	size   int
}

// prune forgets the messages that left the window ending at n.
func (c *slidingCounter) prune(n int64) {
	for c.size > 0 && c.ring[c.head] <= n-c.window {
		c.head = (c.head + 1) % len(c.ring)
		c.size--
	}
}

func (c *slidingCounter) avail(n int64) uint64 {
	c.prune(n)
	return c.limit - uint64(c.size)
}

func (c *slidingCounter) add(n int64) {
	if c.ring == nil {
		c.ring = make([]int64, c.limit)
	}
	c.prune(n)
	if uint64(c.size) == c.limit {
		return // the caller did not check avail; never count past the limit
	}
	c.ring[(c.head+c.size)%len(c.ring)] = n
	c.size++
}

func (c *slidingCounter) next(n int64) int64 {
	c.prune(n)
	if uint64(c.size) < c.limit {
		return n
	}
	return c.ring[c.head] + c.window
}

// bucketCounter is a token bucket holding limit messages that refills one
// every interval, kept as a theoretical arrival time (tat): the instant the
// bucket is full again.
type bucketCounter struct {
	limit    uint64
	interval int64
	tat      int64
}

func (c *bucketCounter) debt(n int64) int64 {
	if c.tat > n {
		return c.tat - n
	}
	return 0
}

func (c *bucketCounter) avail(n int64) uint64 {
	r := (int64(c.limit)*c.interval - c.debt(n)) / c.interval
	if r < 0 {
		return 0
	}
	return uint64(r)
}

func (c *bucketCounter) add(n int64) {
	c.tat = n + c.debt(n) + c.interval
}

func (c *bucketCounter) next(n int64) int64 {
	over := c.debt(n) + c.interval - int64(c.limit)*c.interval
	if over <= 0 {
		return n
	}
	return n + over
}
