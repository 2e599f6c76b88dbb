package telemetry

import (
	"sync"

	"go.opentelemetry.io/otel/attribute"
)

// labelKey names one label set of a counter: the kind of counter, the
// bounded provider label and up to two small enums.
type labelKey struct {
	kind     byte
	provider string
	a, b     uint8
}

// attrCache keeps the attribute sets of the counters, so that counting
// allocates nothing once a set was seen. It stays small: its keys are
// bounded by the configured providers and the enums. Safe for concurrent
// use; the zero value is ready.
type attrCache struct {
	mu   sync.RWMutex
	sets map[labelKey]attribute.Set
}

// get returns the set of k, making it with mk the first time.
func (c *attrCache) get(k labelKey, mk func(labelKey) attribute.Set) attribute.Set {
	c.mu.RLock()
	s, ok := c.sets[k]
	c.mu.RUnlock()
	if ok {
		return s
	}
	s = mk(k)
	c.mu.Lock()
	if c.sets == nil {
		c.sets = make(map[labelKey]attribute.Set)
	}
	c.sets[k] = s
	c.mu.Unlock()
	return s
}
