package boltstore

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sendgate/sendgate/limiter"
)

// crashEnv, when set to a directory, makes TestCrashChild the child process
// of TestCrash: it drives a store in that directory until it is killed.
const crashEnv = "BOLTSTORE_CRASH_DIR"

// crashFlush is the child's flush interval.
const crashFlush = 200 * time.Millisecond

// crashPolicy has only a calendar day tier, so that the day bucket's Used
// counts every admitted message.
func crashPolicy(t testing.TB) *limiter.Policy {
	t.Helper()
	pol := &limiter.Policy{Default: &limiter.Provider{
		Name: "default", Limits: limiter.Limits{limiter.Day: 1 << 40}, CalendarDay: true,
		Machine: limiter.DefaultMachine(),
	}}
	if err := pol.Validate(); err != nil {
		t.Fatal(err)
	}
	return pol
}

var crashConsumer = limiter.Key{IP: "10.0.0.1", Provider: "qq"}

// TestCrashChild is not a test on its own: run by TestCrash with crashEnv
// set, it admits one message at a time on crashConsumer and, every tenth
// step, moves another key (block, hold, throttle), printing each
// acknowledgement ("A total", "T key state history strikes") only after
// the call returned. On SIGTERM it closes the store and prints "CLOSED".
func TestCrashChild(t *testing.T) {
	dir := os.Getenv(crashEnv)
	if dir == "" {
		t.Skip("run by TestCrash")
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	pol := crashPolicy(t)
	start := time.Now()
	now := func() time.Time { return t0.Add(time.Since(start)) }
	s, err := Open(filepath.Join(dir, FileName), Options{FlushInterval: crashFlush, Policy: pol.For, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	l := limiter.New(s, pol, limiter.Options{})
	bg := context.Background()
	admitted := 0
	for i := 0; ctx.Err() == nil; i++ {
		if d, err := l.Check(bg, crashConsumer, 1, false, now()); err != nil || d.Verdict != limiter.Allow {
			t.Fatalf("check: %v %v", d.Verdict, err)
		}
		admitted++
		fmt.Printf("A %d\n", admitted)
		if i%10 == 0 {
			k := limiter.Key{IP: fmt.Sprintf("10.1.%d.%d", i/2560, i/10%256), Provider: "qq"}
			switch i / 10 % 3 {
			case 0:
				_, err = l.Report(bg, k, limiter.Report{Class: limiter.IPBlocked, Rule: "qq-550", Reply: "550 blocked"}, now())
			case 1:
				_, err = l.Hold(bg, k, time.Time{}, "abuse desk", "alice", now())
			case 2:
				_, err = l.Report(bg, k, limiter.Report{Class: limiter.RateLimited, Rule: "qq-421"}, now())
			}
			if err != nil {
				t.Fatal(err)
			}
			rec, _, _ := s.Get(bg, k)
			fmt.Printf("T %s %v %d %d %d\n", k, rec.Rep.State, len(rec.Rep.History), rec.Rep.Strikes, rec.Rep.Counts[limiter.IPBlocked])
		}
		time.Sleep(time.Millisecond)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	fmt.Println("CLOSED")
}

// ack is one acknowledgement of the child, with when the parent read it.
type ack struct {
	line string
	at   time.Time
}

func TestCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a child process")
	}
	t.Parallel()
	tests := []struct {
		name string
		sig  syscall.Signal
	}{
		{"SIGKILL", syscall.SIGKILL},
		{"SIGTERM", syscall.SIGTERM},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
			cmd.Env = append(os.Environ(), crashEnv+"="+dir)
			cmd.Stderr = os.Stderr
			out, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			acks := make(chan ack, 1<<16)
			go func() {
				defer close(acks)
				sc := bufio.NewScanner(out)
				for sc.Scan() {
					acks <- ack{sc.Text(), time.Now()}
				}
			}()
			// Let it run for several flush intervals, then signal it at a
			// random phase of the interval.
			var got []ack
			deadline := time.After(time.Second + rand.N(2*crashFlush))
		collect:
			for {
				select {
				case a, ok := <-acks:
					if !ok {
						t.Fatal("child exited early")
					}
					got = append(got, a)
				case <-deadline:
					break collect
				}
			}
			sentAt := time.Now()
			if err := cmd.Process.Signal(tt.sig); err != nil {
				t.Fatal(err)
			}
			for a := range acks {
				got = append(got, a)
			}
			werr := cmd.Wait()
			if tt.sig == syscall.SIGTERM && werr != nil {
				t.Fatalf("child after SIGTERM: %v", werr)
			}
			checkRestart(t, dir, got, sentAt, tt.sig == syscall.SIGTERM)
		})
	}
}

// checkRestart opens the child's file and checks every acknowledged
// transition is there, and that the consumption lost was acknowledged
// within the last flush interval before the signal (none after SIGTERM).
func checkRestart(t *testing.T, dir string, acks []ack, sentAt time.Time, graceful bool) {
	t.Helper()
	pol := crashPolicy(t)
	s, err := Open(filepath.Join(dir, FileName), Options{Policy: pol.For, SweepInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	admitted := map[uint64]time.Time{}
	var maxAck uint64
	transitions, closed := 0, false
	for _, a := range acks {
		f := strings.Fields(a.line)
		switch {
		case len(f) == 2 && f[0] == "A":
			n, _ := strconv.ParseUint(f[1], 10, 64)
			admitted[n] = a.at
			maxAck = max(maxAck, n)
		case len(f) == 6 && f[0] == "T":
			transitions++
			ip, prov, _ := strings.Cut(f[1], "|")
			k := limiter.Key{IP: ip, Provider: prov}
			rec, ok, _ := s.Get(ctx, k)
			if !ok {
				t.Fatalf("acknowledged transition of %v lost", k)
			}
			got := fmt.Sprintf("T %s %v %d %d %d", k, rec.Rep.State, len(rec.Rep.History), rec.Rep.Strikes, rec.Rep.Counts[limiter.IPBlocked])
			if got != a.line {
				t.Fatalf("after restart %q, acknowledged %q", got, a.line)
			}
		case a.line == "CLOSED":
			closed = true
		}
	}
	if transitions < 10 || maxAck < 100 {
		t.Fatalf("child did too little: %d transitions, %d admitted", transitions, maxAck)
	}
	rec, _, _ := s.Get(ctx, crashConsumer)
	onDisk := rec.Use.Buckets[limiter.Day].Used
	if onDisk > maxAck+1 {
		t.Fatalf("%d admitted on disk, more than the %d acknowledged (+1 in flight)", onDisk, maxAck)
	}
	if graceful {
		if !closed || onDisk < maxAck {
			t.Fatalf("after SIGTERM (closed %v): %d of %d admitted messages on disk", closed, onDisk, maxAck)
		}
		t.Logf("SIGTERM: %d transitions and all %d admitted messages kept", transitions, maxAck)
		return
	}
	lost := time.Duration(0)
	if onDisk < maxAck {
		lost = sentAt.Sub(admitted[onDisk+1])
	}
	t.Logf("SIGKILL: %d transitions kept; %d of %d admitted messages on disk, lost the last %v (flush interval %v)",
		transitions, onDisk, maxAck, lost.Round(time.Millisecond), crashFlush)
	// One interval, plus the time a flush takes to commit and scheduling
	// noise under -race.
	if limit := crashFlush + 150*time.Millisecond; lost > limit {
		t.Fatalf("lost %v of consumption, more than %v", lost, limit)
	}
}
