package server

import (
	"context"
	"errors"
	"log/slog"
	"strconv"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sendgate/sendgate/limiter"
)

// This file is the one place where errors become gRPC status codes:
//
//	invalid input (*fieldError)             INVALID_ARGUMENT  "requests[3].sender_ip: not an IP address: ..."
//	count above a tier (*limiter.CountError) INVALID_ARGUMENT  "count: 50 exceeds the minute tier's capacity of 30"
//	the caller's context ended               CANCELED / DEADLINE_EXCEEDED
//	anything else (the store failed)         UNAVAILABLE, logged
//
// A DEFER is never an error.

// toStatus maps err to a gRPC status error. field prefixes a
// *limiter.CountError that the limiter returned, naming the count field
// ("count", or "requests[3].count" in a batch).
func (s *Server) toStatus(ctx context.Context, err error, countField string) error {
	var fe *fieldError
	if errors.As(err, &fe) {
		return status.Error(codes.InvalidArgument, fe.Error())
	}
	var ce *limiter.CountError
	if errors.As(err, &ce) {
		return status.Error(codes.InvalidArgument, countField+": "+countReason(ce))
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	switch {
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	}
	s.log.LogAttrs(ctx, slog.LevelWarn, "store failure", slog.String("error", err.Error()))
	return status.Error(codes.Unavailable, "state store unavailable: "+err.Error())
}

// countReason says why a count is refused, without the field name.
func countReason(err error) string {
	var ce *limiter.CountError
	if errors.As(err, &ce) {
		return strconv.FormatUint(uint64(ce.Count), 10) + " exceeds the " + ce.Tier.String() +
			" tier's capacity of " + strconv.FormatUint(ce.Limit, 10)
	}
	return err.Error()
}
