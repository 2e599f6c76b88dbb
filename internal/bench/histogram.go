package bench

import (
	"math/bits"
	"time"
)

// subBits is the number of mantissa bits a Histogram keeps per power of
// two: 2^subBits buckets per octave, a relative error below 1/2^subBits
// (0.8%).
const subBits = 7

// numBuckets covers every uint64 value.
const numBuckets = (64 - subBits + 1) << subBits

// Histogram counts durations in log-linear buckets, like an HDR histogram:
// exact below 128ns, then 128 buckets per power of two, so any quantile is
// within 0.8% of the true value, in fixed memory (about 60 KB) whatever the
// number of samples. The zero value is empty and ready to use. It is not
// safe for concurrent use: give each goroutine its own and Merge them.
type Histogram struct {
	counts [numBuckets]uint64
	n      uint64
	sum    uint64
	max    uint64
	min    uint64
}

// bucketOf returns the bucket of v (nanoseconds).
func bucketOf(v uint64) int {
	if v < 1<<subBits {
		return int(v)
	}
	h := bits.Len64(v) // > subBits
	shift := h - 1 - subBits
	m := (v >> shift) & (1<<subBits - 1)
	return (h-subBits)<<subBits + int(m)
}

// bucketRange returns the smallest value of bucket i and its width.
func bucketRange(i int) (low, width uint64) {
	if i < 1<<subBits {
		return uint64(i), 1
	}
	e := i>>subBits - 1 // the shift applied to the mantissa
	m := uint64(i&(1<<subBits-1)) | 1<<subBits
	return m << e, 1 << e
}

// Record adds one duration; negative durations count as zero.
func (h *Histogram) Record(d time.Duration) {
	v := uint64(0)
	if d > 0 {
		v = uint64(d)
	}
	h.counts[bucketOf(v)]++
	if h.n == 0 || v < h.min {
		h.min = v
	}
	h.n++
	h.sum += v
	if v > h.max {
		h.max = v
	}
}

// Merge adds every sample of o to h.
func (h *Histogram) Merge(o *Histogram) {
	if o.n == 0 {
		return
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	if h.n == 0 || o.min < h.min {
		h.min = o.min
	}
	h.n += o.n
	h.sum += o.sum
	h.max = max(h.max, o.max)
}

// Count returns the number of samples.
func (h *Histogram) Count() uint64 { return h.n }

// Max returns the largest sample, exactly.
func (h *Histogram) Max() time.Duration { return time.Duration(h.max) }

// Mean returns the mean of the samples.
func (h *Histogram) Mean() time.Duration {
	if h.n == 0 {
		return 0
	}
	return time.Duration(h.sum / h.n)
}

// Quantile returns the smallest value v such that a share q (0..1) of the
// samples are at most v, within the histogram's resolution (the middle of
// the bucket, never above Max); 0 without samples.
func (h *Histogram) Quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint64(q * float64(h.n))
	if rank < 1 {
		rank = 1
	}
	if rank > h.n {
		rank = h.n
	}
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			low, w := bucketRange(i)
			v := low + w/2
			return time.Duration(min(max(v, h.min), h.max))
		}
	}
	return time.Duration(h.max)
}
