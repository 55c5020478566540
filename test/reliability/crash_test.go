package reliability_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"warrant.dev/warrant/internal/plane"
	"warrant.dev/warrant/protocol"
)

// killPoint is a moment of a run's life at which the plane is SIGKILLed:
// the test waits until the client→plane stream shows the request that
// starts it, lets the plane work on it for a random moment, and kills.
type killPoint struct {
	name  string
	re    *regexp.Regexp // nil: any moment
	delay [2]time.Duration
	// prime submits a run that will soon reach this point (a large
	// output for the upload window).
	prime *runSpec
}

var killPoints = map[string]killPoint{
	// A submission wakes the runners' waiting long polls: the plane is
	// creating the run and claiming it for one of them.
	"submit-and-claim": {name: "submit-and-claim", re: regexp.MustCompile(`POST /v1/runs HTTP/1\.1\r\n`), delay: [2]time.Duration{0, 15 * time.Millisecond}},
	// A claim poll from a runner that just freed a slot.
	"claim": {name: "claim", re: regexp.MustCompile(`POST /v1/claims HTTP/1\.1\r\n`), delay: [2]time.Duration{0, 10 * time.Millisecond}},
	// A blob frame of 100 kB or more in a batch upload (uploads are
	// throttled to 2 MB/s, so a 2 MB diff takes about a second).
	"upload": {name: "upload", re: regexp.MustCompile(`[0-9a-f]{64} [0-9]{6,}\n`), delay: [2]time.Duration{50 * time.Millisecond, 400 * time.Millisecond},
		prime: &runSpec{body: bodyBig}},
	"events":   {name: "events", re: regexp.MustCompile(`POST /v1/runs/[^/ ]+/events HTTP/1\.1\r\n`), delay: [2]time.Duration{0, 10 * time.Millisecond}},
	"complete": {name: "complete", re: regexp.MustCompile(`POST /v1/runs/[^/ ]+/complete HTTP/1\.1\r\n`), delay: [2]time.Duration{0, 15 * time.Millisecond}},
	"anytime":  {name: "anytime", delay: [2]time.Duration{0, 2 * time.Second}},
}

var runIDPattern = regexp.MustCompile(`run_[0-9a-f-]{36}`)

func randDuration(r [2]time.Duration) time.Duration {
	if r[1] <= r[0] {
		return r[0]
	}
	return r[0] + rand.N(r[1]-r[0])
}

// TestPlaneKill9 SIGKILLs `warrant plane serve` at chosen points of the
// life of at least 100 runs — while it creates and claims a run, while a
// runner's 2 MB output upload streams in, while it appends events, while
// it completes a run (countersigns and stores the receipt), and at random
// moments — and restarts it on the same data directory and port each
// time. Two runners (concurrency 2) keep going through it all (they
// reach the plane through a relay that watches the requests to time the
// kills). After every kill the database the dead plane left passes
// PRAGMA integrity_check. The run mix: echo, short sleeps, 2 MB outputs,
// runs given a secret that they print and write to a file, and runs
// cancelled while they sleep.
//
// Afterwards every run has ended with a reason, none ran twice, each
// claimed at most once, every receipt's bundle verifies offline with
// pinned keys, no session wrote anything after the plane failed its run,
// ten runs submitted after the last kill all complete, and the database
// passes the integrity checks.
func TestPlaneKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("runs real plane and runner processes")
	}
	w := newWorld(t, "kill9", worldConfig{plane: planeConfig{leaseTTL: 5 * time.Second, heartbeat: time.Second}, relay: true})
	w.rl.throttleUploads(2 << 20)
	runners := []*runnerProc{w.startRunner("kill9-runner-a", 2), w.startRunner("kill9-runner-b", 2)}
	trust := trustFromFiles(t, w.pp, runners...)
	ctx, cancel := context.WithTimeout(bg(t), 4*time.Minute)
	defer cancel()

	const minRuns = 100
	schedule := []string{"submit-and-claim", "claim", "upload", "upload", "events", "complete", "complete", "anytime"}
	rand.Shuffle(len(schedule), func(i, j int) { schedule[i], schedule[j] = schedule[j], schedule[i] })

	var submitted atomic.Int64
	var killerDone atomic.Bool
	var errMu sync.Mutex
	var errs []error
	fail := func(err error) {
		errMu.Lock()
		errs = append(errs, err)
		errMu.Unlock()
		cancel()
	}
	mix := func(i int) runSpec {
		switch {
		case i%10 == 3:
			return runSpec{body: bodyBig}
		case i%10 == 7:
			return runSpec{body: bodySecret, secret: true}
		case i%5 == 1:
			return runSpec{body: bodySleep(time.Duration(100+rand.IntN(700)) * time.Millisecond)}
		}
		return runSpec{body: bodyEcho}
	}

	// Submitters: each submits a run and follows it to its end, until at
	// least minRuns were submitted and the killer is done.
	var wg sync.WaitGroup
	for range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil && (submitted.Load() < minRuns || !killerDone.Load()) {
				i := int(submitted.Add(1))
				r, _, err := w.submit(ctx, mix(i))
				if err != nil {
					fail(fmt.Errorf("submit run %d: %w", i, err))
					return
				}
				if _, err := w.waitEnd(ctx, w.req, r.ID, 90*time.Second); err != nil {
					fail(err)
					return
				}
			}
		}()
	}
	// Cancellations: runs that sleep, cancelled while they run (or still
	// wait), through the kills.
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < 4 && ctx.Err() == nil; i++ {
			time.Sleep(time.Duration(1500+rand.IntN(2000)) * time.Millisecond)
			r, _, err := w.submit(ctx, runSpec{body: bodySleep(20 * time.Second)})
			if err != nil {
				fail(fmt.Errorf("submit a run to cancel: %w", err))
				return
			}
			time.Sleep(time.Duration(300+rand.IntN(1200)) * time.Millisecond)
			if err := w.cancel(ctx, r.ID); err != nil {
				fail(fmt.Errorf("cancel %s: %w", r.ID, err))
				return
			}
		}
	}()

	// The killer.
	type kill struct {
		point, request string
		at             time.Duration
	}
	var kills []kill
	start := time.Now()
	dbPath := filepath.Join(w.pp.data, plane.DatabaseFile)
	for _, name := range schedule {
		if ctx.Err() != nil {
			break
		}
		time.Sleep(time.Duration(800+rand.IntN(1700)) * time.Millisecond)
		kp := killPoints[name]
		fired := make(chan []byte, 1)
		var untap func()
		if kp.re != nil {
			untap = w.rl.onStream(kp.re, func(m []byte) {
				select {
				case fired <- m:
				default:
				}
			})
		}
		if kp.prime != nil {
			go func() {
				if _, _, err := w.submit(ctx, *kp.prime); err != nil && ctx.Err() == nil {
					fail(fmt.Errorf("prime %s: %w", name, err))
				}
			}()
		}
		request := "(any moment)"
		if kp.re != nil {
			select {
			case m := <-fired:
				request = strings.TrimSpace(string(m))
			case <-time.After(20 * time.Second):
				untap()
				t.Errorf("kill point %s: no matching request within 20s", name)
				continue
			case <-ctx.Done():
			}
			untap()
		}
		time.Sleep(randDuration(kp.delay))
		w.pp.kill9()
		kills = append(kills, kill{point: name, request: request, at: time.Since(start)})
		checkDatabase(t, dbPath) // what the dead plane left is consistent
		w.pp.restart()
	}
	killerDone.Store(true)
	wg.Wait()
	for _, err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		return
	}
	for i, k := range kills {
		t.Logf("kill %d at %5.1fs: %-16s %s", i+1, k.at.Seconds(), k.point, k.request)
	}

	// After the last kill: ten runs, all of which complete.
	for i := range 10 {
		r, _, err := w.submit(ctx, mix(i))
		if err != nil {
			t.Fatal(err)
		}
		end, err := w.waitEnd(ctx, w.req, r.ID, 60*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if end.State != protocol.StateCompleted {
			t.Errorf("run %s submitted after the last kill ended %s: %+v", r.ID, end.State, end.Failure)
		}
	}

	waitAllTerminal(t, w.pp.admin, 60*time.Second)
	for _, r := range runners {
		if !r.stop(30 * time.Second) {
			t.Errorf("%s did not drain on SIGTERM", r.name)
		}
	}
	out := checkInvariants(t, w.pp, w.markers, trust)
	t.Logf("after %d plane SIGKILLs: %s", len(kills), out)
	// The runs named by the requests the plane died on: how they ended,
	// and which incarnation of the plane recorded their completion (the
	// one killed: it committed before dying and answered the runner's
	// retry from the stored receipt; a later one: the retry completed it).
	logs, _ := os.ReadFile(w.pp.logPath)
	incarnations := strings.Split(string(logs), "=== "+w.pp.name+" start ")
	for i, k := range kills {
		m := runIDPattern.FindString(k.request)
		if m == "" {
			continue
		}
		r, err := w.pp.admin.GetRun(ctx, m)
		if err != nil {
			continue
		}
		where := "no completion logged"
		for n, inc := range incarnations[1:] {
			if strings.Contains(inc, `"msg":"run completed","runId":"`+m+`"`) {
				switch {
				case n+1 == i+1:
					where = "the killed plane had committed its completion (the runner's retry got the stored receipt)"
				case n+1 > i+1:
					where = fmt.Sprintf("completed after the restart (by plane %d; the kill ended plane %d)", n+1, i+1)
				default:
					where = "completed before the kill"
				}
			}
		}
		t.Logf("kill %d (%s) hit run %s: it ended %s %s; %s", i+1, k.point, m, r.State, failureText(r.Failure), where)
	}
	if out.total < minRuns {
		t.Errorf("only %d runs", out.total)
	}
	if !w.pp.stop(10 * time.Second) {
		t.Error("the plane did not stop on SIGTERM")
	}
	checkDatabase(t, dbPath)
}

// sessionProcs returns the pids of live processes whose command line is
// exactly argv (NUL-joined), read from /proc.
func sessionProcs(argv ...string) []int {
	want := strings.Join(argv, "\x00") + "\x00"
	var pids []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || string(cmdline) != want {
			continue
		}
		if stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat")); err == nil {
			// A zombie has finished; only its parent has not reaped it.
			if i := strings.LastIndexByte(string(stat), ')'); i > 0 && strings.HasPrefix(string(stat[i:]), ") Z") {
				continue
			}
		}
		pids = append(pids, pid)
	}
	return pids
}

// namespaceAvailable reports whether this host runs the namespace tier
// (`warrant runner doctor`); under CI it must.
func namespaceAvailable(t *testing.T) bool {
	t.Helper()
	out, err := exec.Command(warrantBinary(t), "runner", "doctor", "--isolation-tiers", "namespace").CombinedOutput()
	if err != nil {
		if isCI() {
			t.Fatalf("the namespace tier is not available under CI: %v\n%s", err, out)
		}
		return false
	}
	return true
}

// TestRunnerKill9 SIGKILLs a `warrant runner start` while its sessions
// run, on each isolation tier. Two runners (concurrency 2) hold four runs
// that sleep for a minute; one runner dies. Afterwards:
//
//   - the dead runner's runs end failed "runner lost" once their leases
//     lapse (never handed to another runner); the other runner's runs,
//     cancelled, end cancelled;
//   - on the namespace tier no process of the dead runner's sessions is
//     left (the session's PID namespace dies with its init); on the
//     process tier the harness dies by its parent-death signal, its
//     children may outlive the dead runner until it restarts, and the
//     restarted runner kills them (session.KillStrays) before it claims;
//   - the runner, restarted on its data directory, claims and completes
//     new runs (the other runner is stopped first, so it has to);
//   - the usual invariants: ended with reasons, none twice, bundles
//     verify, database intact.
func TestRunnerKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("runs real plane and runner processes")
	}
	for _, tier := range []string{protocol.IsolationProcess, protocol.IsolationNamespace} {
		t.Run(tier, func(t *testing.T) {
			if tier == protocol.IsolationNamespace && !namespaceAvailable(t) {
				t.Skip("this host does not run the namespace tier (warrant runner doctor)")
			}
			testRunnerKill9(t, tier)
		})
	}
}

func testRunnerKill9(t *testing.T, tier string) {
	w := newWorld(t, "runner-kill9-"+tier, worldConfig{plane: planeConfig{leaseTTL: 3 * time.Second, heartbeat: time.Second}})
	tiers := []string{"--isolation-tiers", tier}
	a := w.startRunner("rk9-"+tier+"-a", 2, tiers...)
	b := w.startRunner("rk9-"+tier+"-b", 2, tiers...)
	idA, _ := a.identity(t)
	trust := trustFromFiles(t, w.pp, a, b)
	ctx, cancel := context.WithTimeout(bg(t), 2*time.Minute)
	defer cancel()

	// Four runs that sleep a minute, each for its own length so its
	// processes can be found in /proc. Namespace sessions cannot write
	// outside their workspace, so their runs carry no marker lines.
	type held struct {
		id    string
		sleep string
	}
	var runs []held
	base := 60 + rand.IntN(30)
	for i := range 4 {
		sleep := fmt.Sprintf("%d.%03d", base, 100+i)
		spec := runSpec{body: "sleep " + sleep, isolation: tier, noMarkers: tier == protocol.IsolationNamespace}
		r, _, err := w.submit(ctx, spec)
		if err != nil {
			t.Fatal(err)
		}
		runs = append(runs, held{id: r.ID, sleep: sleep})
	}
	t.Cleanup(func() {
		// Whatever the outcome, no process this test started outlives it.
		for _, h := range runs {
			for _, pid := range sessionProcs("sleep", h.sleep) {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	})
	var byRunner map[string][]held
	if !eventually(30*time.Second, func() bool {
		byRunner = map[string][]held{}
		for _, h := range runs {
			r, err := w.pp.admin.GetRun(ctx, h.id)
			if err != nil || r.State != protocol.StateRunning || len(sessionProcs("sleep", h.sleep)) == 0 {
				return false
			}
			byRunner[r.RunnerID] = append(byRunner[r.RunnerID], h)
		}
		return true
	}) {
		t.Fatal("the four runs did not all start")
	}
	if len(byRunner[idA]) == 0 {
		t.Fatalf("runner a holds none of the runs: %v", byRunner)
	}
	a.kill9()
	killedAt := time.Now()
	for id, hs := range byRunner {
		if id == idA {
			continue
		}
		for _, h := range hs {
			if err := w.cancel(ctx, h.id); err != nil {
				t.Fatal(err)
			}
		}
	}
	for id, hs := range byRunner {
		for _, h := range hs {
			r, err := w.waitEnd(ctx, w.pp.admin, h.id, 30*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case id == idA && (r.State != protocol.StateFailed || r.Failure == nil || r.Failure.Message != "runner lost: lease expired"):
				t.Errorf("run %s of the killed runner ended %s %+v, want failed: runner lost", h.id, r.State, r.Failure)
			case id != idA && r.State != protocol.StateCancelled:
				t.Errorf("run %s of the surviving runner ended %s %+v, want cancelled", h.id, r.State, r.Failure)
			}
		}
	}
	// The killed runner's sessions: still running?
	orphans := map[string][]int{}
	for _, h := range byRunner[idA] {
		if pids := sessionProcs("sleep", h.sleep); len(pids) > 0 {
			orphans[h.id] = pids
		}
	}
	t.Logf("runner a (%d runs) SIGKILLed; its runs failed as runner lost %.1fs later; session processes still running then: %v",
		len(byRunner[idA]), time.Since(killedAt).Seconds(), orphans)
	if len(orphans) > 0 && tier == protocol.IsolationNamespace {
		t.Errorf("namespace sessions outlived their runner: %v", orphans)
	}

	// Restart the dead runner alone: the other one drains and stops.
	if !b.stop(30 * time.Second) {
		t.Error("runner b did not drain on SIGTERM")
	}
	a.start(false)
	// The restarted runner kills what its predecessor's sessions left.
	if !eventually(20*time.Second, func() bool {
		for _, h := range byRunner[idA] {
			if len(sessionProcs("sleep", h.sleep)) > 0 {
				return false
			}
		}
		return true
	}) {
		for _, h := range byRunner[idA] {
			t.Errorf("run %s: session processes %v still running after the runner restarted", h.id, sessionProcs("sleep", h.sleep))
		}
	}
	for range 4 {
		spec := runSpec{body: bodyEcho, isolation: tier, noMarkers: tier == protocol.IsolationNamespace}
		r, _, err := w.submit(ctx, spec)
		if err != nil {
			t.Fatal(err)
		}
		end, err := w.waitEnd(ctx, w.pp.admin, r.ID, 60*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if end.State != protocol.StateCompleted || end.RunnerID != idA {
			t.Errorf("run %s after the restart: %s by %s, want completed by the restarted runner %s (%+v)", r.ID, end.State, end.RunnerID, idA, end.Failure)
		}
	}
	waitAllTerminal(t, w.pp.admin, 30*time.Second)
	a.stop(30 * time.Second)
	out := checkInvariants(t, w.pp, w.markers, trust)
	t.Logf("%s tier: %s", tier, out)
	w.pp.stop(10 * time.Second)
	checkDatabase(t, filepath.Join(w.pp.data, plane.DatabaseFile))
}
