package redisstore

import (
	"sync"
	"time"

	"github.com/sendgate/sendgate/limiter"
)

// maxCached bounds the block cache; when full, it is emptied (blocks are
// rare, so this only guards against a pathological fleet-wide block).
const maxCached = 100_000

// blockCache remembers BLOCKED and HELD deferrals per key until their end,
// at most BlockCacheTTL after they were seen. It is safe for concurrent use.
type blockCache struct {
	mu sync.Mutex
	m  map[limiter.Key]cachedBlock
}

type cachedBlock struct {
	d       limiter.Decision
	at      time.Time // when the decision was made (caller's clock)
	expires time.Time
}

func newBlockCache() *blockCache { return &blockCache{m: make(map[limiter.Key]cachedBlock)} }

// put remembers d, a BLOCKED or HELD deferral made at now.
func (c *blockCache) put(key limiter.Key, d limiter.Decision, now time.Time) {
	exp := now.Add(BlockCacheTTL)
	if !d.Until.IsZero() && d.Until.Before(exp) {
		exp = d.Until
	}
	if !exp.After(now) {
		return
	}
	c.mu.Lock()
	if len(c.m) >= maxCached {
		clear(c.m)
	}
	c.m[key] = cachedBlock{d: d, at: now, expires: exp}
	c.mu.Unlock()
}

// get returns the remembered deferral of key at now, its retry_after
// shortened by the time since it was made.
func (c *blockCache) get(key limiter.Key, now time.Time) (limiter.Decision, bool) {
	c.mu.Lock()
	e, ok := c.m[key]
	if ok && (!now.Before(e.expires) || now.Before(e.at)) {
		delete(c.m, key)
		ok = false
	}
	c.mu.Unlock()
	if !ok {
		return limiter.Decision{}, false
	}
	d := e.d
	if !d.Until.IsZero() {
		d.RetryAfter = max(d.RetryAfter-now.Sub(e.at), time.Millisecond)
	}
	return d, true
}

func (c *blockCache) drop(key limiter.Key) {
	c.mu.Lock()
	delete(c.m, key)
	c.mu.Unlock()
}
