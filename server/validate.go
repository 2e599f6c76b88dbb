package server

import (
	"context"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sendgate/sendgate/internal/normalize"
	"github.com/sendgate/sendgate/limiter"
	sendgatev1 "github.com/sendgate/sendgate/proto/sendgate/v1"
)

// Limits on what a request may carry. Longer strings, larger batches and
// unknown enum values are INVALID_ARGUMENT.
const (
	// MaxBatch is the most items a CanSendBatch or ReportResultBatch may hold.
	MaxBatch = 1000
	// MaxDomainInput is the longest recipient_domain (a domain or a whole
	// address) accepted, in bytes, before normalisation.
	MaxDomainInput = 320
	// MaxReply is the longest reply text accepted, in bytes.
	MaxReply = 8 << 10
	// MaxEnhanced is the longest enhanced_code accepted, in bytes.
	MaxEnhanced = 16
	// MaxNote is the longest operator note accepted, in bytes.
	MaxNote = 1 << 10
	// MaxPageSize is the largest ListStates page; larger requests get this.
	MaxPageSize = 1000
	// DefaultPageSize is the ListStates page size when page_size is 0.
	DefaultPageSize = 100
	// MaxPageToken is the longest page_token accepted, in bytes.
	MaxPageToken = 1 << 10
	// MaxFuture is how far in the future an attempted_at may lie (clock skew
	// between mailer and sendgate).
	MaxFuture = time.Minute
)

// fieldError is invalid input: the field by its proto name (with the index of
// a batch item: "requests[3].sender_ip") and why. errors.go maps it to
// INVALID_ARGUMENT with the message "field: reason".
type fieldError struct {
	field  string
	reason string
}

func (e *fieldError) Error() string { return e.field + ": " + e.reason }

func invalid(field, reason string) *fieldError { return &fieldError{field: field, reason: reason} }

// item prefixes the field of an invalid item with the batch field and index:
// "sender_ip" becomes "requests[3].sender_ip". Other errors pass unchanged.
func item(err error, list string, i int) error {
	if fe, ok := err.(*fieldError); ok {
		return &fieldError{field: list + "[" + strconv.Itoa(i) + "]." + fe.field, reason: fe.reason}
	}
	return err
}

// checkBatch validates the size of a batch field.
func checkBatch(field string, n int) error {
	switch {
	case n == 0:
		return invalid(field, "empty")
	case n > MaxBatch:
		return invalid(field, strconv.Itoa(n)+" items, max "+strconv.Itoa(MaxBatch))
	}
	return nil
}

// checkIP returns the canonical sender IP.
func checkIP(field, s string) (string, error) {
	ip, err := normalize.IP(s)
	if err != nil {
		return "", invalid(field, err.Error())
	}
	return ip, nil
}

// checkDomain returns the canonical domain of a domain or whole address.
func checkDomain(field, s string) (string, error) {
	if len(s) > MaxDomainInput {
		return "", invalid(field, tooLong(len(s), MaxDomainInput))
	}
	d, err := normalize.Domain(s)
	if err != nil {
		return "", invalid(field, err.Error())
	}
	return d, nil
}

// checkLen refuses a string longer than max bytes.
func checkLen(field, s string, max int) error {
	if len(s) > max {
		return invalid(field, tooLong(len(s), max))
	}
	return nil
}

func tooLong(n, max int) string {
	return "too long: " + strconv.Itoa(n) + " bytes, max " + strconv.Itoa(max)
}

// checkCode accepts 0 (no reply) and the SMTP reply codes 200..599.
func checkCode(field string, c uint32) error {
	if c != 0 && (c < 200 || c > 599) {
		return invalid(field, strconv.FormatUint(uint64(c), 10)+" is not an SMTP reply code (want 0 for no reply, or 200..599)")
	}
	return nil
}

// checkCount refuses a count that no wait would ever let through.
func checkCount(field string, p *limiter.Provider, count uint32) error {
	if err := p.CheckCount(count); err != nil {
		return invalid(field, countReason(err))
	}
	return nil
}

// checkTime converts a timestamp; nil is the zero time.
func checkTime(field string, ts *timestamppb.Timestamp) (time.Time, error) {
	if ts == nil {
		return time.Time{}, nil
	}
	if ts.CheckValid() != nil {
		// CheckValid's message prints the message in protobuf's randomised
		// text format; say it plainly instead.
		return time.Time{}, invalid(field, "invalid timestamp: seconds "+strconv.FormatInt(ts.GetSeconds(), 10)+
			", nanos "+strconv.FormatInt(int64(ts.GetNanos()), 10)+" (want years 1 to 9999, nanos 0 to 999999999)")
	}
	return ts.AsTime(), nil
}

// providerOrDomain returns v when it names a configured provider, else the
// provider its domain resolves to. A single label that names no provider
// ("gmail") is refused rather than taken as a domain: it is an operator's
// typo, and acting on it would create a key nothing ever sends through.
func (s *Server) providerOrDomain(ctx context.Context, field, v string) (string, error) {
	if s.resolver.IsProvider(v) {
		return v, nil
	}
	d, err := checkDomain(field, v)
	if err != nil {
		return "", err
	}
	if !strings.Contains(d, ".") {
		return "", invalid(field, strconv.Quote(v)+" is neither a configured provider nor a domain")
	}
	return s.resolver.Resolve(ctx, d).Provider, nil
}

// canSendArgs is a validated CanSendRequest.
type canSendArgs struct {
	key    limiter.Key
	count  uint32
	dryRun bool
}

// checkCanSend validates r, resolves its provider and checks its count
// against the provider's tiers in pol.
func (s *Server) checkCanSend(ctx context.Context, r *sendgatev1.CanSendRequest, pol *limiter.Policy) (canSendArgs, error) {
	ip, err := checkIP("sender_ip", r.GetSenderIp())
	if err != nil {
		return canSendArgs{}, err
	}
	domain, err := checkDomain("recipient_domain", r.GetRecipientDomain())
	if err != nil {
		return canSendArgs{}, err
	}
	provider := s.resolver.Resolve(ctx, domain).Provider
	if err := checkCount("count", pol.For(provider), r.GetCount()); err != nil {
		return canSendArgs{}, err
	}
	return canSendArgs{key: limiter.Key{IP: ip, Provider: provider}, count: r.GetCount(), dryRun: r.GetDryRun()}, nil
}

// reportArgs is a validated ReportResultRequest.
type reportArgs struct {
	key          limiter.Key
	code         uint32
	enhanced     string
	reply        string
	count        uint32
	attemptedAt  time.Time
	notAttempted bool
}

// checkReport validates r and resolves its provider.
func (s *Server) checkReport(ctx context.Context, r *sendgatev1.ReportResultRequest, now time.Time) (reportArgs, error) {
	ip, err := checkIP("sender_ip", r.GetSenderIp())
	if err != nil {
		return reportArgs{}, err
	}
	domain, err := checkDomain("recipient_domain", r.GetRecipientDomain())
	if err != nil {
		return reportArgs{}, err
	}
	if err := checkCode("smtp_code", r.GetSmtpCode()); err != nil {
		return reportArgs{}, err
	}
	if err := checkLen("enhanced_code", r.GetEnhancedCode(), MaxEnhanced); err != nil {
		return reportArgs{}, err
	}
	if err := checkLen("reply", r.GetReply(), MaxReply); err != nil {
		return reportArgs{}, err
	}
	at, err := checkTime("attempted_at", r.GetAttemptedAt())
	if err != nil {
		return reportArgs{}, err
	}
	if !at.IsZero() && at.After(now.Add(MaxFuture)) {
		return reportArgs{}, invalid("attempted_at", at.UTC().Format(time.RFC3339)+" is more than "+MaxFuture.String()+" in the future")
	}
	var notAttempted bool
	switch o := r.GetOutcome(); o {
	case sendgatev1.Outcome_OUTCOME_UNSPECIFIED:
	case sendgatev1.Outcome_OUTCOME_NOT_ATTEMPTED:
		notAttempted = true
	default:
		return reportArgs{}, invalid("outcome", "unknown value "+strconv.Itoa(int(o)))
	}
	return reportArgs{
		key:          limiter.Key{IP: ip, Provider: s.resolver.Resolve(ctx, domain).Provider},
		code:         r.GetSmtpCode(),
		enhanced:     r.GetEnhancedCode(),
		reply:        r.GetReply(),
		count:        r.GetCount(),
		attemptedAt:  at,
		notAttempted: notAttempted,
	}, nil
}

// checkKey validates the sender IP and provider-or-domain naming one key.
func (s *Server) checkKey(ctx context.Context, ipField, ip, provField, prov string) (limiter.Key, error) {
	nip, err := checkIP(ipField, ip)
	if err != nil {
		return limiter.Key{}, err
	}
	p, err := s.providerOrDomain(ctx, provField, prov)
	if err != nil {
		return limiter.Key{}, err
	}
	return limiter.Key{IP: nip, Provider: p}, nil
}

// listArgs is a validated ListStatesRequest.
type listArgs struct {
	filter limiter.Filter
	cursor string
	size   int
}

// checkList validates r: an optional provider (or domain) and sender IP, a
// known state, a page size (0 means DefaultPageSize, larger than MaxPageSize
// means MaxPageSize) and a page token from a previous response.
func (s *Server) checkList(ctx context.Context, r *sendgatev1.ListStatesRequest) (listArgs, error) {
	var a listArgs
	if p := r.GetProvider(); p != "" {
		prov, err := s.providerOrDomain(ctx, "provider", p)
		if err != nil {
			return listArgs{}, err
		}
		a.filter.Provider = prov
	}
	if ip := r.GetSenderIp(); ip != "" {
		nip, err := checkIP("sender_ip", ip)
		if err != nil {
			return listArgs{}, err
		}
		a.filter.IP = nip
	}
	st, ok := stateFromProto(r.GetState())
	if !ok {
		return listArgs{}, invalid("state", "unknown value "+strconv.Itoa(int(r.GetState())))
	}
	a.filter.State = st
	switch n := r.GetPageSize(); {
	case n < 0:
		return listArgs{}, invalid("page_size", strconv.Itoa(int(n))+" is negative")
	case n == 0:
		a.size = DefaultPageSize
	case n > MaxPageSize:
		a.size = MaxPageSize
	default:
		a.size = int(n)
	}
	if err := checkLen("page_token", r.GetPageToken(), MaxPageToken); err != nil {
		return listArgs{}, err
	}
	cursor, err := decodePageToken(r.GetPageToken())
	if err != nil {
		return listArgs{}, invalid("page_token", "malformed: not from a previous ListStates response")
	}
	a.cursor = cursor
	return a, nil
}

// setArgs is a validated SetStateRequest.
type setArgs struct {
	key    limiter.Key
	action sendgatev1.StateAction
	until  time.Time
	note   string
}

// checkSet validates r: the key, a known action, an until only for HOLD and
// not in the past, and a note of at most MaxNote bytes.
func (s *Server) checkSet(ctx context.Context, r *sendgatev1.SetStateRequest, now time.Time) (setArgs, error) {
	key, err := s.checkKey(ctx, "sender_ip", r.GetSenderIp(), "provider", r.GetProvider())
	if err != nil {
		return setArgs{}, err
	}
	a := setArgs{key: key, action: r.GetAction(), note: r.GetNote()}
	switch a.action {
	case sendgatev1.StateAction_STATE_ACTION_HOLD, sendgatev1.StateAction_STATE_ACTION_RELEASE, sendgatev1.StateAction_STATE_ACTION_RESET:
	case sendgatev1.StateAction_STATE_ACTION_UNSPECIFIED:
		return setArgs{}, invalid("action", "missing: want STATE_ACTION_HOLD, STATE_ACTION_RELEASE or STATE_ACTION_RESET")
	default:
		return setArgs{}, invalid("action", "unknown value "+strconv.Itoa(int(a.action)))
	}
	until, err := checkTime("until", r.GetUntil())
	if err != nil {
		return setArgs{}, err
	}
	if !until.IsZero() {
		if a.action != sendgatev1.StateAction_STATE_ACTION_HOLD {
			return setArgs{}, invalid("until", "only STATE_ACTION_HOLD takes an end")
		}
		if !until.After(now) {
			return setArgs{}, invalid("until", until.UTC().Format(time.RFC3339)+" is in the past")
		}
	}
	a.until = until
	if err := checkLen("note", a.note, MaxNote); err != nil {
		return setArgs{}, err
	}
	return a, nil
}

// classifyArgs is a validated ClassifyReplyRequest.
type classifyArgs struct {
	provider string
	code     uint32
	enhanced string
	reply    string
}

func (s *Server) checkClassify(ctx context.Context, r *sendgatev1.ClassifyReplyRequest) (classifyArgs, error) {
	p, err := s.providerOrDomain(ctx, "provider_or_domain", r.GetProviderOrDomain())
	if err != nil {
		return classifyArgs{}, err
	}
	if err := checkCode("smtp_code", r.GetSmtpCode()); err != nil {
		return classifyArgs{}, err
	}
	if err := checkLen("enhanced_code", r.GetEnhancedCode(), MaxEnhanced); err != nil {
		return classifyArgs{}, err
	}
	if err := checkLen("reply", r.GetReply(), MaxReply); err != nil {
		return classifyArgs{}, err
	}
	return classifyArgs{provider: p, code: r.GetSmtpCode(), enhanced: r.GetEnhancedCode(), reply: r.GetReply()}, nil
}
