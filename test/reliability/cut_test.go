package reliability_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"warrant.dev/warrant/internal/plane"
	"warrant.dev/warrant/protocol"
)

// TestConnectionCut cuts the connection between a runner and the plane
// for longer than a lease (6 s against 3 s leases here; -reliability.cut=30s
// for the full-length run) in two ways: sever (every connection reset,
// new ones refused) and blackhole (nothing forwarded, requests hang until
// their deadlines). Two runs are sleeping in sessions when the cut starts,
// two more are submitted during it. Afterwards:
//
//   - the two sleeping runs end failed "runner lost" (the plane expired
//     their leases), and the runner killed their sessions: their
//     processes are gone and their marker shows no end line and nothing
//     after the plane's run.failed;
//   - the runs submitted during the cut end (completed if the runner
//     claimed them after the cut, failed "runner lost" if the plane
//     handed one to a claim whose reply the cut swallowed) — never twice;
//   - after the cut the runner claims again: three new runs complete;
//   - the usual invariants, and the database passes its integrity check.
func TestConnectionCut(t *testing.T) {
	if testing.Short() {
		t.Skip("runs real plane and runner processes")
	}
	cut := 6 * time.Second
	if *flagCut > 0 {
		cut = *flagCut
	}
	for _, mode := range []string{"sever", "blackhole"} {
		t.Run(mode, func(t *testing.T) { testConnectionCut(t, mode, cut) })
	}
}

func testConnectionCut(t *testing.T, mode string, cut time.Duration) {
	w := newWorld(t, "cut-"+mode, worldConfig{plane: planeConfig{leaseTTL: 3 * time.Second, heartbeat: time.Second}, relay: true, directRequester: true})
	rn := w.startRunner("cut-"+mode+"-runner", 3) // a claim poll is in flight when the cut starts
	trust := trustFromFiles(t, w.pp, rn)
	ctx, cancel := context.WithTimeout(bg(t), 3*time.Minute)
	defer cancel()

	// Two runs sleeping past the cut, each for its own length.
	base := int((cut + 15*time.Second).Seconds()) + rand.IntN(20)
	type sleeper struct{ id, tok, sleep string }
	var sleepers []sleeper
	for i := range 2 {
		sleep := fmt.Sprintf("%d.%03d", base, 200+i)
		r, tok, err := w.submit(ctx, runSpec{body: "sleep " + sleep, secret: i == 0})
		if err != nil {
			t.Fatal(err)
		}
		sleepers = append(sleepers, sleeper{id: r.ID, tok: tok, sleep: sleep})
	}
	t.Cleanup(func() {
		for _, s := range sleepers {
			for _, pid := range sessionProcs("sleep", s.sleep) {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	})
	if !eventually(30*time.Second, func() bool {
		for _, s := range sleepers {
			if len(sessionProcs("sleep", s.sleep)) == 0 {
				return false
			}
		}
		return true
	}) {
		t.Fatal("the sleeping runs did not start")
	}

	cutAt := time.Now()
	switch mode {
	case "sever":
		w.rl.sever()
	case "blackhole":
		w.rl.blackhole()
	}
	var during []string
	for range 2 {
		r, _, err := w.submit(ctx, runSpec{body: bodyEcho})
		if err != nil {
			t.Fatal(err)
		}
		during = append(during, r.ID)
	}
	time.Sleep(time.Until(cutAt.Add(cut)))
	w.rl.heal()
	t.Logf("%s cut for %s", mode, time.Since(cutAt).Round(time.Millisecond))

	for _, s := range sleepers {
		r, err := w.waitEnd(ctx, w.pp.admin, s.id, 30*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if r.State != protocol.StateFailed || r.Failure == nil || r.Failure.Message != "runner lost: lease expired" {
			t.Errorf("sleeping run %s ended %s %+v, want failed: runner lost", s.id, r.State, r.Failure)
		}
	}
	// The runner stops a session whose lease it lost: no process left.
	if !eventually(15*time.Second, func() bool {
		for _, s := range sleepers {
			if len(sessionProcs("sleep", s.sleep)) > 0 {
				return false
			}
		}
		return true
	}) {
		t.Errorf("the runner did not stop the sessions of the runs it lost")
	}
	marks := readMarkers(t, w.markers)
	for _, s := range sleepers {
		if m := marks[s.tok]; m == nil || len(m.starts) != 1 || len(m.ends) != 0 {
			t.Errorf("run %s: want one start and no end line, got %+v", s.id, m)
		}
	}
	for _, id := range during {
		r, err := w.waitEnd(ctx, w.pp.admin, id, 60*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("run submitted during the cut: %s %s", r.State, failureText(r.Failure))
	}
	// The runner claims again.
	for range 3 {
		r, _, err := w.submit(ctx, runSpec{body: bodyEcho})
		if err != nil {
			t.Fatal(err)
		}
		end, err := w.waitEnd(ctx, w.pp.admin, r.ID, 60*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if end.State != protocol.StateCompleted {
			t.Errorf("run %s after the cut ended %s %+v", r.ID, end.State, end.Failure)
		}
	}
	waitAllTerminal(t, w.pp.admin, 30*time.Second)
	if !rn.stop(30 * time.Second) {
		t.Error("the runner did not drain on SIGTERM")
	}
	out := checkInvariants(t, w.pp, w.markers, trust)
	t.Logf("%s: %s", mode, out)
	w.pp.stop(10 * time.Second)
	checkDatabase(t, filepath.Join(w.pp.data, plane.DatabaseFile))
}
