package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"

	"warrant.dev/warrant/client"
	"warrant.dev/warrant/internal/plane"
	"warrant.dev/warrant/internal/runner"
	"warrant.dev/warrant/internal/runner/sandbox/process"
	"warrant.dev/warrant/internal/runner/session"
	"warrant.dev/warrant/internal/workspace"
	"warrant.dev/warrant/protocol"
)

func init() { register(newBenchCmd) }

type benchFlags struct {
	runs        int
	concurrency int
	runners     int
	inFlight    int
	agent       string
	task        string
	planes      []string
	token       string
	pool        string
	warmup      int

	planeProcess    bool          // the plane as a `warrant plane serve` child process
	runnerProcesses bool          // runners as `warrant runner start` child processes
	rate            float64       // open loop: runs submitted per second (0: closed loop)
	duration        time.Duration // with rate: how long to submit
	sampleEvery     time.Duration // print memory and goroutines this often
	cpuProfile      string        // write this process's CPU profile of the measured runs here
}

// benchResult is the --json output of `warrant bench`.
type benchResult struct {
	Runs             int     `json:"runs"`
	Completed        int     `json:"completed"`
	Failed           int     `json:"failed"`
	Runners          int     `json:"runners"`
	Concurrency      int     `json:"concurrency"` // sessions per runner
	InFlight         int     `json:"inFlight"`    // runs submitted and not yet ended, at most
	Planes           int     `json:"planes"`
	Seconds          float64 `json:"seconds"`
	RunsPerSecond    float64 `json:"runsPerSecond"`
	LatencyP50Ms     float64 `json:"submitToReceiptP50Ms"`
	LatencyP95Ms     float64 `json:"submitToReceiptP95Ms"`
	LatencyP99Ms     float64 `json:"submitToReceiptP99Ms"`
	CreatedToStartMs float64 `json:"createdToHarnessStartP50Ms,omitempty"`
	ClaimToStartMs   float64 `json:"claimToHarnessStartP50Ms,omitempty"`
	PeakRSSMiB       float64 `json:"peakRssMiB"` // this process (the driver, and the plane and runners when in process)

	PlaneProcess     bool          `json:"planeProcess,omitempty"`
	RunnerProcesses  bool          `json:"runnerProcesses,omitempty"`
	PlanePeakRSSMiB  float64       `json:"planePeakRssMiB,omitempty"`  // the plane child process
	RunnerPeakRSSMiB float64       `json:"runnerPeakRssMiB,omitempty"` // the largest runner child process
	Rate             float64       `json:"rate,omitempty"`             // runs submitted per second, open loop
	Dropped          int           `json:"dropped,omitempty"`          // open loop: submissions skipped at the in-flight cap
	Samples          []benchSample `json:"samples,omitempty"`
}

func newBenchCmd(a *app) *cobra.Command {
	var f benchFlags
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure submit-to-receipt latency and throughput end to end",
		Long: `Start a plane (SQLite in a temporary directory) and runners in this process,
submit --runs runs of --agent (default: the command agent running 'echo hi')
keeping at most --in-flight runs unfinished, wait for each receipt, and print
runs/s and the p50/p95/p99 of submit-to-receipt latency. The first --warmup
runs are not counted.

With --plane-process the plane is a 'warrant plane serve' child process and
with --runner-processes each runner is a 'warrant runner start' child, so
their peak memory is measured apart (from /proc; Linux).

With --rate R the runs are submitted at a steady R per second for
--duration (open loop; a submission is skipped and counted as dropped when
--in-flight runs are already unfinished). --sample-every I prints, every I,
the runs ended, the interval's latency, and the memory (RSS) and goroutines
of the plane process and of this process (and the runner processes' RSS):
a soak whose numbers stay flat leaks nothing.

With --plane-urls URL[,URL…] and --bench-token it drives existing planes
instead (round-robin), and --runners 0 leaves the runners to you.`,
		Example: `  warrant bench --runs 200 --concurrency 4
  warrant bench --runs 1000 --runners 4 --concurrency 4 --plane-process --runner-processes
  warrant bench --rate 2 --duration 30m --plane-process --runners 4 --concurrency 4 --sample-every 1m
  warrant bench --runs 500 --plane-urls http://10.0.0.1:7070,http://10.0.0.2:7070 --bench-token $T --runners 0`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return a.runBench(f) },
	}
	fl := cmd.Flags()
	fl.IntVar(&f.runs, "runs", 200, "runs to measure")
	fl.IntVar(&f.warmup, "warmup", 10, "runs before the measurement, not counted")
	fl.IntVar(&f.concurrency, "concurrency", 1, "sessions each runner executes at once")
	fl.IntVar(&f.runners, "runners", 1, "runners to start in this process (0: use the planes' own)")
	fl.IntVar(&f.inFlight, "in-flight", 0, "runs submitted and not yet ended, at most (default: runners × concurrency × 2)")
	fl.StringVar(&f.agent, "agent", protocol.AgentCommand, "agent of every run")
	fl.StringVar(&f.task, "task", "echo hi", "task of every run")
	fl.StringSliceVar(&f.planes, "plane-urls", nil, "existing planes to drive, round-robin (default: start one)")
	fl.StringVar(&f.token, "bench-token", "", "admin token for --plane-urls")
	fl.StringVar(&f.pool, "pool", "bench", "pool of the runs")
	fl.BoolVar(&f.planeProcess, "plane-process", false, "run the plane as a 'warrant plane serve' child process (its memory measured apart)")
	fl.BoolVar(&f.runnerProcesses, "runner-processes", false, "run each runner as a 'warrant runner start' child process (their memory measured apart)")
	fl.Float64Var(&f.rate, "rate", 0, "submit this many runs per second, open loop (0: keep --in-flight runs going)")
	fl.DurationVar(&f.duration, "duration", 0, "with --rate: how long to submit (instead of --runs)")
	fl.DurationVar(&f.sampleEvery, "sample-every", 0, "print memory and goroutines of the plane and runners this often (e.g. 1m)")
	fl.StringVar(&f.cpuProfile, "cpu-profile", "", "write a CPU profile of this process (with the plane and runners when in process) over the whole bench to `file` (go tool pprof)")
	return cmd
}

func (a *app) runBench(f benchFlags) error {
	if f.runs < 1 || f.concurrency < 1 || f.runners < 0 || f.warmup < 0 || f.rate < 0 || f.duration < 0 || f.sampleEvery < 0 {
		return usageError("--runs and --concurrency must be at least 1; --runners, --warmup, --rate, --duration and --sample-every must not be negative")
	}
	if f.duration > 0 && f.rate == 0 {
		return usageError("--duration needs --rate (runs per second)")
	}
	if (f.planeProcess || f.runnerProcesses) && runtime.GOOS != "linux" {
		return usageError("--plane-process and --runner-processes measure memory from /proc: Linux only")
	}
	if f.planeProcess && len(f.planes) > 0 {
		return usageError("--plane-process starts a plane; --plane-urls drives existing ones: choose one")
	}
	if f.inFlight <= 0 {
		f.inFlight = max(1, f.runners) * f.concurrency * 2
	}
	ctx, cancel := context.WithCancel(a.ctx)
	defer cancel()
	log := slog.New(slog.NewTextHandler(a.stdio.Err, &slog.HandlerOptions{Level: slog.LevelError}))
	self, err := os.Executable()
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "warrant-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	childEnv := append(os.Environ(), "WARRANT_CONFIG_DIR="+filepath.Join(dir, "config"))
	sampler := &benchSampler{start: time.Now()}
	// Child processes stop together: runners first (no new claims), then
	// the plane, whose drain ends the runners' claim long polls at once.
	defer func() {
		for _, r := range sampler.runners {
			r.terminate()
		}
		if sampler.plane != nil {
			sampler.plane.stop(10 * time.Second)
		}
		for _, r := range sampler.runners {
			r.wait(30 * time.Second)
		}
	}()

	var clients []*client.Client
	switch {
	case len(f.planes) > 0:
		if f.token == "" {
			return usageError("--plane-urls needs --bench-token (an admin token)")
		}
		for _, u := range f.planes {
			c, err := client.New(u, client.WithToken(f.token))
			if err != nil {
				return usageError("%v", err)
			}
			clients = append(clients, c)
		}
	case f.planeProcess:
		child, url, token, err := startBenchPlane(ctx, self, filepath.Join(dir, "plane"), childEnv)
		if err != nil {
			return err
		}
		sampler.plane, sampler.planeURL = child, url
		c, err := client.New(url, client.WithToken(token))
		if err != nil {
			return err
		}
		clients = append(clients, c)
	default:
		data, err := plane.OpenDataDir(ctx, filepath.Join(dir, "plane"), "", "")
		if err != nil {
			return err
		}
		defer data.Close()
		p, err := plane.New(ctx, plane.Config{Store: data.Store, Blobs: data.Blobs, Key: data.Key, MasterKey: data.MasterKey, Logger: log,
			RateLimit: 1e6, RateBurst: 1e6})
		if err != nil {
			return err
		}
		token, _, err := p.Bootstrap(ctx, filepath.Join(dir, "admin.token"))
		if err != nil {
			return err
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		srv := plane.NewServer(p)
		go func() { _ = srv.Serve(ln) }()
		defer func() {
			sctx, c := context.WithTimeout(context.Background(), 5*time.Second)
			defer c()
			_ = srv.Shutdown(sctx)
		}()
		c, err := client.New("http://"+ln.Addr().String(), client.WithToken(token))
		if err != nil {
			return err
		}
		clients = append(clients, c)
	}
	if len(f.planes) == 0 {
		pv, err := clients[0].GetPolicy(ctx)
		if err != nil {
			return err
		}
		pol := pv.Policy
		if !contains(pol.Runners.AllowPools, f.pool) {
			pol.Runners.AllowPools = append(pol.Runners.AllowPools, f.pool)
			if _, err := clients[0].PutPolicy(ctx, pol); err != nil {
				return err
			}
		}
	}

	// Timing hooks of in-process runners.
	var mu sync.Mutex
	claimedAt := map[string]time.Time{}
	startedAt := map[string]time.Time{}
	hooks := runner.Hooks{
		Claimed:        func(id string) { mu.Lock(); claimedAt[id] = time.Now(); mu.Unlock() },
		HarnessStarted: func(id string) { mu.Lock(); startedAt[id] = time.Now(); mu.Unlock() },
	}
	var runners []*runner.Runner
	runnerDone := make(chan error, f.runners)
	runCtx, abort := context.WithCancel(context.WithoutCancel(ctx))
	defer abort()
	for i := range f.runners {
		c := clients[i%len(clients)]
		et, err := c.CreateEnrollToken(ctx, client.EnrollTokenRequest{Pool: f.pool})
		if err != nil {
			return fmt.Errorf("enroll token: %w", err)
		}
		rdir := filepath.Join(dir, fmt.Sprintf("runner-%d", i))
		if f.runnerProcesses {
			child, err := startBenchChild(fmt.Sprintf("runner %d", i), self, append(childEnv, "WARRANT_PLANE="+c.BaseURL()), nil,
				"runner", "start", "--pool", f.pool, "--enroll-token", et.Token, "--data", rdir, "--name", fmt.Sprintf("bench-%d", i),
				"--concurrency", fmt.Sprint(f.concurrency), "--isolation-tiers", "process", "--log-level", "error")
			if err != nil {
				return err
			}
			sampler.runners = append(sampler.runners, child)
			continue
		}
		r, err := runner.New(runner.Options{
			PlaneURL: c.BaseURL(), Pool: f.pool, DataDir: rdir, EnrollToken: et.Token, Name: fmt.Sprintf("bench-%d", i),
			Concurrency: f.concurrency, Backends: []session.Backend{process.New(process.Options{})},
			WarrantPath: self, Logger: log, Hooks: hooks,
		})
		if err != nil {
			return err
		}
		runners = append(runners, r)
		go func() { runnerDone <- r.Run(runCtx) }()
	}
	defer func() {
		for _, r := range runners {
			r.Stop()
		}
		for range runners {
			<-runnerDone
		}
	}()

	// One small workspace, uploaded once, shared by every run.
	repo := filepath.Join(dir, "repo")
	if err := os.MkdirAll(repo, 0o700); err != nil {
		return err
	}
	if err := makeDemoRepo(ctx, repo); err != nil {
		return err
	}
	captured, err := workspace.Capture(ctx, workspace.CaptureOptions{Dir: repo, NoHashCache: true})
	if err != nil {
		return err
	}
	for _, c := range clients {
		if _, err := workspace.Upload(ctx, captured, planeBlobs{c}); err != nil {
			return err
		}
	}
	req := client.RunRequest{Agent: protocol.AgentSpec{Kind: f.agent}, Prompt: f.task, Pool: f.pool, Workspace: captured.Manifest}

	load := fmt.Sprintf("%d runs (+%d warm-up)", f.runs, f.warmup)
	if f.rate > 0 {
		load = fmt.Sprintf("%.2f runs/s for %s", f.rate, f.duration)
		if f.duration == 0 {
			load = fmt.Sprintf("%.2f runs/s, %d runs (+%d warm-up)", f.rate, f.runs, f.warmup)
		}
	}
	where := map[bool]string{true: "processes", false: "in this process"}
	fmt.Fprintf(a.stdio.Err, "bench: %s of %s %q, %d runner(s) × %d sessions (%s), at most %d in flight, %d plane(s) (%s)\n",
		load, f.agent, f.task, f.runners, f.concurrency, where[f.runnerProcesses], f.inFlight, len(clients), where[f.planeProcess || len(f.planes) > 0])

	d := &benchDriver{ctx: ctx, cancel: cancel, clients: clients, req: req}
	var samples []benchSample
	stopSampling := make(chan struct{})
	samplingDone := make(chan struct{})
	go func() {
		defer close(samplingDone)
		peakTick := time.NewTicker(time.Second)
		defer peakTick.Stop()
		var print <-chan time.Time
		if f.sampleEvery > 0 {
			t := time.NewTicker(f.sampleEvery)
			defer t.Stop()
			print = t.C
		}
		lastEnded, last := 0, time.Now()
		for {
			select {
			case <-stopSampling:
				return
			case <-peakTick.C:
				if sampler.plane != nil {
					sampler.plane.sample()
				}
				for _, r := range sampler.runners {
					r.sample()
				}
			case <-print:
				s := sampler.sample(ctx)
				ended, inFlight, lat := d.interval()
				now := time.Now()
				s.Ended, s.InFlight = ended, inFlight
				s.RunsPerSecond = float64(ended-lastEnded) / now.Sub(last).Seconds()
				s.IntervalP50Ms, s.IntervalP95Ms = pctMs(lat, 0.50), pctMs(lat, 0.95)
				lastEnded, last = ended, now
				samples = append(samples, s)
				fmt.Fprintf(a.stdio.Err, "bench: %6.0fs  ended %6d  %5.2f runs/s  p50 %8s  p95 %8s  in flight %3d | plane RSS %6.1f MiB, %4d goroutines | bench RSS %6.1f MiB, heap %6.1f MiB, %4d goroutines%s\n",
					s.Seconds, s.Ended, s.RunsPerSecond, ms(s.IntervalP50Ms), ms(s.IntervalP95Ms), s.InFlight, s.PlaneRSSMiB, s.PlaneGoroutines,
					s.BenchRSSMiB, s.BenchHeapMiB, s.BenchGoroutines, map[bool]string{true: fmt.Sprintf(" | runners RSS %.1f MiB", s.RunnerRSSMiB), false: ""}[len(sampler.runners) > 0])
			}
		}
	}()

	if f.cpuProfile != "" {
		pf, err := os.Create(f.cpuProfile)
		if err != nil {
			return fmt.Errorf("cpu profile: %w", err)
		}
		if err := pprof.StartCPUProfile(pf); err != nil {
			pf.Close()
			return fmt.Errorf("cpu profile: %w", err)
		}
		defer func() {
			pprof.StopCPUProfile()
			if err := pf.Close(); err != nil {
				fmt.Fprintf(a.stdio.Err, "bench: cpu profile: %v\n", err)
			}
		}()
	}
	start := time.Now()
	var measured []benchRun
	if f.rate > 0 {
		measured = d.openLoop(f)
	} else {
		measured = d.closedLoop(f)
	}
	close(stopSampling)
	<-samplingDone
	if d.err != nil {
		return fmt.Errorf("bench: %w", d.err)
	}
	end := time.Now()
	measureStart := d.measureStart
	if measureStart.IsZero() {
		measureStart = start
	}
	res := benchResult{Runs: len(measured), Runners: f.runners, Concurrency: f.concurrency, InFlight: f.inFlight, Planes: len(clients),
		PlaneProcess: f.planeProcess, RunnerProcesses: f.runnerProcesses, Rate: f.rate, Dropped: d.dropped, Samples: samples}
	var lat, createdToStart, claimToStart []time.Duration
	mu.Lock()
	for _, s := range measured {
		if s.state == protocol.StateCompleted {
			res.Completed++
		} else {
			res.Failed++
		}
		lat = append(lat, s.ended.Sub(s.submitted))
		if st, ok := startedAt[s.id]; ok {
			createdToStart = append(createdToStart, st.Sub(s.submitted))
			if cl, ok := claimedAt[s.id]; ok {
				claimToStart = append(claimToStart, st.Sub(cl))
			}
		}
	}
	mu.Unlock()
	res.Seconds = end.Sub(measureStart).Seconds()
	res.RunsPerSecond = float64(len(measured)) / res.Seconds
	res.LatencyP50Ms, res.LatencyP95Ms, res.LatencyP99Ms = pctMs(lat, 0.50), pctMs(lat, 0.95), pctMs(lat, 0.99)
	res.CreatedToStartMs, res.ClaimToStartMs = pctMs(createdToStart, 0.5), pctMs(claimToStart, 0.5)
	res.PeakRSSMiB = peakRSSMiB()
	if sampler.plane != nil {
		sampler.plane.sample()
		res.PlanePeakRSSMiB = mib(sampler.plane.peak())
	}
	for _, r := range sampler.runners {
		r.sample()
		res.RunnerPeakRSSMiB = max(res.RunnerPeakRSSMiB, mib(r.peak()))
	}
	if a.json {
		return printJSON(a.stdio.Out, res)
	}
	t := newTable(a.stdio.Out, "RUNS", "RUNNERS×SESSIONS", "IN FLIGHT", "RUNS/S", "P50", "P95", "P99", "CREATED→START P50", "CLAIM→START P50", "FAILED", "PEAK RSS")
	peak := fmt.Sprintf("%.0f MiB", res.PeakRSSMiB)
	if f.planeProcess || f.runnerProcesses {
		peak = fmt.Sprintf("bench %.0f MiB", res.PeakRSSMiB)
		if f.planeProcess {
			peak += fmt.Sprintf(", plane %.0f MiB", res.PlanePeakRSSMiB)
		}
		if f.runnerProcesses {
			peak += fmt.Sprintf(", runner %.0f MiB", res.RunnerPeakRSSMiB)
		}
	}
	t.row(fmt.Sprint(res.Runs), fmt.Sprintf("%d×%d", res.Runners, res.Concurrency), fmt.Sprint(res.InFlight), fmt.Sprintf("%.1f", res.RunsPerSecond),
		ms(res.LatencyP50Ms), ms(res.LatencyP95Ms), ms(res.LatencyP99Ms), ms(res.CreatedToStartMs), ms(res.ClaimToStartMs),
		fmt.Sprint(res.Failed), peak)
	if err := t.flush(); err != nil {
		return err
	}
	if d.dropped > 0 {
		fmt.Fprintf(a.stdio.Err, "bench: %d submissions were skipped: %d runs were already in flight (the system did not keep up with --rate)\n", d.dropped, f.inFlight)
	}
	return nil
}

// benchRun is one measured run.
type benchRun struct {
	id        string
	submitted time.Time
	ended     time.Time
	state     string
}

// benchDriver submits runs and follows each to its end.
type benchDriver struct {
	ctx     context.Context
	cancel  context.CancelFunc
	clients []*client.Client
	req     client.RunRequest

	errOnce      sync.Once
	err          error
	measureStart time.Time

	mu       sync.Mutex
	ended    int
	inFlight int
	dropped  int
	recent   []time.Duration // latencies since the last interval()
}

// one submits a run through c and waits for its end.
func (d *benchDriver) one(c *client.Client) (benchRun, error) {
	d.mu.Lock()
	d.inFlight++
	d.mu.Unlock()
	s := benchRun{submitted: time.Now()}
	resp, err := c.SubmitRun(d.ctx, d.req)
	if err == nil && resp.Run == nil {
		err = errors.New("no run in the reply")
	}
	if err == nil {
		s.id = resp.Run.ID
		s.state, err = waitForEnd(d.ctx, c, s.id)
	}
	s.ended = time.Now()
	d.mu.Lock()
	d.inFlight--
	if err == nil {
		d.ended++
		d.recent = append(d.recent, s.ended.Sub(s.submitted))
	}
	d.mu.Unlock()
	if err != nil {
		d.errOnce.Do(func() { d.err = err; d.cancel() })
	}
	return s, err
}

// interval returns the runs ended so far, the runs in flight and the
// latencies since the previous call.
func (d *benchDriver) interval() (int, int, []time.Duration) {
	d.mu.Lock()
	defer d.mu.Unlock()
	lat := d.recent
	d.recent = nil
	return d.ended, d.inFlight, lat
}

// closedLoop keeps f.inFlight runs going until f.warmup+f.runs were
// submitted; it returns the measured ones.
func (d *benchDriver) closedLoop(f benchFlags) []benchRun {
	total := f.warmup + f.runs
	samples := make([]benchRun, total)
	var next atomic.Int64
	var measureOnce sync.Once
	var wg sync.WaitGroup
	for w := range f.inFlight {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := d.clients[w%len(d.clients)]
			for {
				i := int(next.Add(1) - 1)
				if i >= total || d.ctx.Err() != nil {
					return
				}
				if i == f.warmup {
					measureOnce.Do(func() { d.measureStart = time.Now() })
				}
				s, err := d.one(c)
				if err != nil {
					return
				}
				samples[i] = s
			}
		}()
	}
	wg.Wait()
	return samples[f.warmup:]
}

// openLoop submits one run every 1/f.rate seconds, for f.duration (or
// f.warmup+f.runs runs), skipping a tick when f.inFlight runs are already
// unfinished; it returns the measured runs (after the warm-up).
func (d *benchDriver) openLoop(f benchFlags) []benchRun {
	var mu sync.Mutex
	var all []benchRun
	var wg sync.WaitGroup
	tick := time.NewTicker(time.Duration(float64(time.Second) / f.rate))
	defer tick.Stop()
	deadline := time.Now().Add(f.duration)
	submitted := 0
	for d.ctx.Err() == nil {
		if f.duration > 0 && !time.Now().Before(deadline) || f.duration == 0 && submitted >= f.warmup+f.runs {
			break
		}
		select {
		case <-tick.C:
		case <-d.ctx.Done():
		}
		d.mu.Lock()
		full := d.inFlight >= f.inFlight
		if full {
			d.dropped++
		}
		d.mu.Unlock()
		if full || d.ctx.Err() != nil {
			continue
		}
		if submitted == f.warmup {
			d.measureStart = time.Now()
		}
		measured := submitted >= f.warmup
		c := d.clients[submitted%len(d.clients)]
		submitted++
		wg.Add(1)
		go func() {
			defer wg.Done()
			if s, err := d.one(c); err == nil && measured {
				mu.Lock()
				all = append(all, s)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return all
}

// waitForEnd follows a run's event stream until it ends and returns its
// final state.
func waitForEnd(ctx context.Context, c *client.Client, id string) (string, error) {
	for attempt := 0; ; attempt++ {
		state := ""
		err := c.StreamEvents(ctx, id, -1, func(m client.StreamMessage) error {
			if m.Kind == client.StreamEnd {
				state = m.State
			}
			return nil
		})
		if err == nil {
			return state, nil
		}
		if !client.IsTransient(err) || attempt > 20 {
			return "", err
		}
		time.Sleep(client.DefaultBackoff.Wait(attempt))
	}
}

func pctMs(d []time.Duration, p float64) float64 {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(math.Ceil(float64(len(s))*p)) - 1
	return float64(s[max(0, i)].Microseconds()) / 1000
}

func ms(v float64) string {
	if v == 0 {
		return "-"
	}
	if v >= 1000 {
		return fmt.Sprintf("%.2fs", v/1000)
	}
	return fmt.Sprintf("%.1fms", v)
}

// peakRSSMiB reads the process's peak resident set (VmHWM) on Linux.
func peakRSSMiB() float64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return float64(m.Sys) / (1 << 20)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "VmHWM:") {
			var kb float64
			fmt.Sscanf(strings.TrimSpace(strings.TrimPrefix(line, "VmHWM:")), "%f", &kb)
			return kb / 1024
		}
	}
	return 0
}
