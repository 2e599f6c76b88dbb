package boltstore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"time"

	"github.com/sendgate/sendgate/limiter"
)

// recordFormat is the first byte of every encoded record. A record whose
// first byte is another value is refused by decode; a later format adds a
// case there (and a schema migration if it rewrites the file).
const recordFormat = 1

// Time tags: a zero time, a time within int64 Unix nanoseconds (every real
// clock reading), or any other time as seconds and nanoseconds.
const (
	timeZero = 0
	timeNano = 1
	timeSec  = 2
)

// encode appends the binary form of rec to b and returns it. The form is
// compact: unsigned varints for counters, zigzag varints for instants,
// byte-reversed varints for floats (so that 0, 0.5 and 1 take 1 to 3
// bytes), length-prefixed strings and slices. Instants are kept to the
// nanosecond; their location and monotonic reading are not kept, and
// decode returns them in UTC.
func encode(b []byte, rec *limiter.Record) []byte {
	rep := &rec.Rep
	b = append(b, recordFormat, byte(rep.State))
	b = appendTime(b, rep.Since)
	b = appendTime(b, rep.Until)
	b = appendString(b, rep.Reason)
	b = appendString(b, rep.LastReply)
	b = binary.AppendUvarint(b, uint64(rep.Strikes))
	b = appendTime(b, rep.StrikeAt)
	b = appendFloat(b, rep.Factor)
	b = appendTime(b, rep.FactorAt)
	b = appendTime(b, rep.DecreasedAt)
	b = binary.AppendUvarint(b, uint64(rep.ProbeOK))
	b = appendBool(b, rep.Remediation)
	b = binary.AppendUvarint(b, uint64(len(rep.Ceilings)))
	for _, c := range rep.Ceilings {
		b = binary.AppendUvarint(b, c)
	}
	b = appendTime(b, rep.CeilingAt)
	b = binary.AppendUvarint(b, uint64(len(rep.Counts)))
	for _, c := range rep.Counts {
		b = binary.AppendUvarint(b, c)
	}
	b = binary.AppendUvarint(b, uint64(len(rep.Triggers)))
	for i := range rep.Triggers {
		tc := &rep.Triggers[i]
		b = appendString(b, tc.Rule)
		b = appendTime(b, tc.Start)
		b = binary.AppendUvarint(b, uint64(tc.Hits))
		b = binary.AppendUvarint(b, uint64(tc.Attempts))
	}
	b = binary.AppendUvarint(b, uint64(len(rep.History)))
	for i := range rep.History {
		tr := &rep.History[i]
		b = appendTime(b, tr.At)
		b = append(b, byte(tr.From), byte(tr.To))
		b = appendString(b, tr.Reason)
		b = appendString(b, tr.Reply)
		b = appendString(b, tr.Actor)
	}
	b = binary.AppendUvarint(b, rep.Version)

	use := &rec.Use
	b = binary.AppendUvarint(b, uint64(len(use.Buckets)))
	for _, bk := range use.Buckets {
		b = binary.AppendVarint(b, bk.TAT)
		b = binary.AppendUvarint(b, bk.Used)
	}
	b = binary.AppendUvarint(b, uint64(len(use.Sent)))
	for _, w := range use.Sent {
		b = binary.AppendVarint(b, w.Start)
		b = appendFloat(b, w.Cur)
		b = appendFloat(b, w.Prev)
	}
	return appendTime(b, use.ProbeNext)
}

// errShort is decode's error for data that ends too early.
var errShort = errors.New("truncated")

// decode parses what encode wrote. It fails on an unknown format, on data
// that ends early or has bytes left over, and on counts larger than the
// record layout allows, so that a damaged value is reported rather than
// half-read.
func decode(data []byte) (limiter.Record, error) {
	var rec limiter.Record
	if len(data) == 0 {
		return rec, errShort
	}
	if data[0] != recordFormat {
		return rec, fmt.Errorf("unknown record format %d", data[0])
	}
	d := decoder{b: data[1:]}
	rep := &rec.Rep
	rep.State = limiter.State(d.byte())
	rep.Since = d.time()
	rep.Until = d.time()
	rep.Reason = d.string()
	rep.LastReply = d.string()
	rep.Strikes = d.uint32()
	rep.StrikeAt = d.time()
	rep.Factor = d.float()
	rep.FactorAt = d.time()
	rep.DecreasedAt = d.time()
	rep.ProbeOK = d.uint32()
	rep.Remediation = d.bool()
	for i, n := 0, d.count(len(rep.Ceilings)); i < n; i++ {
		rep.Ceilings[i] = d.uvarint()
	}
	rep.CeilingAt = d.time()
	for i, n := 0, d.count(len(rep.Counts)); i < n; i++ {
		rep.Counts[i] = d.uvarint()
	}
	if n := d.length(); n > 0 {
		rep.Triggers = make([]limiter.TriggerCount, n)
		for i := range rep.Triggers {
			tc := &rep.Triggers[i]
			tc.Rule = d.string()
			tc.Start = d.time()
			tc.Hits = d.uint32()
			tc.Attempts = d.uint32()
		}
	}
	if n := d.length(); n > 0 {
		rep.History = make([]limiter.Transition, n)
		for i := range rep.History {
			tr := &rep.History[i]
			tr.At = d.time()
			tr.From = limiter.State(d.byte())
			tr.To = limiter.State(d.byte())
			tr.Reason = d.string()
			tr.Reply = d.string()
			tr.Actor = d.string()
		}
	}
	rep.Version = d.uvarint()

	use := &rec.Use
	for i, n := 0, d.count(len(use.Buckets)); i < n; i++ {
		use.Buckets[i].TAT = d.varint()
		use.Buckets[i].Used = d.uvarint()
	}
	for i, n := 0, d.count(len(use.Sent)); i < n; i++ {
		use.Sent[i].Start = d.varint()
		use.Sent[i].Cur = d.float()
		use.Sent[i].Prev = d.float()
	}
	use.ProbeNext = d.time()
	if d.err == nil && len(d.b) > 0 {
		d.err = fmt.Errorf("%d bytes left over", len(d.b))
	}
	if d.err != nil {
		return limiter.Record{}, d.err
	}
	return rec, nil
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendBool(b []byte, v bool) []byte {
	if v {
		return append(b, 1)
	}
	return append(b, 0)
}

func appendFloat(b []byte, f float64) []byte {
	return binary.AppendUvarint(b, bits.ReverseBytes64(math.Float64bits(f)))
}

// minNano and maxNano bound the instants UnixNano represents.
var (
	minNano = time.Unix(0, math.MinInt64)
	maxNano = time.Unix(0, math.MaxInt64)
)

func appendTime(b []byte, t time.Time) []byte {
	switch {
	case t.IsZero():
		return append(b, timeZero)
	case !t.Before(minNano) && !t.After(maxNano):
		return binary.AppendVarint(append(b, timeNano), t.UnixNano())
	}
	b = binary.AppendVarint(append(b, timeSec), t.Unix())
	return binary.AppendUvarint(b, uint64(t.Nanosecond()))
}

// decoder reads what encode wrote; the first failure sticks in err and
// makes every later read return zero.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(err error) {
	if d.err == nil {
		d.err = err
	}
	d.b = nil
}

func (d *decoder) byte() byte {
	if len(d.b) == 0 {
		d.fail(errShort)
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *decoder) bool() bool {
	switch d.byte() {
	case 0:
		return false
	case 1:
		return true
	}
	d.fail(errors.New("bad boolean"))
	return false
}

func (d *decoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail(errShort)
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail(errShort)
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) uint32() uint32 {
	v := d.uvarint()
	if v > math.MaxUint32 {
		d.fail(fmt.Errorf("value %d out of range", v))
		return 0
	}
	return uint32(v)
}

// count reads the length of a fixed array and checks it against max, the
// length of the array.
func (d *decoder) count(max int) int {
	v := d.uvarint()
	if v > uint64(max) {
		d.fail(fmt.Errorf("count %d exceeds %d", v, max))
		return 0
	}
	return int(v)
}

// length reads the length of a string or slice: at most the bytes left,
// as every element takes at least one.
func (d *decoder) length() int {
	v := d.uvarint()
	if v > uint64(len(d.b)) {
		d.fail(fmt.Errorf("length %d exceeds the %d bytes left", v, len(d.b)))
		return 0
	}
	return int(v)
}

func (d *decoder) string() string {
	n := d.length()
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}

func (d *decoder) float() float64 {
	return math.Float64frombits(bits.ReverseBytes64(d.uvarint()))
}

func (d *decoder) time() time.Time {
	switch d.byte() {
	case timeZero:
		return time.Time{}
	case timeNano:
		return time.Unix(0, d.varint()).UTC()
	case timeSec:
		sec := d.varint()
		nsec := d.uvarint()
		if nsec >= 1e9 {
			d.fail(fmt.Errorf("nanoseconds %d out of range", nsec))
			return time.Time{}
		}
		return time.Unix(sec, int64(nsec)).UTC()
	}
	d.fail(errors.New("bad time tag"))
	return time.Time{}
}
