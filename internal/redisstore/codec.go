package redisstore

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/sendgate/sendgate/limiter"
)

// The layout of a key's hash. The fields the admission script reads are
// separate; the rest of Rep is one JSON field.
//
//	st since until f fat c0..c3 cat rem   Rep fields the script reads
//	v                                     Rep.Version (compare-and-set)
//	rep                                   the rest of Rep, JSON (repJSON)
//	t0..t3 u0..u3                         Use.Buckets: TAT (Unix ns) and Used
//	w0s w0c w0p .. w3s w3c w3p            Use.Sent: Start (Unix ns), Cur, Prev
//	pn                                    Use.ProbeNext (Unix ns)
//
// Instants are decimal Unix nanoseconds; "" (or absent) is the zero time.

// useFields are the fields owned by Admit and Refund, deleted by a Cleared
// update.
var useFields = []string{"t0", "u0", "t1", "u1", "t2", "u2", "t3", "u3",
	"w0s", "w0c", "w0p", "w1s", "w1c", "w1p", "w2s", "w2c", "w2p", "w3s", "w3c", "w3p", "pn"}

type repJSON struct {
	Reason      string                     `json:"reason,omitempty"`
	LastReply   string                     `json:"reply,omitempty"`
	Strikes     uint32                     `json:"strikes,omitempty"`
	StrikeAt    int64                      `json:"strike_at,omitempty"`
	DecreasedAt int64                      `json:"decreased_at,omitempty"`
	ProbeOK     uint32                     `json:"probe_ok,omitempty"`
	Counts      [limiter.NumClasses]uint64 `json:"counts"`
	Triggers    []triggerJSON              `json:"triggers,omitempty"`
	History     []transitionJSON           `json:"history,omitempty"`
}

type triggerJSON struct {
	Rule     string `json:"rule"`
	Start    int64  `json:"start,omitempty"`
	Hits     uint32 `json:"hits,omitempty"`
	Attempts uint32 `json:"attempts,omitempty"`
}

type transitionJSON struct {
	At     int64         `json:"at,omitempty"`
	From   limiter.State `json:"from"`
	To     limiter.State `json:"to"`
	Reason string        `json:"reason,omitempty"`
	Reply  string        `json:"reply,omitempty"`
	Actor  string        `json:"actor,omitempty"`
}

func nanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromNanos(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

func timeField(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return strconv.FormatInt(t.UnixNano(), 10)
}

func parseTime(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return time.Time{}, err
	}
	return fromNanos(n), nil
}

func formatFloat(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }

// encodeRep returns the field/value pairs of rep, for HSET.
func encodeRep(rep *limiter.Reputation) ([]any, error) {
	j := repJSON{
		Reason: rep.Reason, LastReply: rep.LastReply, Strikes: rep.Strikes,
		StrikeAt: nanos(rep.StrikeAt), DecreasedAt: nanos(rep.DecreasedAt),
		ProbeOK: rep.ProbeOK, Counts: rep.Counts,
	}
	for _, tc := range rep.Triggers {
		j.Triggers = append(j.Triggers, triggerJSON{Rule: tc.Rule, Start: nanos(tc.Start), Hits: tc.Hits, Attempts: tc.Attempts})
	}
	for _, tr := range rep.History {
		j.History = append(j.History, transitionJSON{At: nanos(tr.At), From: tr.From, To: tr.To, Reason: tr.Reason, Reply: tr.Reply, Actor: tr.Actor})
	}
	b, err := json.Marshal(&j)
	if err != nil {
		return nil, fmt.Errorf("encode reputation: %w", err)
	}
	rem := "0"
	if rep.Remediation {
		rem = "1"
	}
	return []any{
		"st", strconv.Itoa(int(rep.State)),
		"since", timeField(rep.Since),
		"until", timeField(rep.Until),
		"f", formatFloat(rep.Factor),
		"fat", timeField(rep.FactorAt),
		"c0", strconv.FormatUint(rep.Ceilings[0], 10),
		"c1", strconv.FormatUint(rep.Ceilings[1], 10),
		"c2", strconv.FormatUint(rep.Ceilings[2], 10),
		"c3", strconv.FormatUint(rep.Ceilings[3], 10),
		"cat", timeField(rep.CeilingAt),
		"rem", rem,
		"v", strconv.FormatUint(rep.Version, 10),
		"rep", string(b),
	}, nil
}

// decodeRecord rebuilds a record from the fields of its hash.
func decodeRecord(h map[string]string) (limiter.Record, error) {
	var rec limiter.Record
	rep := &rec.Rep
	var err error
	u := func(field string) uint64 {
		s := h[field]
		if s == "" || err != nil {
			return 0
		}
		var v uint64
		v, err = strconv.ParseUint(s, 10, 64)
		if err != nil {
			err = fmt.Errorf("field %s: %w", field, err)
		}
		return v
	}
	i := func(field string) int64 {
		s := h[field]
		if s == "" || err != nil {
			return 0
		}
		var v int64
		v, err = strconv.ParseInt(s, 10, 64)
		if err != nil {
			err = fmt.Errorf("field %s: %w", field, err)
		}
		return v
	}
	f := func(field string) float64 {
		s := h[field]
		if s == "" || err != nil {
			return 0
		}
		var v float64
		v, err = strconv.ParseFloat(s, 64)
		if err != nil {
			err = fmt.Errorf("field %s: %w", field, err)
		}
		return v
	}
	tm := func(field string) time.Time { return fromNanos(i(field)) }

	rep.State = limiter.State(u("st"))
	rep.Since, rep.Until = tm("since"), tm("until")
	rep.Factor, rep.FactorAt = f("f"), tm("fat")
	for t := range rep.Ceilings {
		rep.Ceilings[t] = u("c" + strconv.Itoa(t))
	}
	rep.CeilingAt = tm("cat")
	rep.Remediation = h["rem"] == "1"
	rep.Version = u("v")
	for t := range rec.Use.Buckets {
		ts := strconv.Itoa(t)
		rec.Use.Buckets[t] = limiter.Bucket{TAT: i("t" + ts), Used: u("u" + ts)}
		rec.Use.Sent[t] = limiter.Window{Start: i("w" + ts + "s"), Cur: f("w" + ts + "c"), Prev: f("w" + ts + "p")}
	}
	rec.Use.ProbeNext = tm("pn")
	if err != nil {
		return limiter.Record{}, fmt.Errorf("decode record: %w", err)
	}
	if s := h["rep"]; s != "" {
		var j repJSON
		if err := json.Unmarshal([]byte(s), &j); err != nil {
			return limiter.Record{}, fmt.Errorf("decode record: rep: %w", err)
		}
		rep.Reason, rep.LastReply, rep.Strikes = j.Reason, j.LastReply, j.Strikes
		rep.StrikeAt, rep.DecreasedAt = fromNanos(j.StrikeAt), fromNanos(j.DecreasedAt)
		rep.ProbeOK, rep.Counts = j.ProbeOK, j.Counts
		for _, tc := range j.Triggers {
			rep.Triggers = append(rep.Triggers, limiter.TriggerCount{Rule: tc.Rule, Start: fromNanos(tc.Start), Hits: tc.Hits, Attempts: tc.Attempts})
		}
		for _, tr := range j.History {
			rep.History = append(rep.History, limiter.Transition{At: fromNanos(tr.At), From: tr.From, To: tr.To, Reason: tr.Reason, Reply: tr.Reply, Actor: tr.Actor})
		}
	}
	return rec, nil
}

// hashKey returns the Redis key of key: prefix{ip|provider}. The braces are
// the Cluster hash tag, so all of a key's data lives in one slot.
func hashKey(prefix string, key limiter.Key) string {
	return prefix + "{" + key.IP + "|" + key.Provider + "}"
}

// parseHashKey is the inverse of hashKey.
func parseHashKey(prefix, s string) (limiter.Key, bool) {
	s, ok := strings.CutPrefix(s, prefix+"{")
	if !ok || !strings.HasSuffix(s, "}") {
		return limiter.Key{}, false
	}
	ip, provider, ok := strings.Cut(s[:len(s)-1], "|")
	if !ok {
		return limiter.Key{}, false
	}
	return limiter.Key{IP: ip, Provider: provider}, true
}
