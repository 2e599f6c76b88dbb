package main

import (
	"bytes"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	sendgatev1 "github.com/sendgate/sendgate/proto/sendgate/v1"
)

// printJSON writes m as protobuf JSON with the proto field names (as in
// API.md) and every field, set or not, so scripts find each key.
func printJSON(w io.Writer, m proto.Message) error {
	b, err := protojson.MarshalOptions{Multiline: true, Indent: "  ", UseProtoNames: true, EmitUnpopulated: true}.Marshal(m)
	if err != nil {
		return fmt.Errorf("encode json: %w", err)
	}
	b = append(b, '\n')
	_, err = w.Write(b)
	return err
}

// printer writes output for people: blocks of aligned "key: value" lines,
// tables, and plain lines.
type printer struct {
	w     io.Writer
	now   time.Time
	buf   bytes.Buffer
	pairs [][2]string // the pending key: value block
}

func newPrinter(w io.Writer, now time.Time) *printer { return &printer{w: w, now: now} }

// kv adds a line to the current block of aligned key: value lines.
func (p *printer) kv(key, value string) { p.pairs = append(p.pairs, [2]string{key, value}) }

func (p *printer) endBlock() {
	width := 0
	for _, kv := range p.pairs {
		width = max(width, len(kv[0]))
	}
	for _, kv := range p.pairs {
		fmt.Fprintf(&p.buf, "%-*s  %s\n", width+1, kv[0]+":", kv[1])
	}
	p.pairs = p.pairs[:0]
}

// line writes s on a line of its own, after the pending block.
func (p *printer) line(s string) {
	p.endBlock()
	p.buf.WriteString(s)
	p.buf.WriteByte('\n')
}

// table writes rows under a header, columns aligned.
func (p *printer) table(indent string, header []string, rows [][]string) {
	p.endBlock()
	tw := tabwriter.NewWriter(&p.buf, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, indent+strings.Join(header, "\t"))
	for _, r := range rows {
		fmt.Fprintln(tw, indent+strings.Join(r, "\t"))
	}
	tw.Flush()
}

func (p *printer) flush() error {
	p.endBlock()
	_, err := p.w.Write(p.buf.Bytes())
	return err
}

// short strips an enum's prefix: REPUTATION_STATE_BLOCKED is BLOCKED.
func short(name, prefix string) string { return strings.TrimPrefix(name, prefix) }

func stateName(s sendgatev1.ReputationState) string { return short(s.String(), "REPUTATION_STATE_") }

func orDash(s, dash string) string {
	if s == "" {
		return dash
	}
	return s
}

// human writes a duration for people, rounded up to what matters: "250ms",
// "4.2s", "4m12s", "2h", "3d4h".
func human(d time.Duration) string {
	switch {
	case d <= 0:
		return "0s"
	case d < time.Second:
		return strconv.FormatInt(int64((d+time.Millisecond-1)/time.Millisecond), 10) + "ms"
	case d < 10*time.Second:
		tenths := (d + 100*time.Millisecond - 1) / (100 * time.Millisecond)
		if tenths%10 == 0 {
			return strconv.FormatInt(int64(tenths/10), 10) + "s"
		}
		return strconv.FormatInt(int64(tenths/10), 10) + "." + strconv.FormatInt(int64(tenths%10), 10) + "s"
	}
	secs := int64((d + time.Second - 1) / time.Second)
	days, h, m, s := secs/86400, secs/3600%24, secs/60%60, secs%60
	var b strings.Builder
	unit := func(n int64, u string) {
		if n > 0 {
			b.WriteString(strconv.FormatInt(n, 10))
			b.WriteString(u)
		}
	}
	switch {
	case days > 0:
		unit(days, "d")
		unit(h, "h")
		if days < 2 {
			unit(m, "m")
		}
	case h > 0:
		unit(h, "h")
		unit(m, "m")
	default:
		unit(m, "m")
		unit(s, "s")
	}
	return b.String()
}

func durationOf(d *durationpb.Duration) time.Duration {
	if d == nil {
		return 0
	}
	return d.AsDuration()
}

// when writes a time with how far it is from now: "2026-11-27T10:00:00Z (in
// 1h59m)", "... (5m ago)". Times are in UTC; "-" for unset.
func (p *printer) when(ts *timestamppb.Timestamp) string {
	if ts == nil {
		return "-"
	}
	t := ts.AsTime()
	s := t.UTC().Format(time.RFC3339)
	switch d := t.Sub(p.now); {
	case d > time.Second:
		return s + " (in " + human(d) + ")"
	case d < -time.Second:
		return s + " (" + human(-d) + " ago)"
	}
	return s + " (now)"
}

// tiers writes a tier table.
func (p *printer) tiers(ts []*sendgatev1.TierStatus) {
	if len(ts) == 0 {
		return
	}
	rows := make([][]string, 0, len(ts))
	for _, t := range ts {
		limit := strconv.FormatUint(t.GetLimit(), 10)
		if t.GetConfiguredLimit() != 0 && t.GetConfiguredLimit() != t.GetLimit() {
			limit += " (of " + strconv.FormatUint(t.GetConfiguredLimit(), 10) + ")"
		}
		window := human(durationOf(t.GetWindow()))
		if t.GetCalendar() {
			window = "calendar day"
		}
		ceiling := "-"
		if t.GetLearnedCeiling() > 0 {
			ceiling = strconv.FormatUint(t.GetLearnedCeiling(), 10)
		}
		next := "now"
		if d := durationOf(t.GetRetryAfter()); d > 0 {
			next = "in " + human(d)
		}
		rows = append(rows, []string{t.GetName(), limit, strconv.FormatUint(t.GetRemaining(), 10), window, next, ceiling})
	}
	p.line("")
	p.table("", []string{"TIER", "LIMIT", "REMAINING", "WINDOW", "NEXT", "LEARNED CEILING"}, rows)
}

func (p *printer) canSend(r *sendgatev1.CanSendResponse) {
	p.kv("verdict", short(r.GetVerdict().String(), "VERDICT_"))
	if r.GetVerdict() == sendgatev1.Verdict_VERDICT_DEFER {
		p.kv("reason", short(r.GetReason().String(), "DEFER_REASON_"))
		p.kv("retry after", human(durationOf(r.GetRetryAfter())))
	}
	p.kv("provider", r.GetProvider())
	p.kv("state", stateName(r.GetState()))
	p.kv("detail", r.GetDetail())
	p.tiers(r.GetTiers())
}

func (p *printer) report(r *sendgatev1.ReportResultResponse) {
	p.kv("classification", short(r.GetClassification().String(), "CLASSIFICATION_"))
	p.kv("rule", orDash(r.GetRule(), "(none: the default mapping by code)"))
	p.kv("provider", r.GetProvider())
	st := stateName(r.GetState())
	if r.GetStateChanged() {
		st += " (changed by this report)"
	}
	p.kv("state", st)
	if r.GetStateUntil() != nil {
		p.kv("until", p.when(r.GetStateUntil()))
	}
}

// keyState tells the story of one key.
func (p *printer) keyState(k *sendgatev1.KeyState) {
	p.kv("key", k.GetSenderIp()+" -> "+k.GetProvider())
	p.kv("state", stateName(k.GetState()))
	p.kv("since", p.when(k.GetSince()))
	if k.GetUntil() != nil {
		p.kv("until", p.when(k.GetUntil()))
	} else if s := k.GetState(); s == sendgatev1.ReputationState_REPUTATION_STATE_HELD {
		p.kv("until", "released by an operator")
	}
	p.kv("reason", orDash(k.GetReason(), "-"))
	p.kv("last reply", orDash(k.GetLastReply(), "-"))
	p.kv("strikes", strconv.FormatUint(uint64(k.GetStrikes()), 10))
	p.kv("rate factor", strconv.FormatFloat(k.GetRateFactor(), 'f', 2, 64))
	if k.GetNeedsRemediation() {
		p.kv("remediation", "NEEDED: blocked at a volume far below its limits; waiting will not lift it (ask the provider to whitelist the IP, then release)")
	}
	if counts := k.GetReportCounts(); len(counts) > 0 {
		names := make([]string, 0, len(counts))
		for n := range counts {
			names = append(names, n)
		}
		slices.Sort(names)
		parts := make([]string, len(names))
		for i, n := range names {
			parts[i] = short(n, "CLASSIFICATION_") + " " + strconv.FormatUint(counts[n], 10)
		}
		p.kv("reports", strings.Join(parts, ", "))
	}
	p.tiers(k.GetTiers())
	if h := k.GetHistory(); len(h) > 0 {
		p.line("")
		p.line("History, newest first:")
		rows := make([][]string, len(h))
		for i, t := range h {
			why := t.GetReason()
			if t.GetReply() != "" {
				why += ": " + strconv.Quote(t.GetReply())
			}
			rows[i] = []string{p.when(t.GetAt()), stateName(t.GetFrom()) + " -> " + stateName(t.GetTo()), "by " + orDash(t.GetActor(), "?"), why}
		}
		p.table("  ", []string{"AT", "TRANSITION", "ACTOR", "WHY"}, rows)
	}
}

func (p *printer) list(r *sendgatev1.ListStatesResponse, filter sendgatev1.ReputationState) {
	if len(r.GetStates()) == 0 {
		if filter == sendgatev1.ReputationState_REPUTATION_STATE_UNSPECIFIED {
			p.line("no keys outside HEALTHY")
		} else {
			p.line("no " + stateName(filter) + " keys")
		}
		return
	}
	rows := make([][]string, len(r.GetStates()))
	for i, k := range r.GetStates() {
		until := "-"
		if k.GetUntil() != nil {
			until = p.when(k.GetUntil())
		}
		rows[i] = []string{k.GetSenderIp(), k.GetProvider(), stateName(k.GetState()), until,
			strconv.FormatUint(uint64(k.GetStrikes()), 10), strconv.FormatFloat(k.GetRateFactor(), 'f', 2, 64), orDash(k.GetReason(), "-")}
	}
	p.table("", []string{"IP", "PROVIDER", "STATE", "UNTIL", "STRIKES", "FACTOR", "REASON"}, rows)
	if r.GetNextPageToken() != "" {
		p.line("(more keys: raise --limit)")
	}
}
