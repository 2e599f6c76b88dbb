package boltstore

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/sendgate/sendgate/limiter"
	"github.com/sendgate/sendgate/limiter/storetest"
)

func TestConformance(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		flush time.Duration
	}{
		{"FlushEverySecond", 0},
		// Flushes race with every step of the suite.
		{"FlushEveryMillisecond", time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			storetest.Run(t, func(t *testing.T) limiter.Store {
				s, err := Open(filepath.Join(t.TempDir(), FileName), Options{FlushInterval: tt.flush})
				if err != nil {
					t.Fatal(err)
				}
				return s
			})
		})
	}
}
