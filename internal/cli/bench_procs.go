package cli

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// benchChild is a `warrant plane serve` or `warrant runner start` the
// bench started from its own executable, so its memory is measured apart
// from the bench's.
type benchChild struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	tail *tailBuffer

	mu      sync.Mutex
	peakRSS int64 // bytes, the largest VmHWM seen
}

// tailBuffer keeps the last lines a child wrote, for error messages.
type tailBuffer struct {
	mu    sync.Mutex
	lines []string
}

func (t *tailBuffer) add(line string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.lines = append(t.lines, line)
	if len(t.lines) > 20 {
		t.lines = t.lines[len(t.lines)-20:]
	}
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.Join(t.lines, "\n")
}

// startBenchChild starts self with args. onLine sees each stderr line.
func startBenchChild(name, self string, env []string, onLine func(string), args ...string) (*benchChild, error) {
	cmd := exec.Command(self, args...)
	cmd.Env = env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // a terminal's Ctrl-C reaches the bench only
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stdout = io.Discard
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	c := &benchChild{name: name, cmd: cmd, done: make(chan struct{}), tail: &tailBuffer{}}
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			c.tail.add(sc.Text())
			if onLine != nil {
				onLine(sc.Text())
			}
		}
		_, _ = io.Copy(io.Discard, stderr)
		_ = cmd.Wait()
		close(c.done)
	}()
	return c, nil
}

// stop sends SIGTERM and waits up to grace, then kills.
func (c *benchChild) stop(grace time.Duration) {
	c.terminate()
	c.wait(grace)
}

// terminate asks the process to stop (SIGTERM), noting its peak memory
// first.
func (c *benchChild) terminate() {
	select {
	case <-c.done:
		return
	default:
	}
	c.sample() // the peak, before the process is gone
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
}

// wait waits up to grace for the process to exit, then kills it.
func (c *benchChild) wait(grace time.Duration) {
	select {
	case <-c.done:
	case <-time.After(grace):
		_ = c.cmd.Process.Kill()
		<-c.done
	}
}

// procMemory is what /proc/PID/status says about a process's memory.
type procMemory struct {
	RSS, PeakRSS int64 // bytes (VmRSS, VmHWM)
	Threads      int
}

func readProcMemory(pid string) (procMemory, error) {
	data, err := os.ReadFile(filepath.Join("/proc", pid, "status"))
	if err != nil {
		return procMemory{}, err
	}
	var m procMemory
	for _, line := range strings.Split(string(data), "\n") {
		key, val, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		fields := strings.Fields(val)
		if len(fields) == 0 {
			continue
		}
		n, err := strconv.ParseInt(fields[0], 10, 64)
		if err != nil {
			continue
		}
		switch key {
		case "VmRSS":
			m.RSS = n << 10
		case "VmHWM":
			m.PeakRSS = n << 10
		case "Threads":
			m.Threads = int(n)
		}
	}
	return m, nil
}

// sample reads the child's memory and keeps its peak.
func (c *benchChild) sample() procMemory {
	m, err := readProcMemory(strconv.Itoa(c.cmd.Process.Pid))
	if err != nil {
		return procMemory{}
	}
	c.mu.Lock()
	c.peakRSS = max(c.peakRSS, m.PeakRSS)
	c.mu.Unlock()
	return m
}

func (c *benchChild) peak() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.peakRSS
}

// startBenchPlane starts `warrant plane serve` on a free loopback port
// with its state in dir and returns it, its URL and its admin token.
func startBenchPlane(ctx context.Context, self, dir string, env []string) (*benchChild, string, string, error) {
	urlc := make(chan string, 1)
	c, err := startBenchChild("plane", self, env, func(line string) {
		if rest, ok := strings.CutPrefix(line, "warrant plane serving on "); ok {
			select {
			case urlc <- strings.TrimSpace(rest):
			default:
			}
		}
	}, "plane", "serve", "--data", dir, "--listen", "127.0.0.1:0", "--log-level", "error",
		"--rate-limit", "1000000", "--rate-burst", "1000000")
	if err != nil {
		return nil, "", "", err
	}
	var url string
	select {
	case url = <-urlc:
	case <-c.done:
		return nil, "", "", fmt.Errorf("the plane exited:\n%s", c.tail)
	case <-time.After(60 * time.Second):
		c.stop(time.Second)
		return nil, "", "", fmt.Errorf("the plane did not start within 60s:\n%s", c.tail)
	case <-ctx.Done():
		c.stop(time.Second)
		return nil, "", "", ctx.Err()
	}
	tok, err := os.ReadFile(filepath.Join(dir, "admin.token"))
	if err != nil {
		c.stop(5 * time.Second)
		return nil, "", "", fmt.Errorf("the plane's admin token: %w", err)
	}
	return c, url, strings.TrimSpace(string(tok)), nil
}

// planeGoroutines reads go_goroutines from a plane's /metrics.
func planeGoroutines(ctx context.Context, baseURL string) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(baseURL, "/")+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "go_goroutines "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			return int(f), err
		}
	}
	return 0, errors.New("no go_goroutines in /metrics")
}

// benchSample is one reading of the processes' memory and goroutines.
type benchSample struct {
	Seconds         float64 `json:"seconds"`
	Ended           int     `json:"ended"` // runs ended so far
	RunsPerSecond   float64 `json:"runsPerSecond"`
	IntervalP50Ms   float64 `json:"intervalP50Ms,omitempty"`
	IntervalP95Ms   float64 `json:"intervalP95Ms,omitempty"`
	InFlight        int     `json:"inFlight"`
	PlaneRSSMiB     float64 `json:"planeRssMiB,omitempty"`
	PlaneGoroutines int     `json:"planeGoroutines,omitempty"`
	PlaneThreads    int     `json:"planeThreads,omitempty"`
	BenchRSSMiB     float64 `json:"benchRssMiB"`     // this process: the driver and any in-process plane and runners
	BenchHeapMiB    float64 `json:"benchHeapMiB"`    // its Go heap in use
	BenchGoroutines int     `json:"benchGoroutines"` // its goroutines
	RunnerRSSMiB    float64 `json:"runnerRssMiB,omitempty"`
	RunnerThreads   int     `json:"runnerThreads,omitempty"`
}

// benchSampler reads memory and goroutines of the bench process, a child
// plane and child runners.
type benchSampler struct {
	start    time.Time
	plane    *benchChild
	planeURL string
	runners  []*benchChild
}

func (s *benchSampler) sample(ctx context.Context) benchSample {
	out := benchSample{Seconds: time.Since(s.start).Seconds()}
	if m, err := readProcMemory("self"); err == nil {
		out.BenchRSSMiB = mib(m.RSS)
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	out.BenchHeapMiB = mib(int64(ms.HeapInuse))
	out.BenchGoroutines = runtime.NumGoroutine()
	if s.plane != nil {
		m := s.plane.sample()
		out.PlaneRSSMiB, out.PlaneThreads = mib(m.RSS), m.Threads
		if n, err := planeGoroutines(ctx, s.planeURL); err == nil {
			out.PlaneGoroutines = n
		}
	}
	for _, r := range s.runners {
		m := r.sample()
		out.RunnerRSSMiB += mib(m.RSS)
		out.RunnerThreads += m.Threads
	}
	return out
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }
