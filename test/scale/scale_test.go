package scale_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"warrant.dev/warrant/client"
	"warrant.dev/warrant/internal/plane"
	"warrant.dev/warrant/internal/store/postgres/pgtest"
	"warrant.dev/warrant/internal/testutil"
	"warrant.dev/warrant/protocol"
)

const (
	replicas          = 3
	runnersN          = 6
	sessionsPerRunner = 2
	totalRuns         = 500
	killAfterEnded    = 200 // SIGKILL the last replica once this many runs ended
	submitters        = 24  // runs submitted and not yet ended, at most
)

// TestScaleOut runs Warrant scaled out, with real processes: three
// `warrant plane serve --store postgres://…` replicas on one database
// (sharing the signing key file and WARRANT_MASTER_KEY), six `warrant
// runner start` processes, two per replica, and 500 `command` runs
// submitted round-robin across the replicas, each followed to its end on
// the event stream of another replica. Each runner is given every
// replica's URL, its own replica's first. Once 200 runs have ended, one
// replica is killed with SIGKILL; submissions and streams move to the
// survivors, and so do its runners, which fail over to the next replica
// in their list and carry on with the runs they hold and new ones.
//
// Then: every run is terminal (none stuck); every run was claimed exactly
// once (one run.claimed in its chain) and ended once; every completed run's
// bundle verifies offline with the plane key and the runners' keys pinned
// (keys read from files, not from the planes); the killed replica's
// runners completed runs after it died; and the only runs that did not
// complete are runs a runner of the killed replica had claimed there but
// never heard of (the reply died with it), failed by the survivors with
// "runner lost" once their lease lapsed.
func TestScaleOut(t *testing.T) {
	if testing.Short() {
		t.Skip("starts 3 planes and 6 runners and runs 500 runs")
	}
	conn := pgtest.Schema(t)
	bin := warrantBinary(t)
	root := t.TempDir()
	keyFile, masterB64, planeKey := sharedKeys(t, root)
	env := append(os.Environ(), plane.MasterKeyEnv+"="+masterB64, "WARRANT_CONFIG_DIR="+filepath.Join(root, "config"))

	// The first replica bootstraps the admin; the others find it in the
	// database. Leases are short so a lost runner's runs end quickly, and
	// long enough that a runner starved of CPU on a busy machine keeps its.
	planes := make([]*proc, replicas)
	for i := range planes {
		planes[i] = startProc(t, fmt.Sprintf("plane %d", i), bin, env, true, "plane", "serve",
			"--store", conn, "--data", filepath.Join(root, fmt.Sprint("plane", i)), "--key", keyFile,
			"--listen", "127.0.0.1:0", "--lease-ttl", "10s", "--heartbeat", "2s", "--log-level", "warn")
	}
	adminToken := readToken(t, filepath.Join(root, "plane0", plane.AdminTokenFile))
	for i := 1; i < replicas; i++ {
		if _, err := os.Stat(filepath.Join(root, fmt.Sprint("plane", i), plane.AdminTokenFile)); err == nil {
			t.Fatalf("replica %d bootstrapped a second admin", i)
		}
	}

	// A replica with another signing key refuses to join.
	strayKey := filepath.Join(t.TempDir(), "other.key.pem")
	stray := startProc(t, "stray replica", bin, env, false, "plane", "serve", "--store", conn, "--data", t.TempDir(), "--key", strayKey, "--listen", "127.0.0.1:0")
	<-stray.done
	if stray.err == nil || !strings.Contains(stray.logs.String(), "signing key") {
		t.Fatalf("a replica with another signing key started (exit %v):\n%s", stray.err, stray.logs)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	admins := make([]*client.Client, replicas)
	for i, p := range planes {
		admins[i] = newClient(t, p.url, adminToken)
	}
	dev, err := admins[0].CreatePrincipal(ctx, client.CreatePrincipalRequest{Name: "scale@test", Role: client.RoleRequester})
	if err != nil {
		t.Fatal(err)
	}
	devs := make([]*client.Client, replicas)
	for i, p := range planes {
		devs[i] = newClient(t, p.url, dev.Token.Secret)
	}
	ws := testutil.UploadWorkspace(t, devs[1], map[string]string{"README.md": "# scale\n", "main.go": "package main\n"})

	// Six runners, two per replica, each given every replica's URL, its
	// own replica's first.
	runnerOf := map[string]int{} // runner id → replica
	trust := protocol.NewTrustStore()
	trust.Add(protocol.SignerPlane, planeKey)
	runnerDirs := make([]string, runnersN)
	runnerProcs := make([]*proc, runnersN)
	for i := range runnersN {
		et, err := admins[i%replicas].CreateEnrollToken(ctx, client.EnrollTokenRequest{Pool: "default"})
		if err != nil {
			t.Fatal(err)
		}
		runnerDirs[i] = filepath.Join(root, fmt.Sprint("runner", i))
		urls := make([]string, replicas)
		for k := range replicas {
			urls[k] = planes[(i+k)%replicas].url
		}
		runnerProcs[i] = startProc(t, fmt.Sprintf("runner %d (plane %d)", i, i%replicas), bin, append(env, "WARRANT_PLANE="+strings.Join(urls, ",")), false,
			"runner", "start", "--pool", "default", "--enroll-token", et.Token, "--data", runnerDirs[i],
			"--name", fmt.Sprint("scale-runner-", i), "--concurrency", fmt.Sprint(sessionsPerRunner), "--log-level", "warn")
	}
	for i, dir := range runnerDirs {
		id := waitRunnerIdentity(ctx, t, dir)
		runnerOf[id] = i % replicas
		pemText, err := os.ReadFile(filepath.Join(dir, "runner.pub.pem"))
		if err != nil {
			t.Fatal(err)
		}
		pub, err := protocol.ParsePublicKeyPEM(string(pemText))
		if err != nil {
			t.Fatal(err)
		}
		trust.Add(protocol.SignerRunner, pub)
	}

	// Submit round-robin; follow each run on another replica's stream.
	victim := replicas - 1
	var dead atomic.Bool
	live := func(i int) int {
		for k := range replicas {
			if j := (i + k) % replicas; !(j == victim && dead.Load()) {
				return j
			}
		}
		panic("unreachable")
	}
	req := client.RunRequest{Agent: protocol.AgentSpec{Kind: protocol.AgentCommand}, Prompt: "echo hi", Pool: "default", Workspace: ws}
	type outcome struct {
		id        string
		state     string
		ambiguous int // submissions that may have created a run we never heard of
	}
	results := make([]outcome, totalRuns)
	var next, ended atomic.Int64
	killNow := make(chan struct{})
	var killedAt atomic.Int64
	var errMu sync.Mutex
	var firstErr error
	fail := func(err error) {
		errMu.Lock()
		defer errMu.Unlock()
		if firstErr == nil {
			firstErr = err
			cancel()
		}
	}
	start := time.Now()
	var wg sync.WaitGroup
	for range submitters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= totalRuns || ctx.Err() != nil {
					return
				}
				o := &results[i]
				for attempt := 0; o.id == ""; attempt++ {
					resp, err := devs[live(i)].SubmitRun(ctx, req)
					switch {
					case err == nil:
						o.id = resp.Run.ID
					case client.IsTransient(err) && attempt < 20:
						var te *client.TransportError
						if errors.As(err, &te) {
							o.ambiguous++
						}
						time.Sleep(100 * time.Millisecond)
					default:
						fail(fmt.Errorf("submit run %d: %w", i, err))
						return
					}
				}
				state, err := follow(ctx, devs, live, i+1, o.id)
				if err != nil {
					fail(fmt.Errorf("follow %s: %w", o.id, err))
					return
				}
				o.state = state
				if ended.Add(1) == killAfterEnded {
					close(killNow)
				}
			}
		}()
	}
	go func() {
		select {
		case <-killNow:
		case <-ctx.Done():
			return
		}
		killedAt.Store(time.Now().UnixNano())
		dead.Store(true)
		planes[victim].kill9()
		t.Logf("SIGKILLed plane %d after %d runs ended (%.1fs in)", victim, killAfterEnded, time.Since(start).Seconds())
	}()
	wg.Wait()
	if firstErr != nil {
		t.Fatalf("%v (ended %d of %d)", firstErr, ended.Load(), totalRuns)
	}
	if !dead.Load() {
		t.Fatal("the replica was never killed")
	}
	elapsed := time.Since(start)
	// Every runner, the killed replica's too, drains through the
	// survivors.
	var swg sync.WaitGroup
	for _, p := range runnerProcs {
		swg.Add(1)
		go func() {
			defer swg.Done()
			p.stop()
		}()
	}
	swg.Wait()

	// Every run the database holds, through a survivor.
	survivor := admins[0]
	var all []client.Run
	cursor := ""
	for {
		page, err := survivor.ListRuns(ctx, client.ListRunsOptions{Limit: 500, Cursor: cursor})
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, page.Runs...)
		if page.Next == "" {
			break
		}
		cursor = page.Next
	}
	ambiguous := 0
	acked := map[string]bool{}
	for _, o := range results {
		ambiguous += o.ambiguous
		acked[o.id] = true
	}
	extra := 0
	for _, r := range all {
		if !acked[r.ID] {
			extra++
		}
	}
	if len(acked) != totalRuns || extra > ambiguous {
		t.Fatalf("%d distinct runs acknowledged (want %d); the database holds %d runs, %d unacknowledged with %d ambiguous submissions",
			len(acked), totalRuns, len(all), extra, ambiguous)
	}

	// Each run: terminal, claimed once, ended once; completed ones verify.
	type check struct {
		run       client.Run
		claims    int
		claimedAt time.Time
		terminals int
		lastType  string
		err       error
	}
	checks := make([]check, len(all))
	var cwg sync.WaitGroup
	work := make(chan int)
	for range 8 {
		cwg.Add(1)
		go func() {
			defer cwg.Done()
			for i := range work {
				c := &checks[i]
				c.run = all[i]
				evs, err := survivor.Events(ctx, c.run.ID, -1)
				if err != nil {
					c.err = err
					continue
				}
				for _, e := range evs.Events {
					switch typ := e.Event.Type(); {
					case typ == protocol.EventRunClaimed:
						c.claims++
						c.claimedAt, _ = protocol.ParseTime(e.TS)
					case isTerminalEvent(typ):
						c.terminals++
					}
					c.lastType = e.Event.Type()
				}
				if c.run.State == protocol.StateCompleted {
					b, _, err := survivor.Bundle(ctx, c.run.ID)
					if err != nil {
						c.err = fmt.Errorf("bundle: %w", err)
						continue
					}
					if rep := protocol.VerifyBundle(b, trust); !rep.Trusted() {
						c.err = fmt.Errorf("bundle not trusted: %w", rep.Err())
					}
				}
			}
		}()
	}
	for i := range all {
		work <- i
	}
	close(work)
	cwg.Wait()

	byState := map[string]int{}
	lost, afterKill := 0, 0 // runs of the killed replica's runners: lost; claimed after the kill and completed
	for _, c := range checks {
		r := c.run
		byState[r.State]++
		switch {
		case c.err != nil:
			t.Errorf("run %s: %v", r.ID, c.err)
		case !slices.Contains([]string{protocol.StateCompleted, protocol.StateFailed, protocol.StateCancelled}, r.State):
			t.Errorf("run %s is stuck in %s", r.ID, r.State)
		case c.claims != 1:
			t.Errorf("run %s was claimed %d times", r.ID, c.claims)
		case c.terminals != 1 || !isTerminalEvent(c.lastType):
			t.Errorf("run %s has %d terminal events, the last event is %s", r.ID, c.terminals, c.lastType)
		case r.State == protocol.StateCompleted:
			if runnerOf[r.RunnerID] == victim && c.claimedAt.UnixNano() > killedAt.Load() {
				afterKill++
			}
		case r.State == protocol.StateFailed && r.Failure != nil && strings.Contains(r.Failure.Message, "runner lost") && runnerOf[r.RunnerID] == victim:
			lost++
		default:
			t.Errorf("run %s ended %s (%+v) on runner %s of replica %d", r.ID, r.State, r.Failure, r.RunnerID, runnerOf[r.RunnerID])
		}
	}
	// A run is lost only when its claim's reply died with the replica: at
	// most one claim poll per session of the killed replica's runners.
	if maxLost := (runnersN / replicas) * sessionsPerRunner; lost > maxLost {
		t.Errorf("%d runs lost with the replica, more than its runners' %d sessions", lost, maxLost)
	}
	if afterKill == 0 {
		t.Error("the killed replica's runners completed no run after it died: they did not fail over")
	}
	t.Logf("%d runs in %.1fs (%.1f runs/s): %v; the killed replica's runners completed %d runs claimed after the kill, %d of theirs failed runner lost; %d ambiguous submissions, %d duplicate runs",
		len(all), elapsed.Seconds(), float64(len(all))/elapsed.Seconds(), byState, afterKill, lost, ambiguous, extra)
}

// follow streams run id's events from a live replica (starting the
// round-robin at i) until the run ends, resuming on another replica when
// the stream breaks, and returns the final state.
func follow(ctx context.Context, devs []*client.Client, live func(int) int, i int, id string) (string, error) {
	after := int64(-1)
	for attempt := 0; ; attempt++ {
		state := ""
		err := devs[live(i)].StreamEvents(ctx, id, after, func(m client.StreamMessage) error {
			switch m.Kind {
			case client.StreamEvent:
				after = m.Event.Seq
			case client.StreamEnd:
				state = m.State
			}
			return nil
		})
		if err == nil && state != "" {
			return state, nil
		}
		if err != nil && !client.IsTransient(err) || attempt >= 50 {
			return "", fmt.Errorf("stream (attempt %d): %v", attempt, err)
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// waitRunnerIdentity waits until the runner in dir has enrolled and
// returns its id (from identity.json).
func waitRunnerIdentity(ctx context.Context, t *testing.T, dir string) string {
	t.Helper()
	for {
		var id struct {
			RunnerID string `json:"runnerId"`
		}
		if data, err := os.ReadFile(filepath.Join(dir, "identity.json")); err == nil && json.Unmarshal(data, &id) == nil && id.RunnerID != "" {
			return id.RunnerID
		}
		select {
		case <-ctx.Done():
			t.Fatalf("runner in %s did not enroll", dir)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func isTerminalEvent(typ string) bool {
	return typ == protocol.EventRunCompleted || typ == protocol.EventRunFailed || typ == protocol.EventRunCancelled
}
