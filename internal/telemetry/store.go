package telemetry

import (
	"context"
	"fmt"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/sendgate/sendgate/limiter"
)

// The store operations, as the op label of the store metrics.
const (
	opAdmit = iota
	opAdmitBatch
	opRefund
	opUpdate
	opGet
	opList
	numOps
)

var opNames = [numOps]string{"admit", "admit_batch", "refund", "update", "get", "list"}

// storeDurationBounds are the bucket bounds, in seconds, of
// sendgate_store_operation_duration_seconds: from a memory store's
// microseconds to a slow Redis.
var storeDurationBounds = []float64{0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001,
	0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1}

// Store is a limiter.Store that measures every operation of the store it
// wraps: sendgate_store_operation_duration_seconds{op} and
// sendgate_store_errors_total{op}. It adds nothing else: each call goes to
// the wrapped store unchanged. Close is not measured.
type Store struct {
	next     limiter.Store
	duration metric.Float64Histogram
	errors   metric.Int64Counter
	ops      [numOps]metric.MeasurementOption
}

// batchStore is a Store over a store that is a limiter.BatchAdmitter, so
// the limiter keeps using its batches.
type batchStore struct {
	*Store
	batch limiter.BatchAdmitter
}

var (
	_ limiter.Store         = (*Store)(nil)
	_ limiter.BatchAdmitter = batchStore{}
)

// InstrumentStore returns st measured on meter. The result is a
// limiter.BatchAdmitter exactly when st is one. Health checks (Healthy,
// Ping) and WriteErrors are not passed through: ask the wrapped store,
// which [Store.Unwrap] returns.
func InstrumentStore(st limiter.Store, meter metric.Meter) (limiter.Store, error) {
	s := &Store{next: st}
	var err error
	if s.duration, err = meter.Float64Histogram("sendgate_store_operation_duration",
		metric.WithUnit("s"), metric.WithDescription("duration of state store operations"),
		metric.WithExplicitBucketBoundaries(storeDurationBounds...)); err != nil {
		return nil, fmt.Errorf("store duration histogram: %w", err)
	}
	if s.errors, err = meter.Int64Counter("sendgate_store_errors",
		metric.WithDescription("state store operations that failed")); err != nil {
		return nil, fmt.Errorf("store errors counter: %w", err)
	}
	for i, n := range opNames {
		s.ops[i] = metric.WithAttributeSet(attribute.NewSet(attribute.String("op", n)))
	}
	if b, ok := st.(limiter.BatchAdmitter); ok {
		return batchStore{Store: s, batch: b}, nil
	}
	return s, nil
}

// Unwrap returns the measured store.
func (s *Store) Unwrap() limiter.Store { return s.next }

// done records one operation that started at start.
func (s *Store) done(ctx context.Context, op int, start time.Time, err error) {
	s.duration.Record(ctx, time.Since(start).Seconds(), s.ops[op])
	if err != nil {
		s.errors.Add(ctx, 1, s.ops[op])
	}
}

// Admit measures the wrapped store's Admit.
func (s *Store) Admit(ctx context.Context, key limiter.Key, p *limiter.Provider, count uint32, dryRun bool, now time.Time) (limiter.Decision, error) {
	start := time.Now()
	d, err := s.next.Admit(ctx, key, p, count, dryRun, now)
	s.done(ctx, opAdmit, start, err)
	return d, err
}

// Refund measures the wrapped store's Refund.
func (s *Store) Refund(ctx context.Context, key limiter.Key, p *limiter.Provider, count uint32, now time.Time) error {
	start := time.Now()
	err := s.next.Refund(ctx, key, p, count, now)
	s.done(ctx, opRefund, start, err)
	return err
}

// Update measures the wrapped store's Update.
func (s *Store) Update(ctx context.Context, key limiter.Key, fn func(rec *limiter.Record) limiter.Change) (limiter.Record, error) {
	start := time.Now()
	rec, err := s.next.Update(ctx, key, fn)
	s.done(ctx, opUpdate, start, err)
	return rec, err
}

// Get measures the wrapped store's Get.
func (s *Store) Get(ctx context.Context, key limiter.Key) (limiter.Record, bool, error) {
	start := time.Now()
	rec, ok, err := s.next.Get(ctx, key)
	s.done(ctx, opGet, start, err)
	return rec, ok, err
}

// List measures the wrapped store's List.
func (s *Store) List(ctx context.Context, cursor string, limit int, keep func(limiter.Key, *limiter.Record) bool) ([]limiter.Entry, string, error) {
	start := time.Now()
	es, next, err := s.next.List(ctx, cursor, limit, keep)
	s.done(ctx, opList, start, err)
	return es, next, err
}

// Close closes the wrapped store.
func (s *Store) Close() error { return s.next.Close() }

// AdmitBatch measures the wrapped store's AdmitBatch.
func (b batchStore) AdmitBatch(ctx context.Context, items []limiter.AdmitItem) ([]limiter.Decision, error) {
	start := time.Now()
	ds, err := b.batch.AdmitBatch(ctx, items)
	b.done(ctx, opAdmitBatch, start, err)
	return ds, err
}
