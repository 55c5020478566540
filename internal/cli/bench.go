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
	PeakRSSMiB       float64 `json:"peakRssMiB"`
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

With --plane URL[,URL…] and --token it drives existing planes instead
(round-robin), and --runners 0 leaves the runners to you.`,
		Example: `  warrant bench --runs 200 --concurrency 4
  warrant bench --runs 500 --plane http://10.0.0.1:7070,http://10.0.0.2:7070 --token $T --runners 0`,
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
	return cmd
}

func (a *app) runBench(f benchFlags) error {
	if f.runs < 1 || f.concurrency < 1 || f.runners < 0 || f.warmup < 0 {
		return usageError("--runs and --concurrency must be at least 1, --runners and --warmup at least 0")
	}
	if f.inFlight <= 0 {
		f.inFlight = max(1, f.runners) * f.concurrency * 2
	}
	ctx, cancel := context.WithCancel(a.ctx)
	defer cancel()
	log := slog.New(slog.NewTextHandler(a.stdio.Err, &slog.HandlerOptions{Level: slog.LevelError}))

	var clients []*client.Client
	if len(f.planes) == 0 {
		dir, err := os.MkdirTemp("", "warrant-bench-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
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
		pv, err := c.GetPolicy(ctx)
		if err != nil {
			return err
		}
		pol := pv.Policy
		if !contains(pol.Runners.AllowPools, f.pool) {
			pol.Runners.AllowPools = append(pol.Runners.AllowPools, f.pool)
			if _, err := c.PutPolicy(ctx, pol); err != nil {
				return err
			}
		}
	} else {
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
	}

	// Timing hooks of in-process runners.
	var mu sync.Mutex
	claimedAt := map[string]time.Time{}
	startedAt := map[string]time.Time{}
	hooks := runner.Hooks{
		Claimed:        func(id string) { mu.Lock(); claimedAt[id] = time.Now(); mu.Unlock() },
		HarnessStarted: func(id string) { mu.Lock(); startedAt[id] = time.Now(); mu.Unlock() },
	}
	self, err := os.Executable()
	if err != nil {
		return err
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
		dir, err := os.MkdirTemp("", "warrant-bench-runner-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		r, err := runner.New(runner.Options{
			PlaneURL: c.BaseURL(), Pool: f.pool, DataDir: dir, EnrollToken: et.Token, Name: fmt.Sprintf("bench-%d", i),
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
	repo, err := os.MkdirTemp("", "warrant-bench-repo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(repo)
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

	fmt.Fprintf(a.stdio.Err, "bench: %d runs (+%d warm-up) of %s %q, %d runner(s) × %d sessions, at most %d in flight, %d plane(s)\n",
		f.runs, f.warmup, f.agent, f.task, f.runners, f.concurrency, f.inFlight, len(clients))

	type sample struct {
		id        string
		submitted time.Time
		ended     time.Time
		state     string
	}
	total := f.warmup + f.runs
	samples := make([]sample, total)
	var next atomic.Int64
	var wg sync.WaitGroup
	var errOnce sync.Once
	var benchErr error
	start := time.Now()
	var measureStart time.Time
	var measureOnce sync.Once
	for w := range f.inFlight {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := clients[w%len(clients)]
			for {
				i := int(next.Add(1) - 1)
				if i >= total || ctx.Err() != nil {
					return
				}
				if i == f.warmup {
					measureOnce.Do(func() { measureStart = time.Now() })
				}
				s := sample{submitted: time.Now()}
				resp, err := c.SubmitRun(ctx, req)
				if err == nil && resp.Run == nil {
					err = errors.New("no run in the reply")
				}
				if err == nil {
					s.id = resp.Run.ID
					s.state, err = waitForEnd(ctx, c, s.id)
				}
				if err != nil {
					errOnce.Do(func() { benchErr = err; cancel() })
					return
				}
				s.ended = time.Now()
				samples[i] = s
			}
		}()
	}
	wg.Wait()
	if benchErr != nil {
		return fmt.Errorf("bench: %w", benchErr)
	}
	end := time.Now()
	if measureStart.IsZero() {
		measureStart = start
	}
	measured := samples[f.warmup:]
	res := benchResult{Runs: f.runs, Runners: f.runners, Concurrency: f.concurrency, InFlight: f.inFlight, Planes: len(clients)}
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
	res.RunsPerSecond = float64(f.runs) / res.Seconds
	res.LatencyP50Ms, res.LatencyP95Ms, res.LatencyP99Ms = pctMs(lat, 0.50), pctMs(lat, 0.95), pctMs(lat, 0.99)
	res.CreatedToStartMs, res.ClaimToStartMs = pctMs(createdToStart, 0.5), pctMs(claimToStart, 0.5)
	res.PeakRSSMiB = peakRSSMiB()
	if a.json {
		return printJSON(a.stdio.Out, res)
	}
	t := newTable(a.stdio.Out, "RUNS", "RUNNERS×SESSIONS", "IN FLIGHT", "RUNS/S", "P50", "P95", "P99", "CREATED→START P50", "CLAIM→START P50", "FAILED", "PEAK RSS")
	t.row(fmt.Sprint(res.Runs), fmt.Sprintf("%d×%d", res.Runners, res.Concurrency), fmt.Sprint(res.InFlight), fmt.Sprintf("%.1f", res.RunsPerSecond),
		ms(res.LatencyP50Ms), ms(res.LatencyP95Ms), ms(res.LatencyP99Ms), ms(res.CreatedToStartMs), ms(res.ClaimToStartMs),
		fmt.Sprint(res.Failed), fmt.Sprintf("%.0f MiB", res.PeakRSSMiB))
	return t.flush()
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
