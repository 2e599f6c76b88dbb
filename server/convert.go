package server

import (
	"encoding/base64"
	"strconv"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sendgate/sendgate/limiter"
	sendgatev1 "github.com/sendgate/sendgate/proto/sendgate/v1"
)

// This file is the one place where the wire (sendgatev1) and the core
// (limiter) meet. The enums of both are numbered alike (limiter's comments
// say "numbered as in the wire contract"), so the conversions are casts
// guarded by range checks.

// minDeferRetry is the retry_after of a DEFER whose decision carried none;
// the contract promises retry_after > 0 for every DEFER.
const minDeferRetry = time.Second

func stateToProto(s limiter.State) sendgatev1.ReputationState {
	if s > limiter.Held {
		return sendgatev1.ReputationState_REPUTATION_STATE_UNSPECIFIED
	}
	return sendgatev1.ReputationState(s)
}

// stateFromProto converts a filter state; ok is false for an unknown value.
func stateFromProto(s sendgatev1.ReputationState) (limiter.State, bool) {
	if s < 0 || s > sendgatev1.ReputationState_REPUTATION_STATE_HELD {
		return limiter.StateUnspecified, false
	}
	return limiter.State(s), true
}

func classToProto(c limiter.Class) sendgatev1.Classification {
	if int(c) >= limiter.NumClasses {
		return sendgatev1.Classification_CLASSIFICATION_UNSPECIFIED
	}
	return sendgatev1.Classification(c)
}

func reasonToProto(r limiter.Reason) sendgatev1.DeferReason {
	if r > limiter.ReasonUnavailable {
		return sendgatev1.DeferReason_DEFER_REASON_UNSPECIFIED
	}
	return sendgatev1.DeferReason(r)
}

func verdictToProto(v limiter.Verdict) sendgatev1.Verdict {
	if v > limiter.Defer {
		return sendgatev1.Verdict_VERDICT_UNSPECIFIED
	}
	return sendgatev1.Verdict(v)
}

// timeToProto returns nil for the zero time ("unset").
func timeToProto(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

// setDuration fills d without allocating (durationpb.New would).
func setDuration(d *durationpb.Duration, v time.Duration) {
	d.Seconds = int64(v / time.Second)
	d.Nanos = int32(v % time.Second)
}

// canSendBox holds a CanSendResponse with its tiers and durations, so that
// the whole response is one allocation instead of up to fourteen. The
// response points into the box; the box lives as long as the response.
type canSendBox struct {
	resp  sendgatev1.CanSendResponse
	ptrs  [limiter.NumTiers]*sendgatev1.TierStatus
	tiers [limiter.NumTiers]sendgatev1.TierStatus
	durs  [2*limiter.NumTiers + 1]durationpb.Duration
}

// canSendResponse converts a decision. why is the rule or note behind a
// BLOCKED or HELD deferral ("" when unknown). An ALLOW costs one allocation
// (the box); a DEFER one more (the detail sentence).
func canSendResponse(d *limiter.Decision, provider string, count uint32, why string) *sendgatev1.CanSendResponse {
	return fillCanSendResponse(new(canSendBox), d, provider, count, why)
}

// fillCanSendResponse converts a decision into b, which must be zero, and
// returns b's response. A batch allocates the boxes of all its responses
// at once.
func fillCanSendResponse(b *canSendBox, d *limiter.Decision, provider string, count uint32, why string) *sendgatev1.CanSendResponse {
	r := &b.resp
	r.Verdict = verdictToProto(d.Verdict)
	r.Reason = reasonToProto(d.Reason)
	r.Provider = provider
	r.State = stateToProto(d.State)
	nd := 0
	if d.Verdict == limiter.Defer {
		ra := d.RetryAfter
		if ra <= 0 {
			ra = minDeferRetry
		}
		setDuration(&b.durs[nd], ra)
		r.RetryAfter = &b.durs[nd]
		nd++
	}
	tiers := d.Tiers.Slice()
	for i := range tiers {
		t := &tiers[i]
		ts := &b.tiers[i]
		ts.Name = t.Tier.String()
		ts.Limit = t.Limit
		ts.Remaining = t.Remaining
		ts.ConfiguredLimit = t.Configured
		ts.LearnedCeiling = t.Ceiling
		ts.Calendar = t.Calendar
		setDuration(&b.durs[nd], t.Window)
		ts.Window = &b.durs[nd]
		nd++
		if t.RetryAfter > 0 {
			setDuration(&b.durs[nd], t.RetryAfter)
			ts.RetryAfter = &b.durs[nd]
			nd++
		}
		b.ptrs[i] = ts
	}
	r.Tiers = b.ptrs[:len(tiers)]
	r.Detail = detail(d, count, why)
	return r
}

// tiersToProto converts the tiers of a key view.
func tiersToProto(t *limiter.Tiers) []*sendgatev1.TierStatus {
	list := t.Slice()
	if len(list) == 0 {
		return nil
	}
	out := make([]*sendgatev1.TierStatus, len(list))
	for i, s := range list {
		ts := &sendgatev1.TierStatus{
			Name:            s.Tier.String(),
			Limit:           s.Limit,
			Remaining:       s.Remaining,
			Window:          durationpb.New(s.Window),
			ConfiguredLimit: s.Configured,
			LearnedCeiling:  s.Ceiling,
			Calendar:        s.Calendar,
		}
		if s.RetryAfter > 0 {
			ts.RetryAfter = durationpb.New(s.RetryAfter)
		}
		out[i] = ts
	}
	return out
}

// keyState converts everything known about a key.
func keyState(v *limiter.KeyView) *sendgatev1.KeyState {
	ks := &sendgatev1.KeyState{
		SenderIp:         v.Key.IP,
		Provider:         v.Key.Provider,
		State:            stateToProto(v.State),
		Since:            timeToProto(v.Since),
		Until:            timeToProto(v.Until),
		Reason:           v.Reason,
		LastReply:        v.LastReply,
		Strikes:          v.Strikes,
		RateFactor:       v.Factor,
		Tiers:            tiersToProto(&v.Tiers),
		NeedsRemediation: v.Remediation,
	}
	if len(v.History) > 0 {
		ks.History = make([]*sendgatev1.Transition, len(v.History))
		for i, t := range v.History {
			ks.History[i] = &sendgatev1.Transition{
				At:     timeToProto(t.At),
				From:   stateToProto(t.From),
				To:     stateToProto(t.To),
				Reason: t.Reason,
				Reply:  t.Reply,
				Actor:  t.Actor,
			}
		}
	}
	for c, n := range v.Counts {
		if n == 0 || c == int(limiter.ClassUnspecified) {
			continue
		}
		if ks.ReportCounts == nil {
			ks.ReportCounts = make(map[string]uint64)
		}
		ks.ReportCounts[classToProto(limiter.Class(c)).String()] = n
	}
	return ks
}

// reportResponse converts the outcome of a report.
func reportResponse(class limiter.Class, rule, provider string, out *limiter.Outcome) *sendgatev1.ReportResultResponse {
	return &sendgatev1.ReportResultResponse{
		Classification: classToProto(class),
		Rule:           rule,
		State:          stateToProto(out.State),
		StateUntil:     timeToProto(out.Until),
		StateChanged:   out.Changed,
		Provider:       provider,
	}
}

// Page tokens are the store's cursor in base64url, so that callers treat
// them as opaque.

func encodePageToken(cursor string) string {
	if cursor == "" {
		return ""
	}
	return base64.RawURLEncoding.EncodeToString([]byte(cursor))
}

func decodePageToken(token string) (string, error) {
	if token == "" {
		return "", nil
	}
	b, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil {
		return "", err
	}
	return string(b), nil
}

// detail is CanSend's one human sentence:
//
//	allowed
//	allowed as a probe
//	hour tier exhausted: 600/600, next message in 4m12s
//	minute tier has 2 of 30 left, 5 needed, enough in 20s
//	blocked until 2026-11-27T10:00:00Z by tencent/ip-frequency-limited
//	probing after a block: next probe in 45s
//	held until released: whitelisting requested
//
// An ALLOW returns a constant; a DEFER allocates the sentence once, built
// with strconv and time's Append functions rather than fmt.
func detail(d *limiter.Decision, count uint32, why string) string {
	if d.Verdict != limiter.Defer {
		if d.Probe {
			return "allowed as a probe"
		}
		return "allowed"
	}
	var buf [160]byte
	b := buf[:0]
	switch d.Reason {
	case limiter.ReasonRateLimited:
		var t *limiter.TierStatus
		for i := range d.Tiers.Slice() {
			if d.Tiers.List[i].Tier == d.Limiting {
				t = &d.Tiers.List[i]
			}
		}
		if t == nil {
			b = append(b, "rate limited, next message in "...)
			b = appendDuration(b, d.RetryAfter)
			break
		}
		b = append(b, t.Tier.String()...)
		if t.Remaining == 0 || count <= 1 {
			// A paced tier has nothing left between its slots, however
			// little it sent: say the limit, not a count of what was used.
			b = append(b, " tier: 0 of "...)
			b = strconv.AppendUint(b, t.Limit, 10)
			b = append(b, " left, next message in "...)
		} else {
			b = append(b, " tier has "...)
			b = strconv.AppendUint(b, t.Remaining, 10)
			b = append(b, " of "...)
			b = strconv.AppendUint(b, t.Limit, 10)
			b = append(b, " left, "...)
			b = strconv.AppendUint(b, uint64(count), 10)
			b = append(b, " needed, enough in "...)
		}
		b = appendDuration(b, d.RetryAfter)
		if d.Factor > 0 && d.Factor < 1 {
			b = append(b, " (throttled to "...)
			b = strconv.AppendInt(b, int64(d.Factor*100+0.5), 10)
			b = append(b, "% of the configured rate)"...)
		}
	case limiter.ReasonBlocked:
		b = append(b, "blocked"...)
		if !d.Until.IsZero() {
			b = append(b, " until "...)
			b = d.Until.UTC().AppendFormat(b, time.RFC3339)
		} else {
			b = append(b, ", retry in "...)
			b = appendDuration(b, d.RetryAfter)
		}
		if why != "" {
			b = append(b, " by "...)
			b = append(b, why...)
		}
	case limiter.ReasonProbing:
		b = append(b, "probing after a block: next probe in "...)
		b = appendDuration(b, d.RetryAfter)
	case limiter.ReasonHeld:
		b = append(b, "held"...)
		if !d.Until.IsZero() {
			b = append(b, " until "...)
			b = d.Until.UTC().AppendFormat(b, time.RFC3339)
		} else {
			b = append(b, " until released"...)
		}
		if why != "" {
			b = append(b, ": "...)
			b = append(b, why...)
		}
	case limiter.ReasonUnavailable:
		b = append(b, "the state store is unreachable and sendgate fails closed: retry in "...)
		b = appendDuration(b, d.RetryAfter)
	default:
		b = append(b, "deferred, retry in "...)
		b = appendDuration(b, d.RetryAfter)
	}
	return string(b)
}

// appendDuration appends d for people, rounded up so that a wait is never
// understated: "250ms", "4.2s", "4m12s", "2h", "26h5m".
func appendDuration(b []byte, d time.Duration) []byte {
	switch {
	case d <= 0:
		return append(b, "0s"...)
	case d < time.Second:
		ms := (d + time.Millisecond - 1) / time.Millisecond
		b = strconv.AppendInt(b, int64(ms), 10)
		return append(b, "ms"...)
	case d < 10*time.Second:
		tenths := (d + 100*time.Millisecond - 1) / (100 * time.Millisecond)
		b = strconv.AppendInt(b, int64(tenths/10), 10)
		if tenths%10 != 0 {
			b = append(b, '.')
			b = strconv.AppendInt(b, int64(tenths%10), 10)
		}
		return append(b, 's')
	}
	secs := int64((d + time.Second - 1) / time.Second)
	h, m, s := secs/3600, secs/60%60, secs%60
	if h > 0 {
		b = strconv.AppendInt(b, h, 10)
		b = append(b, 'h')
		if m == 0 && s == 0 {
			return b
		}
	}
	if h > 0 || m > 0 {
		b = strconv.AppendInt(b, m, 10)
		b = append(b, 'm')
		if s == 0 {
			return b
		}
	}
	b = strconv.AppendInt(b, s, 10)
	return append(b, 's')
}
