package runner_test

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"warrant.dev/warrant/client"
	"warrant.dev/warrant/internal/plane"
	"warrant.dev/warrant/internal/runner"
	"warrant.dev/warrant/internal/runner/sandbox/process"
	"warrant.dev/warrant/internal/runner/session"
	"warrant.dev/warrant/internal/testutil"
	"warrant.dev/warrant/protocol"
)

// benchPlane is a plane that does not log.
func benchPlane(b *testing.B) *testutil.TestPlane {
	return testutil.StartPlane(b, testutil.WithConfig(func(c *plane.Config) { c.Logger = slog.New(slog.DiscardHandler) }))
}

// timeline records when each run reached each point.
type timeline struct {
	mu                      sync.Mutex
	claimed, started, ended map[string]time.Time
	endedCh                 chan string
}

func newTimeline() *timeline {
	return &timeline{claimed: map[string]time.Time{}, started: map[string]time.Time{}, ended: map[string]time.Time{}, endedCh: make(chan string, 1024)}
}

func (tl *timeline) hooks() runner.Hooks {
	mark := func(m map[string]time.Time) func(string) {
		return func(id string) {
			now := time.Now()
			tl.mu.Lock()
			m[id] = now
			tl.mu.Unlock()
		}
	}
	return runner.Hooks{
		Claimed:        mark(tl.claimed),
		HarnessStarted: mark(tl.started),
		Finished: func(id, status string) {
			mark(tl.ended)(id)
			tl.endedCh <- id
		},
	}
}

// benchRunner starts a warm in-process runner.
func benchRunner(b *testing.B, tp *testutil.TestPlane, concurrency int, tl *timeline) {
	r, err := runner.New(runner.Options{
		PlaneURL: tp.URL, Pool: "default", DataDir: b.TempDir(), WorkDir: benchWorkDir(b), EnrollToken: tp.EnrollToken("default"),
		Concurrency: concurrency, Backends: []session.Backend{process.New(process.Options{})}, WarrantPath: warrantBin,
		Hooks: tl.hooks(), ClaimWait: time.Second,
	})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	b.Cleanup(func() {
		r.Stop()
		<-done
		cancel()
	})
	if _, err := r.Enroll(ctx); err != nil {
		b.Fatal(err)
	}
}

func percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(len(s)-1, int(p*float64(len(s))))]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// BenchmarkRunLatency measures, one run at a time on a warm runner, the
// time from submitting a run (the plane creates it in that request) to the
// harness process starting, and from the claim to the harness starting.
//
//	go test -run '^$' -bench RunLatency -benchtime 100x ./internal/runner/
func BenchmarkRunLatency(b *testing.B) {
	tp := benchPlane(b)
	tl := newTimeline()
	benchRunner(b, tp, 1, tl)
	ws := testutil.UploadWorkspace(b, tp.Admin, map[string]string{"README.md": "hello\n", "src/main.go": "package main\n"})
	req := client.RunRequest{Agent: protocol.AgentSpec{Kind: protocol.AgentCommand}, Prompt: "true", Pool: "default", Workspace: ws}
	var createdToStart, claimToStart []time.Duration
	b.ResetTimer()
	for b.Loop() {
		t0 := time.Now()
		resp, err := tp.Admin.SubmitRun(context.Background(), req)
		if err != nil {
			b.Fatal(err)
		}
		id := resp.Run.ID
		for got := range tl.endedCh {
			if got == id {
				break
			}
		}
		tl.mu.Lock()
		createdToStart = append(createdToStart, tl.started[id].Sub(t0))
		claimToStart = append(claimToStart, tl.started[id].Sub(tl.claimed[id]))
		tl.mu.Unlock()
	}
	b.StopTimer()
	b.ReportMetric(ms(percentile(createdToStart, 0.5)), "created-to-start-p50-ms")
	b.ReportMetric(ms(percentile(createdToStart, 0.95)), "created-to-start-p95-ms")
	b.ReportMetric(ms(percentile(claimToStart, 0.5)), "claim-to-start-p50-ms")
	b.ReportMetric(ms(percentile(claimToStart, 0.95)), "claim-to-start-p95-ms")
}

// BenchmarkThroughput submits 200 `echo hi` runs at once to a warm runner
// at concurrency 1 and 4 and reports runs per second and the
// submit-to-receipt latency.
//
//	go test -run '^$' -bench Throughput -benchtime 1x ./internal/runner/
func BenchmarkThroughput(b *testing.B) {
	const runs = 200
	for _, conc := range []int{1, 4} {
		b.Run(fmt.Sprintf("c=%d", conc), func(b *testing.B) {
			tp := benchPlane(b)
			tl := newTimeline()
			benchRunner(b, tp, conc, tl)
			ws := testutil.UploadWorkspace(b, tp.Admin, map[string]string{"README.md": "hello\n", "src/main.go": "package main\n"})
			req := client.RunRequest{Agent: protocol.AgentSpec{Kind: protocol.AgentCommand}, Prompt: "echo hi", Pool: "default", Workspace: ws}
			var rates []float64
			var lat []time.Duration
			b.ResetTimer()
			for b.Loop() {
				submitted := make(map[string]time.Time, runs)
				var mu sync.Mutex
				start := time.Now()
				var wg sync.WaitGroup
				jobs := make(chan struct{}, runs)
				for range runs {
					jobs <- struct{}{}
				}
				close(jobs)
				for range 8 {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for range jobs {
							t0 := time.Now()
							resp, err := tp.Admin.SubmitRun(context.Background(), req)
							if err != nil {
								b.Error(err)
								return
							}
							mu.Lock()
							submitted[resp.Run.ID] = t0
							mu.Unlock()
						}
					}()
				}
				for done := 0; done < runs; done++ {
					<-tl.endedCh
				}
				elapsed := time.Since(start)
				wg.Wait()
				rates = append(rates, runs/elapsed.Seconds())
				tl.mu.Lock()
				for id, t0 := range submitted {
					lat = append(lat, tl.ended[id].Sub(t0))
				}
				tl.mu.Unlock()
			}
			b.StopTimer()
			slices.Sort(rates)
			b.ReportMetric(rates[len(rates)/2], "runs/s")
			b.ReportMetric(ms(percentile(lat, 0.5)), "submit-to-receipt-p50-ms")
			b.ReportMetric(ms(percentile(lat, 0.95)), "submit-to-receipt-p95-ms")
		})
	}
}

// BenchmarkIdleRSS starts `warrant runner start` as a process, lets it
// enroll and idle in its claim long-poll, and reports its resident memory.
//
//	go test -run '^$' -bench IdleRSS -benchtime 1x ./internal/runner/
func BenchmarkIdleRSS(b *testing.B) {
	tp := benchPlane(b)
	for b.Loop() {
		cmd := exec.Command(warrantBin, "runner", "start", "--plane", tp.URL, "--pool", "default",
			"--data", b.TempDir(), "--enroll-token", tp.EnrollToken("default"))
		cmd.Env = append(os.Environ(), "WARRANT_CONFIG_DIR="+b.TempDir())
		stderr, err := cmd.StderrPipe()
		if err != nil {
			b.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		sc := bufio.NewScanner(stderr)
		for sc.Scan() && !strings.Contains(sc.Text(), "runner claiming") {
		}
		go func() {
			for sc.Scan() {
			}
		}()
		time.Sleep(3 * time.Second) // idle, long-polling
		rss := vmRSS(b, cmd.Process.Pid)
		_ = cmd.Process.Signal(os.Interrupt)
		_ = cmd.Wait()
		b.ReportMetric(float64(rss)/(1<<20), "idle-RSS-MB")
	}
}

func vmRSS(b *testing.B, pid int) int64 {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	b.Fatal("no VmRSS")
	return 0
}

// benchWorkDir is the runner's work directory: $WARRANT_BENCH_DIR
// when set (e.g. a tmpfs, to see what the disk costs), else a temporary
// directory.
func benchWorkDir(b *testing.B) string {
	base := os.Getenv("WARRANT_BENCH_DIR")
	if base == "" {
		return b.TempDir()
	}
	dir, err := os.MkdirTemp(base, "runner-bench-")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}
