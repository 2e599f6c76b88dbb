package redisstore

import (
	"testing"

	"github.com/sendgate/sendgate/limiter"
	"github.com/sendgate/sendgate/limiter/storetest"
)

func TestConformanceStandalone(t *testing.T) {
	addr := needStandalone(t)
	prefix := testPrefix()
	storetest.Run(t, func(t *testing.T) limiter.Store {
		return open(t, []string{addr}, Options{Prefix: prefix, UseCallerClock: true})
	})
}

func TestConformanceCluster(t *testing.T) {
	addrs := needCluster(t)
	prefix := testPrefix()
	storetest.Run(t, func(t *testing.T) limiter.Store {
		return open(t, addrs, Options{Prefix: prefix, UseCallerClock: true})
	})
}
