package server

import (
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
)

// Transport limits of a sendgate gRPC server; [GRPCOptions] applies them.
const (
	// MaxRecvMsgSize is the largest request accepted, in bytes. The largest
	// valid request is a ReportResultBatch of MaxBatch results, each with a
	// 64-byte sender_ip, a MaxDomainInput recipient_domain, a MaxEnhanced
	// enhanced_code, a MaxReply reply and every number at its widest: about
	// 8.6 KB a result, 8.6 MB in all (TestMaxBatchFits computes it). 10 MiB
	// leaves room for that and no more than a little.
	MaxRecvMsgSize = 10 << 20
	// MaxSendMsgSize bounds a response: a ListStates page of MaxPageSize
	// keys with their histories fits well within it.
	MaxSendMsgSize = 16 << 20
	// MaxConcurrentStreams bounds the calls in flight on one connection.
	MaxConcurrentStreams = 1024
	// MaxHeaderListSize bounds a call's metadata.
	MaxHeaderListSize = 16 << 10
)

// GRPCOptions returns the server options that bound what one caller can
// make the server hold: message and header sizes, streams per connection,
// and keepalive (a client may ping at most every 10s and only with calls in
// flight; idle connections close after 15 minutes, and every connection
// after 2 hours, with 30s for its calls to finish, so load spreads across
// replicas).
func GRPCOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.MaxRecvMsgSize(MaxRecvMsgSize),
		grpc.MaxSendMsgSize(MaxSendMsgSize),
		grpc.MaxConcurrentStreams(MaxConcurrentStreams),
		grpc.MaxHeaderListSize(MaxHeaderListSize),
		grpc.ConnectionTimeout(10 * time.Second),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			MinTime:             10 * time.Second,
			PermitWithoutStream: false,
		}),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			MaxConnectionIdle:     15 * time.Minute,
			MaxConnectionAge:      2 * time.Hour,
			MaxConnectionAgeGrace: 30 * time.Second,
			Time:                  2 * time.Minute,
			Timeout:               20 * time.Second,
		}),
	}
}
