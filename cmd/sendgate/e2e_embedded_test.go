package main

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sendgate/sendgate/client"
	sendgatev1 "github.com/sendgate/sendgate/proto/sendgate/v1"
)

// embeddedConfig gives the consumption keys one day tier of 200 that does
// not calendar-reset: it refills 200/86400 a second, so in the test's time
// (well under 80s) the whole messages remaining change only by what is
// taken. QQ and Gmail keep their built-in reply rules for blocks and
// throttles.
const embeddedConfig = `# plain token buckets (no pacing): these tests take bursts
machine: {burst: 0}
providers:
  bulk:
    domains: [bulk.test]
    tiers: {day: 200}
`

// dayCap is the day tier of bulk.test in embeddedConfig.
const dayCap = 200

// e2eFlush is the flush interval of the embedded store in these tests.
const e2eFlush = 500 * time.Millisecond

// bulkKey is a consumption key of the embedded test.
type bulkKey struct {
	ip       string
	phase1   int // ALLOWs taken, then at least one flush interval of quiet
	tail     int // ALLOWs taken right before SIGKILL
	graceful int // ALLOWs taken right before SIGTERM
}

// TestE2EEmbeddedDurability runs the real binary on the embedded store and
// checks the durability promise of issue 4: after SIGKILL every block,
// hold, throttle, strike and history entry is back and tier consumption
// lost is at most what was taken within the last flush interval; after
// SIGTERM nothing at all is lost. It also checks the start-up log line and
// that a second serve on the same data directory is refused.
func TestE2EEmbeddedDurability(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	t.Parallel()
	bin := buildBinary(t)
	dir := t.TempDir()
	cfg := writeFile(t, dir, "sendgate.yaml", embeddedConfig)
	dataDir := filepath.Join(dir, "data")
	args := []string{"--store", "embedded", "--data-dir", dataDir, "--flush-interval", e2eFlush.String(), "--config", cfg}

	bulk := []bulkKey{
		{ip: "192.0.2.1", phase1: 40, tail: 7, graceful: 5},
		{ip: "192.0.2.2", phase1: 25, tail: 3, graceful: 4},
		{ip: "192.0.2.3", phase1: 10, tail: 0, graceful: 0},
	}
	const (
		blockIP     = "192.0.2.10" // blocked by QQ after a few sends
		strikeIP    = "192.0.2.11" // blocked, released, blocked again: two strikes
		lateBlockIP = "192.0.2.12" // blocked right before SIGKILL
		holdIP      = "192.0.2.20" // held until a time
		lateHoldIP  = "192.0.2.21" // held right before SIGKILL
		throttleIP  = "192.0.2.30" // throttled by Gmail
	)
	type keyRef struct{ ip, provider string }
	reputation := []keyRef{
		{blockIP, "tencent"}, {strikeIP, "tencent"}, {lateBlockIP, "tencent"},
		{holdIP, "tencent"}, {lateHoldIP, "tencent"}, {throttleIP, "google"},
	}
	wantKeys := len(bulk) + len(reputation)

	// First life: fresh directory.
	a := startServe(t, bin, "first", args...)
	checkLoaded(t, a, 0)
	ca := a.dial()
	take := func(c *client.Client, ip string, n int) {
		t.Helper()
		for i := 0; i < n; i++ {
			if r := canSend(t, c, ip, "bulk.test", false); r.GetVerdict() != sendgatev1.Verdict_VERDICT_ALLOW {
				t.Fatalf("CanSend %s #%d: %v", ip, i, r)
			}
		}
	}
	for _, k := range bulk {
		take(ca, k.ip, k.phase1)
	}
	for i := 0; i < 5; i++ {
		canSend(t, ca, blockIP, "qq.com", false)
	}
	blockQQ := func(c *client.Client, ip string) {
		t.Helper()
		r := report(t, c, ip, "qq.com", 550, "", "550 Ip frequency limited")
		if r.GetState() != sendgatev1.ReputationState_REPUTATION_STATE_BLOCKED || !r.GetStateChanged() {
			t.Fatalf("QQ block of %s: %v", ip, r)
		}
	}
	blockQQ(ca, blockIP)
	blockQQ(ca, strikeIP)
	setState(t, ca, strikeIP, "tencent", sendgatev1.StateAction_STATE_ACTION_RELEASE, nil, "whitelisted by QQ")
	blockQQ(ca, strikeIP)
	setState(t, ca, holdIP, "tencent", sendgatev1.StateAction_STATE_ACTION_HOLD, timestamppb.New(time.Now().Add(2*time.Hour)), "e2e: investigating complaints")
	if r := report(t, ca, throttleIP, "gmail.com", 421, "4.7.28", "421-4.7.28 Gmail has detected an unusual rate of unsolicited mail originating from your IP address."); r.GetState() != sendgatev1.ReputationState_REPUTATION_STATE_THROTTLED {
		t.Fatalf("Gmail 4.7.28: %v", r)
	}

	// One flush interval (twice, for slack) of quiet: phase 1 must be on
	// disk. Then a tail of consumption and two transitions, and SIGKILL at
	// once.
	time.Sleep(2 * e2eFlush)
	for _, k := range bulk {
		take(ca, k.ip, k.tail)
	}
	blockQQ(ca, lateBlockIP)
	setState(t, ca, lateHoldIP, "tencent", sendgatev1.StateAction_STATE_ACTION_HOLD, nil, "e2e: held right before the crash")
	before := map[keyRef]*sendgatev1.KeyState{}
	for _, k := range reputation {
		before[k] = getState(t, ca, k.ip, k.provider)
	}
	a.kill()

	// The reputation keys say what they should before we compare them.
	for k, st := range before {
		if st.GetState() == sendgatev1.ReputationState_REPUTATION_STATE_HEALTHY || len(st.GetHistory()) == 0 {
			t.Errorf("%v before the crash: %v", k, st)
		}
	}
	if s := before[keyRef{strikeIP, "tencent"}].GetStrikes(); s < 2 {
		t.Errorf("two blocks gave %d strikes, want at least 2", s)
	}
	if st := before[keyRef{holdIP, "tencent"}]; st.GetState() != sendgatev1.ReputationState_REPUTATION_STATE_HELD || st.GetUntil() == nil || !strings.Contains(st.GetReason(), "investigating") {
		t.Errorf("hold before the crash: %v", st)
	}

	// Second life, after SIGKILL.
	b := startServe(t, bin, "after-sigkill", args...)
	checkLoaded(t, b, wantKeys)
	cb := b.dial()
	for _, k := range reputation {
		sameState(t, "after SIGKILL", before[k], getState(t, cb, k.ip, k.provider))
	}
	for _, k := range bulk {
		rem := dryRemaining(t, cb, k.ip)
		durable := dayCap - k.phase1                    // flushed before the quiet interval
		lost := int(rem) - (dayCap - k.phase1 - k.tail) // tokens that came back
		t.Logf("SIGKILL: %s consumed %d (+%d in the last %v), remaining %d after restart: lost %d", k.ip, k.phase1, k.tail, e2eFlush, rem, lost)
		if int(rem) > durable || lost < 0 || lost > k.tail {
			t.Errorf("SIGKILL: %s remaining %d after restart, want between %d and %d (lost %d, at most the %d taken in the last interval)",
				k.ip, rem, dayCap-k.phase1-k.tail, durable, lost, k.tail)
		}
	}

	// A second serve on the same data directory is refused, naming the file.
	second := launchServe(t, bin, "second", args...)
	select {
	case <-second.exited:
	case <-time.After(10 * time.Second):
		t.Fatalf("a second serve on the locked data directory still runs after 10s:\n%s", second.logs.String())
	}
	if second.waitErr == nil || !strings.Contains(second.logs.String(), filepath.Join(dataDir, "sendgate.db")) || !strings.Contains(second.logs.String(), "locked") {
		t.Errorf("second serve on a locked directory: exit %v, want a failure naming the file and the lock:\n%s", second.waitErr, second.logs.String())
	}
	if b.readyz() != 200 {
		t.Errorf("the first serve is not ready after the second was refused")
	}

	// SIGTERM: consumption and a transition right before it, nothing lost.
	for _, k := range bulk {
		take(cb, k.ip, k.graceful)
	}
	// Released, the key keeps its strikes, so it still carries information
	// and must come back with its whole history. (A key released to HEALTHY
	// without strikes is idle, and an idle key is not kept: its history goes
	// with it.)
	if st := setState(t, cb, strikeIP, "tencent", sendgatev1.StateAction_STATE_ACTION_RELEASE, nil, "e2e: released before SIGTERM"); st.GetStrikes() < 2 {
		t.Errorf("release dropped the strikes: %v", st)
	}
	remBefore := map[string]uint64{}
	for _, k := range bulk {
		remBefore[k.ip] = dryRemaining(t, cb, k.ip)
	}
	for _, k := range reputation {
		before[k] = getState(t, cb, k.ip, k.provider)
	}
	b.terminate()

	c := startServe(t, bin, "after-sigterm", args...)
	checkLoaded(t, c, wantKeys)
	cc := c.dial()
	for _, k := range reputation {
		sameState(t, "after SIGTERM", before[k], getState(t, cc, k.ip, k.provider))
	}
	for _, k := range bulk {
		if rem := dryRemaining(t, cc, k.ip); rem != remBefore[k.ip] {
			t.Errorf("SIGTERM: %s remaining %d after restart, %d before the stop: graceful stop lost consumption", k.ip, rem, remBefore[k.ip])
		}
	}
	c.terminate()
}

// setState calls SetState through the generated stub.
func setState(t *testing.T, c *client.Client, ip, provider string, action sendgatev1.StateAction, until *timestamppb.Timestamp, note string) *sendgatev1.KeyState {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	resp, err := c.Admin().SetState(ctx, &sendgatev1.SetStateRequest{SenderIp: ip, Provider: provider, Action: action, Until: until, Note: note})
	if err != nil {
		t.Fatalf("SetState(%s, %s, %v): %v", ip, provider, action, err)
	}
	return resp.GetState()
}

// dryRemaining returns the day tier's remaining of ip at bulk.test, from a
// dry-run CanSend.
func dryRemaining(t *testing.T, c *client.Client, ip string) uint64 {
	t.Helper()
	r := canSend(t, c, ip, "bulk.test", true)
	rem, ok := tierRemaining(r.GetTiers(), "day")
	if !ok {
		t.Fatalf("dry-run CanSend %s: no day tier: %v", ip, r)
	}
	return rem
}

// sameState fails t unless got is want in everything but the tiers, which
// refill with time.
func sameState(t *testing.T, when string, want, got *sendgatev1.KeyState) {
	t.Helper()
	w, g := proto.Clone(want).(*sendgatev1.KeyState), proto.Clone(got).(*sendgatev1.KeyState)
	w.Tiers, g.Tiers = nil, nil
	if !proto.Equal(w, g) {
		t.Errorf("%s: state of %s/%s differs:\nbefore: %v\nafter:  %v", when, want.GetSenderIp(), want.GetProvider(), w, g)
	}
}

// checkLoaded checks the store's start-up line: how many keys it loaded and
// how long that took.
func checkLoaded(t *testing.T, p *serveProc, keys int) {
	t.Helper()
	recs := p.logRecords("state loaded")
	if len(recs) != 1 {
		t.Errorf("%s: %d \"state loaded\" log lines, want 1:\n%s", p.name, len(recs), p.logs.String())
		return
	}
	r := recs[0]
	if n, ok := r["keys"].(float64); !ok || int(n) != keys {
		t.Errorf("%s: state loaded keys=%v, want %d", p.name, r["keys"], keys)
	}
	if _, ok := r["took"]; !ok {
		t.Errorf("%s: state loaded line has no time taken: %v", p.name, r)
	}
	if took, ok := r["took"].(float64); ok {
		t.Logf("%s: loaded %v keys in %v", p.name, r["keys"], time.Duration(took))
	}
}
