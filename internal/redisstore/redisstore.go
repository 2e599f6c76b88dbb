// Package redisstore is the Redis (or Valkey) [limiter.Store], for several
// sendgate replicas sharing one truth: Redis 7 standalone or a Redis Cluster.
//
// All of a key's data is one hash, <prefix>{<ip>|<provider>}, whose braces
// are the Cluster hash tag, so no operation ever spans two slots.
//
//   - Admit is exactly one round trip: one EVALSHA of a Lua script that reads
//     the key's reputation fields and every tier, decides as [limiter.Admit]
//     does, and takes the tokens, on the server's clock (TIME) so that
//     replicas with skewed clocks agree. The script works in integer
//     nanoseconds like the Go code and is tested to give the same answers.
//   - Refund is one script call too.
//   - Update (reports and operator actions) keeps the state machine in Go:
//     it reads the record (HGETALL), runs fn, and writes Rep back with a
//     script that compares Rep.Version (compare-and-set), retrying on a
//     conflict, so that concurrent reports never lose a transition or a
//     strike.
//   - A local cache of blocks remembers a BLOCKED or HELD deferral until its
//     end (at most [BlockCacheTTL]), so a blocked key costs no round trip;
//     an Update that moves the state drops the entry locally and publishes
//     the key on <prefix>invalidate so that other replicas drop theirs.
//
// Every failure to reach Redis (refused, timed out, the context's deadline)
// is returned wrapped with [limiter.ErrUnavailable]; the client reconnects by
// itself when Redis returns. The client never retries a command by itself: a
// script call that timed out may have run, and running it again would take
// its tokens twice.
//
// Persistence: blocks must survive a Redis restart. Run Redis with
// "appendonly yes" and "appendfsync everysec" (at most a second of writes
// lost) and keep RDB snapshots for backups; in a Cluster, give each master a
// replica. Without persistence a restarted Redis forgets every block, every
// strike and every bucket.
package redisstore

import (
	"context"
	"crypto/tls"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sendgate/sendgate/limiter"
)

//go:embed script.lua
var admitSource string

//go:embed cas.lua
var casSource string

// DefaultPrefix is the key prefix when Options.Prefix is empty.
const DefaultPrefix = "sg:"

// DefaultTimeout is the network timeout when Options.Timeout is zero.
const DefaultTimeout = 500 * time.Millisecond

// DefaultIdleTTL is how long a key untouched by any call is kept: long
// enough that strikes have decayed and learned ceilings have risen back to
// the configured limits many times over.
const DefaultIdleTTL = 30 * 24 * time.Hour

// BlockCacheTTL is the longest a replica trusts a cached block without asking
// Redis: the safety net behind the invalidation messages.
const BlockCacheTTL = 5 * time.Second

// maxUpdateAttempts bounds the compare-and-set retries of one Update (the
// context's deadline bounds them too). Conflicts need other writers of the
// same key at the same instant, so this is only reached by a pathological
// pile-up on one key.
const maxUpdateAttempts = 1000

// Options configures a [Store].
type Options struct {
	// Addrs are host:port addresses: one for a standalone server (or a
	// Cluster's node, detected), several for a Cluster's seed nodes.
	Addrs []string
	// Cluster forces Cluster mode. When false, Cluster mode is chosen when
	// there are several addresses or the one server says cluster_enabled.
	Cluster bool
	// Username and Password authenticate (ACL user, or password only).
	Username, Password string
	// TLS, when set, connects over TLS.
	TLS *tls.Config
	// Prefix is prepended to every key and to the invalidation channel;
	// empty means [DefaultPrefix].
	Prefix string
	// Timeout bounds dialing, each read and each write; zero means
	// [DefaultTimeout]. A context deadline, when shorter, wins.
	Timeout time.Duration
	// NoBlockCache turns the local cache of blocks off.
	NoBlockCache bool
	// UseCallerClock makes Admit and Refund use the now they are given
	// instead of the server's clock. For tests with fixed instants only:
	// replicas with skewed clocks would disagree.
	UseCallerClock bool
	// PoolSize is the connection pool size per node; zero means go-redis's
	// default (10 per CPU).
	PoolSize int
	// IdleTTL is how long a key is kept after its last write: Redis deletes
	// it then (PEXPIRE). A HELD key and a key that needs remediation are
	// never expired: they wait for an operator. Zero means
	// [DefaultIdleTTL]; negative keeps every key forever.
	IdleTTL time.Duration
}

// Store is the Redis store. It is safe for concurrent use. Create it with
// [New] and Close it when done.
type Store struct {
	client  redis.UniversalClient
	cluster bool
	prefix  string
	opts    Options
	ttl     string // the idle TTL argument of the scripts: milliseconds, "0" for none
	admit   *redis.Script
	cas     *redis.Script
	args    sync.Map // *limiter.Provider -> []any: the provider's ARGV tail
	cache   *blockCache
	pubsub  *redis.PubSub
	done    chan struct{}
}

var _ limiter.Store = (*Store)(nil)

// New connects to Redis, detects Cluster mode, loads the scripts and, unless
// the block cache is off, subscribes to the invalidation channel. The
// returned error wraps [limiter.ErrUnavailable] when Redis cannot be reached.
func New(ctx context.Context, opts Options) (*Store, error) {
	if len(opts.Addrs) == 0 {
		return nil, errors.New("redis: no address")
	}
	if opts.Prefix == "" {
		opts.Prefix = DefaultPrefix
	}
	switch {
	case opts.IdleTTL == 0:
		opts.IdleTTL = DefaultIdleTTL
	case opts.IdleTTL < 0:
		opts.IdleTTL = 0
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	uo := &redis.UniversalOptions{
		Addrs:    opts.Addrs,
		Username: opts.Username, Password: opts.Password,
		TLSConfig:   opts.TLS,
		DialTimeout: opts.Timeout, ReadTimeout: opts.Timeout, WriteTimeout: opts.Timeout,
		ContextTimeoutEnabled: true,
		// No automatic retries: a script call that timed out may have run,
		// and running it again would take its tokens twice. A dead pooled
		// connection is detected when it is taken from the pool.
		MaxRetries:    -1,
		DialerRetries: 1,
		PoolSize:      opts.PoolSize,
	}
	cluster := opts.Cluster || len(opts.Addrs) > 1
	if !cluster {
		c := redis.NewClient(uo.Simple())
		info, err := c.Info(ctx, "cluster").Result()
		if err != nil {
			c.Close()
			return nil, unavailable("connect", err)
		}
		cluster = strings.Contains(info, "cluster_enabled:1")
		if !cluster {
			return newStore(ctx, c, false, opts)
		}
		c.Close()
	}
	return newStore(ctx, redis.NewClusterClient(uo.Cluster()), true, opts)
}

func newStore(ctx context.Context, c redis.UniversalClient, cluster bool, opts Options) (*Store, error) {
	s := &Store{
		client: c, cluster: cluster, prefix: opts.Prefix, opts: opts,
		ttl:   strconv.FormatInt(opts.IdleTTL.Milliseconds(), 10),
		admit: redis.NewScript(admitSource),
		cas:   redis.NewScript(casSource),
		done:  make(chan struct{}),
	}
	if err := s.loadScripts(ctx); err != nil {
		c.Close()
		return nil, err
	}
	if !opts.NoBlockCache {
		s.cache = newBlockCache()
		s.pubsub = c.Subscribe(ctx, s.prefix+"invalidate")
		if _, err := s.pubsub.Receive(ctx); err != nil {
			s.pubsub.Close()
			c.Close()
			return nil, unavailable("subscribe", err)
		}
		go s.invalidations(s.pubsub.Channel())
	}
	return s, nil
}

// loadScripts loads the scripts on every master, so EVALSHA finds them.
func (s *Store) loadScripts(ctx context.Context) error {
	load := func(ctx context.Context, c *redis.Client) error {
		for _, sc := range []*redis.Script{s.admit, s.cas} {
			if err := sc.Load(ctx, c).Err(); err != nil {
				return err
			}
		}
		return nil
	}
	var err error
	if cc, ok := s.client.(*redis.ClusterClient); ok {
		err = cc.ForEachMaster(ctx, load)
	} else {
		err = load(ctx, s.client.(*redis.Client))
	}
	if err != nil {
		return unavailable("load scripts", err)
	}
	return nil
}

func (s *Store) invalidations(ch <-chan *redis.Message) {
	for m := range ch {
		ip, provider, ok := strings.Cut(m.Payload, "|")
		if ok {
			s.cache.drop(limiter.Key{IP: ip, Provider: provider})
		}
	}
}

// Cluster reports whether the store talks to a Redis Cluster.
func (s *Store) Cluster() bool { return s.cluster }

// Ping checks that Redis answers (every master, in Cluster mode), for
// readiness. The error wraps [limiter.ErrUnavailable].
func (s *Store) Ping(ctx context.Context) error {
	var err error
	if cc, ok := s.client.(*redis.ClusterClient); ok {
		err = cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error { return c.Ping(ctx).Err() })
	} else {
		err = s.client.Ping(ctx).Err()
	}
	if err != nil {
		return unavailable("ping", err)
	}
	return nil
}

// Close stops the invalidation subscriber and closes the connections.
func (s *Store) Close() error {
	if s.pubsub != nil {
		s.pubsub.Close()
	}
	return s.client.Close()
}

// unavailable wraps a failure to talk to Redis with limiter.ErrUnavailable.
func unavailable(op string, err error) error {
	return fmt.Errorf("redis %s: %w: %w", op, limiter.ErrUnavailable, err)
}

// Admit runs the admission step on the server: see the package comment.
// With the block cache on, a key this replica saw BLOCKED or HELD is
// answered locally until the block's end, with the tiers as they were then.
func (s *Store) Admit(ctx context.Context, key limiter.Key, p *limiter.Provider, count uint32, dryRun bool, now time.Time) (limiter.Decision, error) {
	if s.cache != nil {
		if d, ok := s.cache.get(key, now); ok {
			return d, nil
		}
	}
	args := s.scriptArgs(p, 'a', count, dryRun, now)
	v, err := s.admit.Run(ctx, s.client, []string{hashKey(s.prefix, key)}, args...).Slice()
	if err != nil {
		return limiter.Decision{}, unavailable("admit", err)
	}
	d, err := decodeDecision(v, p)
	if err != nil {
		return limiter.Decision{}, fmt.Errorf("redis admit: %w", err)
	}
	s.remember(key, d, now)
	return d, nil
}

func (s *Store) remember(key limiter.Key, d limiter.Decision, now time.Time) {
	if s.cache != nil && d.Verdict == limiter.Defer && (d.Reason == limiter.ReasonBlocked || d.Reason == limiter.ReasonHeld) {
		s.cache.put(key, d, now)
	}
}

// Refund gives count messages back to the key's tiers, in one script call.
func (s *Store) Refund(ctx context.Context, key limiter.Key, p *limiter.Provider, count uint32, now time.Time) error {
	args := s.scriptArgs(p, 'r', count, false, now)
	if err := s.admit.Run(ctx, s.client, []string{hashKey(s.prefix, key)}, args...).Err(); err != nil {
		return unavailable("refund", err)
	}
	return nil
}

// AdmitItem is one check of a batch.
type AdmitItem = limiter.AdmitItem

var _ limiter.BatchAdmitter = (*Store)(nil)

// AdmitBatch admits every item, pipelining the script calls: one round trip
// per shard involved (go-redis splits a Cluster pipeline by node). Items of
// the same key are decided in order. The error, when Redis fails, wraps
// [limiter.ErrUnavailable] and no decision is returned; the caller cannot
// know which items took tokens.
func (s *Store) AdmitBatch(ctx context.Context, items []AdmitItem) ([]limiter.Decision, error) {
	out := make([]limiter.Decision, len(items))
	cmds := make([]*redis.Cmd, len(items))
	pipe := s.client.Pipeline()
	n := 0
	for i, it := range items {
		if s.cache != nil {
			if d, ok := s.cache.get(it.Key, it.Now); ok {
				out[i] = d
				continue
			}
		}
		args := s.scriptArgs(it.Provider, 'a', it.Count, it.DryRun, it.Now)
		cmds[i] = s.admit.EvalSha(ctx, pipe, []string{hashKey(s.prefix, it.Key)}, args...)
		n++
	}
	if n == 0 {
		return out, nil
	}
	_, err := pipe.Exec(ctx)
	if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
		// Redis restarted and forgot the script: load it and run the
		// items that failed (a NOSCRIPT item did not run).
		if lerr := s.loadScripts(ctx); lerr != nil {
			return nil, lerr
		}
		for i, c := range cmds {
			if c != nil && redis.HasErrorPrefix(c.Err(), "NOSCRIPT") {
				it := items[i]
				args := s.scriptArgs(it.Provider, 'a', it.Count, it.DryRun, it.Now)
				cmds[i] = s.admit.Run(ctx, s.client, []string{hashKey(s.prefix, it.Key)}, args...)
			}
		}
		err = nil
	}
	if err != nil {
		return nil, unavailable("admit batch", err)
	}
	for i, c := range cmds {
		if c == nil {
			continue
		}
		v, err := c.Slice()
		if err != nil {
			return nil, unavailable("admit batch", err)
		}
		d, err := decodeDecision(v, items[i].Provider)
		if err != nil {
			return nil, fmt.Errorf("redis admit batch: %w", err)
		}
		s.remember(items[i].Key, d, items[i].Now)
		out[i] = d
	}
	return out, nil
}

// scriptArgs returns the ARGV of the admission script (see script.lua).
func (s *Store) scriptArgs(p *limiter.Provider, mode byte, count uint32, dryRun bool, now time.Time) []any {
	if count == 0 {
		count = 1
	}
	tail := s.providerArgs(p)
	args := make([]any, 0, 8+len(tail))
	dry := "0"
	if dryRun {
		dry = "1"
	}
	nowArg := ""
	if s.opts.UseCallerClock {
		nowArg = strconv.FormatInt(now.UnixNano(), 10)
	}
	cal, day, next := "0", "", ""
	if p.CalendarDay && p.Limits[limiter.Day] > 0 {
		loc := p.Location
		if loc == nil {
			loc = time.UTC
		}
		y, m, dd := now.In(loc).Date()
		cal = "1"
		day = strconv.FormatInt(time.Date(y, m, dd, 0, 0, 0, 0, loc).UnixNano(), 10)
		next = strconv.FormatInt(time.Date(y, m, dd+1, 0, 0, 0, 0, loc).UnixNano(), 10)
	}
	args = append(args, string(mode), strconv.FormatUint(uint64(count), 10), dry, nowArg, cal, day, next)
	args = append(args, tail...)
	return append(args, s.ttl)
}

// providerArgs returns the part of the ARGV that depends on p alone, cached:
// a Provider is immutable once in use.
func (s *Store) providerArgs(p *limiter.Provider) []any {
	if v, ok := s.args.Load(p); ok {
		return v.([]any)
	}
	m := &p.Machine
	d := func(x time.Duration) string { return strconv.FormatInt(int64(x), 10) }
	a := []any{
		strconv.FormatUint(p.Limits[0], 10), strconv.FormatUint(p.Limits[1], 10),
		strconv.FormatUint(p.Limits[2], 10), strconv.FormatUint(p.Limits[3], 10),
		d(m.RampInterval), formatFloat(m.RampStep),
		d(m.ProbeInterval), d(m.RemediationProbeInterval),
		d(m.CeilingRiseInterval), formatFloat(m.CeilingRiseStep),
		strconv.Itoa(m.Burst),
	}
	s.args.Store(p, a)
	return a
}

// decodeDecision turns the script's reply into a Decision; the parts that
// depend on the policy alone (configured limits, windows) are filled here.
func decodeDecision(v []any, p *limiter.Provider) (limiter.Decision, error) {
	var err error
	num := func(i int) int64 {
		if i >= len(v) {
			err = fmt.Errorf("reply too short: %d values", len(v))
			return 0
		}
		x, ok := v[i].(int64)
		if !ok {
			err = fmt.Errorf("reply value %d: %T, want an integer", i, v[i])
		}
		return x
	}
	str := func(i int) string {
		if i >= len(v) {
			err = fmt.Errorf("reply too short: %d values", len(v))
			return ""
		}
		x, ok := v[i].(string)
		if !ok {
			err = fmt.Errorf("reply value %d: %T, want a string", i, v[i])
		}
		return x
	}
	d := limiter.Decision{
		Verdict:    limiter.Verdict(num(0)),
		Reason:     limiter.Reason(num(1)),
		RetryAfter: time.Duration(num(2)),
		State:      limiter.State(num(3)),
		Limiting:   limiter.Tier(num(5)),
		Probe:      num(6) == 1,
	}
	fs := str(4)
	us := str(7)
	n := int(num(8))
	if err != nil {
		return d, err
	}
	if d.Factor, err = strconv.ParseFloat(fs, 64); err != nil {
		return d, fmt.Errorf("reply factor: %w", err)
	}
	if d.Until, err = parseTime(us); err != nil {
		return d, fmt.Errorf("reply until: %w", err)
	}
	if n < 0 || n > limiter.NumTiers {
		return d, fmt.Errorf("reply: %d tiers", n)
	}
	for i := 0; i < n; i++ {
		b := 9 + 5*i
		t := limiter.Tier(num(b))
		if t >= limiter.NumTiers {
			return d, fmt.Errorf("reply: tier %d", t)
		}
		d.Tiers.List[i] = limiter.TierStatus{
			Tier: t, Limit: uint64(num(b + 1)), Ceiling: uint64(num(b + 2)),
			Remaining: uint64(num(b + 3)), RetryAfter: time.Duration(num(b + 4)),
			Configured: p.Limits[t], Window: t.Window(),
			Calendar: t == limiter.Day && p.CalendarDay,
		}
	}
	d.Tiers.N = n
	return d, err
}

// Update reads the key's record, runs fn on it and writes Rep back if the
// version is still the one read (compare-and-set), retrying with jitter on
// a conflict: fn may run several times. A Transitioned or Cleared change
// drops the key from the block caches of this and (by publish) every other
// replica.
func (s *Store) Update(ctx context.Context, key limiter.Key, fn func(rec *limiter.Record) limiter.Change) (limiter.Record, error) {
	hk := hashKey(s.prefix, key)
	for attempt := 0; ; attempt++ {
		cur, _, err := s.get(ctx, hk)
		if err != nil {
			return limiter.Record{}, err
		}
		rec := cur
		version := rec.Rep.Version
		ch := fn(&rec)
		if ch == limiter.Unchanged {
			return cur, nil
		}
		rec.Rep.Version = version + 1
		fields, err := encodeRep(&rec.Rep)
		if err != nil {
			return limiter.Record{}, err
		}
		clear := "0"
		if ch == limiter.Cleared {
			clear = "1"
			rec.Use = limiter.Usage{}
		}
		// A HELD key and one that needs remediation wait for an operator:
		// they never expire.
		ttl := s.ttl
		if rec.Rep.State == limiter.Held || rec.Rep.Remediation {
			ttl = "0"
		}
		args := make([]any, 0, 3+len(fields))
		args = append(args, strconv.FormatUint(version, 10), clear, ttl)
		args = append(args, fields...)
		ok, err := s.cas.Run(ctx, s.client, []string{hk}, args...).Int()
		if err != nil {
			return limiter.Record{}, unavailable("update", err)
		}
		if ok == 1 {
			if ch == limiter.Transitioned || ch == limiter.Cleared {
				s.invalidate(ctx, key)
			}
			return rec, nil
		}
		if attempt+1 >= maxUpdateAttempts {
			return limiter.Record{}, fmt.Errorf("redis update %v: %d conflicting writes in a row", key, maxUpdateAttempts)
		}
		// Back off with full jitter: up to 100µs << attempt, at most 6.4ms.
		wait := time.Duration(rand.Int64N(int64(100*time.Microsecond) << min(attempt, 6)))
		select {
		case <-ctx.Done():
			return limiter.Record{}, unavailable("update", ctx.Err())
		case <-time.After(wait):
		}
	}
}

// invalidate drops key from the local block cache and tells the other
// replicas to drop it. A lost message is covered by BlockCacheTTL.
func (s *Store) invalidate(ctx context.Context, key limiter.Key) {
	if s.cache == nil {
		return
	}
	s.cache.drop(key)
	_ = s.client.Publish(ctx, s.prefix+"invalidate", key.String()).Err()
}

// Get returns the key's record (HGETALL).
func (s *Store) Get(ctx context.Context, key limiter.Key) (limiter.Record, bool, error) {
	return s.get(ctx, hashKey(s.prefix, key))
}

func (s *Store) get(ctx context.Context, hk string) (limiter.Record, bool, error) {
	h, err := s.client.HGetAll(ctx, hk).Result()
	if err != nil {
		return limiter.Record{}, false, unavailable("get", err)
	}
	if len(h) == 0 {
		return limiter.Record{}, false, nil
	}
	rec, err := decodeRecord(h)
	if err != nil {
		return limiter.Record{}, false, fmt.Errorf("redis get %s: %w", hk, err)
	}
	return rec, true, nil
}

// List scans the keys under the prefix (SCAN on every master in Cluster
// mode, in address order). The cursor is opaque: "node:scan-cursor:last-key".
// Like SCAN, a key present for the whole listing is returned at least once;
// a key may be returned twice if the keyspace is resized meanwhile.
func (s *Store) List(ctx context.Context, cursor string, limit int, keep func(limiter.Key, *limiter.Record) bool) ([]limiter.Entry, string, error) {
	if limit <= 0 {
		limit = 100
	}
	nodes, err := s.nodes(ctx)
	if err != nil {
		return nil, "", err
	}
	// The cursor is node:scan:after — the master, the SCAN cursor of the
	// batch being read, and the last key returned from it (hex). Resuming
	// skips the batch's keys up to that key, not a count of them: the batch
	// a SCAN cursor returns can change between calls as keys come and go,
	// and a count would then list keys twice or not at all.
	node, scan, after := 0, uint64(0), ""
	if cursor != "" {
		parts := strings.SplitN(cursor, ":", 3)
		var e1, e2, e3 error
		var a []byte
		if len(parts) == 3 {
			node, e1 = strconv.Atoi(parts[0])
			scan, e2 = strconv.ParseUint(parts[1], 10, 64)
			a, e3 = hex.DecodeString(parts[2])
		}
		if len(parts) != 3 || e1 != nil || e2 != nil || e3 != nil || node < 0 {
			return nil, "", fmt.Errorf("bad cursor %q", cursor)
		}
		after = string(a)
	}
	var entries []limiter.Entry
	match := escapeGlob(s.prefix) + "{*}"
	for node < len(nodes) {
		c := nodes[node]
		keys, next, err := c.ScanType(ctx, scan, match, int64(max(limit, 100)), "hash").Result()
		if err != nil {
			return nil, "", unavailable("list", err)
		}
		slices.Sort(keys)
		if after != "" {
			// Resume after the last key returned from this batch.
			keys = keys[sort.SearchStrings(keys, after+"\x00"):]
			after = ""
		}
		cmds := make([]*redis.MapStringStringCmd, len(keys))
		pipe := c.Pipeline()
		for i, k := range keys {
			cmds[i] = pipe.HGetAll(ctx, k)
		}
		if len(keys) > 0 {
			if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
				return nil, "", unavailable("list", err)
			}
		}
		for i := range keys {
			k, ok := parseHashKey(s.prefix, keys[i])
			h := cmds[i].Val()
			if !ok || len(h) == 0 {
				continue
			}
			rec, err := decodeRecord(h)
			if err != nil {
				return nil, "", fmt.Errorf("redis list %s: %w", keys[i], err)
			}
			if keep != nil && !keep(k, &rec) {
				continue
			}
			entries = append(entries, limiter.Entry{Key: k, Record: rec})
			if len(entries) == limit {
				if i+1 < len(keys) {
					return entries, fmt.Sprintf("%d:%d:%s", node, scan, hex.EncodeToString([]byte(keys[i]))), nil
				}
				return entries, s.after(node, next, len(nodes)), nil
			}
		}
		if next == 0 {
			node, scan = node+1, 0
		} else {
			scan = next
		}
	}
	return entries, "", nil
}

// after returns the cursor following a finished SCAN page of node.
func (s *Store) after(node int, next uint64, n int) string {
	if next == 0 {
		node++
		if node >= n {
			return ""
		}
	}
	return fmt.Sprintf("%d:%d:", node, next)
}

// nodes returns the clients of the masters in address order (one for a
// standalone server).
func (s *Store) nodes(ctx context.Context) ([]*redis.Client, error) {
	cc, ok := s.client.(*redis.ClusterClient)
	if !ok {
		return []*redis.Client{s.client.(*redis.Client)}, nil
	}
	var mu sync.Mutex
	var out []*redis.Client
	err := cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error {
		mu.Lock()
		out = append(out, c)
		mu.Unlock()
		return nil
	})
	if err != nil {
		return nil, unavailable("list nodes", err)
	}
	slices.SortFunc(out, func(a, b *redis.Client) int { return strings.Compare(a.Options().Addr, b.Options().Addr) })
	return out, nil
}

func escapeGlob(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch r {
		case '*', '?', '[', ']', '\\':
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}
