package reliability_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// benchResult is the part of `warrant bench --json` the suite reads.
type benchResult struct {
	Runs             int           `json:"runs"`
	Completed        int           `json:"completed"`
	Failed           int           `json:"failed"`
	Runners          int           `json:"runners"`
	Concurrency      int           `json:"concurrency"`
	InFlight         int           `json:"inFlight"`
	Seconds          float64       `json:"seconds"`
	RunsPerSecond    float64       `json:"runsPerSecond"`
	P50              float64       `json:"submitToReceiptP50Ms"`
	P95              float64       `json:"submitToReceiptP95Ms"`
	P99              float64       `json:"submitToReceiptP99Ms"`
	PeakRSSMiB       float64       `json:"peakRssMiB"`
	PlanePeakRSSMiB  float64       `json:"planePeakRssMiB"`
	RunnerPeakRSSMiB float64       `json:"runnerPeakRssMiB"`
	Rate             float64       `json:"rate"`
	Dropped          int           `json:"dropped"`
	Samples          []benchSample `json:"samples"`
}

type benchSample struct {
	Seconds         float64 `json:"seconds"`
	Ended           int     `json:"ended"`
	RunsPerSecond   float64 `json:"runsPerSecond"`
	InFlight        int     `json:"inFlight"`
	PlaneRSSMiB     float64 `json:"planeRssMiB"`
	PlaneGoroutines int     `json:"planeGoroutines"`
	BenchRSSMiB     float64 `json:"benchRssMiB"`
	BenchHeapMiB    float64 `json:"benchHeapMiB"`
	BenchGoroutines int     `json:"benchGoroutines"`
	RunnerRSSMiB    float64 `json:"runnerRssMiB"`
}

// runBench runs `warrant bench --json args…`, echoing its progress lines
// (stderr) to the test log and keeping them in a log file under the suite
// root, and returns its result.
func runBench(t *testing.T, args ...string) benchResult {
	t.Helper()
	dir := suiteDir(t, "bench")
	cmd := exec.Command(warrantBinary(t), append([]string{"bench", "--json"}, args...)...)
	cmd.Env = append(os.Environ(), "WARRANT_CONFIG_DIR="+filepath.Join(dir, "config"), "TMPDIR="+dir)
	var out bytes.Buffer
	cmd.Stdout = &out
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, "bench.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(stderr)
	for sc.Scan() {
		fmt.Fprintln(logf, sc.Text())
		t.Log(sc.Text())
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("warrant bench %s: %v\n%s", strings.Join(args, " "), err, out.Bytes())
	}
	var res benchResult
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		t.Fatalf("bench output: %v\n%s", err, out.Bytes())
	}
	return res
}

// TestBenchSmoke runs `warrant bench` briefly the way the load and soak
// figures are taken, so it keeps working: the plane and runners as child
// processes (their peak RSS measured apart), a steady rate, and samples
// of the plane's and the bench's memory and goroutines.
func TestBenchSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("runs warrant bench")
	}
	res := runBench(t, "--rate", "4", "--duration", "3s", "--warmup", "0", "--runners", "2", "--concurrency", "2",
		"--plane-process", "--runner-processes", "--sample-every", "1s")
	if res.Completed == 0 || res.Failed != 0 || res.PlanePeakRSSMiB <= 0 || res.RunnerPeakRSSMiB <= 0 || res.P50 <= 0 || len(res.Samples) < 2 {
		t.Fatalf("bench result: %+v", res)
	}
	for _, s := range res.Samples {
		if s.PlaneRSSMiB <= 0 || s.PlaneGoroutines <= 0 || s.RunnerRSSMiB <= 0 || s.BenchGoroutines <= 0 || s.BenchHeapMiB <= 0 {
			t.Errorf("a sample without memory or goroutines: %+v", s)
		}
	}
}

// TestLoad (-reliability.load) puts 1,000 runs through one plane process
// and four runner processes, four sessions each, and prints runs/s, the
// submit-to-receipt percentiles and the plane's and a runner's peak RSS.
// Every run must complete.
func TestLoad(t *testing.T) {
	if !*flagLoad {
		t.Skip("on demand: -reliability.load")
	}
	for _, inFlight := range []string{"4", "16"} {
		t.Run("in-flight="+inFlight, func(t *testing.T) {
			res := runBench(t, "--runs", "1000", "--warmup", "20", "--runners", "4", "--concurrency", "4", "--in-flight", inFlight,
				"--plane-process", "--runner-processes")
			t.Logf("LOAD %d runs, 4 runners × 4 sessions, %d in flight: %.1f runs/s, p50 %.0f ms, p95 %.0f ms, p99 %.0f ms, plane peak RSS %.0f MiB, runner peak RSS %.0f MiB, bench %.0f MiB, failed %d",
				res.Runs, res.InFlight, res.RunsPerSecond, res.P50, res.P95, res.P99, res.PlanePeakRSSMiB, res.RunnerPeakRSSMiB, res.PeakRSSMiB, res.Failed)
			if res.Completed != 1000 {
				t.Errorf("%d of 1000 runs completed", res.Completed)
			}
		})
	}
}

// TestSoak (-reliability.soak=30m) submits runs at a steady rate for the
// given time to one plane process and four in-process runners (four
// sessions each), printing memory and goroutines every interval. The
// plane's goroutines and RSS and the runners' goroutines and heap must
// stay flat: the last third of the samples may not exceed the first
// third's highest by more than a margin (goroutines +25, RSS and heap
// +50%), and the last third's lowest — the floor a slow leak raises —
// not by more than a narrower one (goroutines +3, RSS +10%, heap +20%).
// Every run must complete.
func TestSoak(t *testing.T) {
	if *flagSoak <= 0 {
		t.Skip("on demand: -reliability.soak=30m")
	}
	every := max(10*time.Second, (*flagSoak / 30).Round(time.Second))
	res := runBench(t, "--rate", "2", "--duration", flagSoak.String(), "--warmup", "0", "--runners", "4", "--concurrency", "4", "--in-flight", "16",
		"--plane-process", "--sample-every", every.String())
	t.Logf("SOAK %s at %.1f runs/s: %d runs, %d failed, %d dropped, p50 %.0f ms, p95 %.0f ms, p99 %.0f ms, plane peak RSS %.0f MiB, bench peak RSS %.0f MiB",
		*flagSoak, res.Rate, res.Runs, res.Failed, res.Dropped, res.P50, res.P95, res.P99, res.PlanePeakRSSMiB, res.PeakRSSMiB)
	if res.Failed != 0 || res.Completed == 0 {
		t.Errorf("%d runs failed, %d completed", res.Failed, res.Completed)
	}
	n := len(res.Samples)
	if n < 6 {
		t.Fatalf("only %d samples", n)
	}
	first, last := res.Samples[:n/3], res.Samples[n-n/3:]
	type metric struct {
		name  string
		get   func(benchSample) float64
		slack func(float64) float64 // how far a peak may rise
		floor func(float64) float64 // how far the floor may rise
	}
	for _, m := range []metric{
		{"plane goroutines", func(s benchSample) float64 { return float64(s.PlaneGoroutines) }, func(v float64) float64 { return v + 25 }, func(v float64) float64 { return v + 3 }},
		{"plane RSS MiB", func(s benchSample) float64 { return s.PlaneRSSMiB }, func(v float64) float64 { return v * 1.5 }, func(v float64) float64 { return v * 1.1 }},
		{"runner (bench process) goroutines", func(s benchSample) float64 { return float64(s.BenchGoroutines) }, func(v float64) float64 { return v + 25 }, func(v float64) float64 { return v + 3 }},
		{"runner (bench process) heap MiB", func(s benchSample) float64 { return s.BenchHeapMiB }, func(v float64) float64 { return v * 1.5 }, func(v float64) float64 { return v * 1.2 }},
	} {
		hi := func(ss []benchSample) float64 {
			v := 0.0
			for _, s := range ss {
				v = max(v, m.get(s))
			}
			return v
		}
		lo := func(ss []benchSample) float64 {
			v := m.get(ss[0])
			for _, s := range ss {
				v = min(v, m.get(s))
			}
			return v
		}
		h1, h3, l3 := hi(first), hi(last), lo(last)
		t.Logf("SOAK %-36s first third max %7.1f, last third max %7.1f, min %7.1f", m.name, h1, h3, l3)
		if h3 > m.slack(h1) {
			t.Errorf("%s grew: first third max %.1f, last third max %.1f", m.name, h1, h3)
		}
		// A slow leak raises the floor: in the last third even the lowest
		// sample stays above everything the first third saw. (Peaks come
		// and go with the requests in flight; the floor does not.)
		if l3 > m.floor(h1) {
			t.Errorf("%s crept up: every sample of the last third (min %.1f) is above the first third's max %.1f", m.name, l3, h1)
		}
	}
}
