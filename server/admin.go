package server

import (
	"context"

	"github.com/sendgate/sendgate/limiter"
	sendgatev1 "github.com/sendgate/sendgate/proto/sendgate/v1"
)

// GetState returns everything known about one key. The second field is
// taken as a provider when it names one, otherwise as a domain (or address)
// and resolved. A key never seen is HEALTHY with full tiers.
func (s *Server) GetState(ctx context.Context, r *sendgatev1.GetStateRequest) (*sendgatev1.GetStateResponse, error) {
	now := s.now()
	key, err := s.checkKey(ctx, "sender_ip", r.GetSenderIp(), "recipient_domain_or_provider", r.GetRecipientDomainOrProvider())
	if err != nil {
		return nil, s.toStatus(ctx, err, "")
	}
	v, err := s.lim.Get(ctx, key, now)
	if err != nil {
		return nil, s.toStatus(ctx, err, "")
	}
	return &sendgatev1.GetStateResponse{State: keyState(&v)}, nil
}

// ListStates returns one page of keys, filtered by provider (or a domain,
// resolved), sender IP and state; with no state it lists every key that is
// not HEALTHY. page_size 0 means 100; more than 1000 means 1000.
func (s *Server) ListStates(ctx context.Context, r *sendgatev1.ListStatesRequest) (*sendgatev1.ListStatesResponse, error) {
	now := s.now()
	a, err := s.checkList(ctx, r)
	if err != nil {
		return nil, s.toStatus(ctx, err, "")
	}
	views, next, err := s.lim.List(ctx, a.filter, a.cursor, a.size, now)
	if err != nil {
		return nil, s.toStatus(ctx, err, "")
	}
	out := &sendgatev1.ListStatesResponse{
		States:        make([]*sendgatev1.KeyState, len(views)),
		NextPageToken: encodePageToken(next),
	}
	for i := range views {
		out.States[i] = keyState(&views[i])
	}
	return out, nil
}

// SetState applies an operator action to one key: HOLD (until `until`, or
// until released), RELEASE (HEALTHY now) or RESET (forget everything). The
// action goes into the key's history with the note and the actor that
// Options.Actor names.
func (s *Server) SetState(ctx context.Context, r *sendgatev1.SetStateRequest) (*sendgatev1.SetStateResponse, error) {
	now := s.now()
	a, err := s.checkSet(ctx, r, now)
	if err != nil {
		return nil, s.toStatus(ctx, err, "")
	}
	actor := s.actor(ctx)
	var v limiter.KeyView
	switch a.action {
	case sendgatev1.StateAction_STATE_ACTION_HOLD:
		v, err = s.lim.Hold(ctx, a.key, a.until, a.note, actor, now)
	case sendgatev1.StateAction_STATE_ACTION_RELEASE:
		v, err = s.lim.Release(ctx, a.key, a.note, actor, now)
	default: // STATE_ACTION_RESET; checkSet refused every other value
		v, err = s.lim.Reset(ctx, a.key, a.note, actor, now)
	}
	if err != nil {
		return nil, s.toStatus(ctx, err, "")
	}
	s.operated(ctx, a.key, &v)
	return &sendgatev1.SetStateResponse{State: keyState(&v)}, nil
}

// ResolveProvider shows how a domain (or address) maps to a provider.
func (s *Server) ResolveProvider(ctx context.Context, r *sendgatev1.ResolveProviderRequest) (*sendgatev1.ResolveProviderResponse, error) {
	d, err := checkDomain("domain", r.GetDomain())
	if err != nil {
		return nil, s.toStatus(ctx, err, "")
	}
	res := s.resolver.Resolve(ctx, d)
	return &sendgatev1.ResolveProviderResponse{Provider: res.Provider, Via: res.Via, MxHosts: res.MXHosts}, nil
}

// ClassifyReply runs the reply rules of a provider (or a domain's provider)
// on a reply without changing anything.
func (s *Server) ClassifyReply(ctx context.Context, r *sendgatev1.ClassifyReplyRequest) (*sendgatev1.ClassifyReplyResponse, error) {
	a, err := s.checkClassify(ctx, r)
	if err != nil {
		return nil, s.toStatus(ctx, err, "")
	}
	res := s.classify.Classify(a.provider, a.code, a.enhanced, a.reply)
	return &sendgatev1.ClassifyReplyResponse{
		Classification: classToProto(res.Class),
		Rule:           res.Rule,
		Provider:       a.provider,
	}, nil
}
