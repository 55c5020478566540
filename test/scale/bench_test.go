package scale_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"warrant.dev/warrant/internal/plane"
	"warrant.dev/warrant/internal/store/postgres/pgtest"
)

var (
	benchTable    = flag.Bool("scale.bench", false, "run TestBenchTable: runs/s and submit-to-receipt latency of PostgreSQL ×1, ×3 and SQLite ×1")
	benchRuns     = flag.Int("scale.bench-runs", 300, "measured runs per configuration and round")
	benchRunners  = flag.Int("scale.bench-runners", 6, "runners (in the bench process, spread over the planes)")
	benchSessions = flag.Int("scale.bench-sessions", 2, "sessions per runner")
	benchRounds   = flag.Int("scale.bench-rounds", 3, "rounds; each round runs every configuration once, in turn")
	benchInFlight = flag.Int("scale.bench-inflight", 0, "runs submitted and not yet ended, at most (0: warrant bench's default, runners × sessions × 2)")
)

// benchResult is the part of `warrant bench --json` the table shows.
type benchResult struct {
	Runs          int     `json:"runs"`
	Failed        int     `json:"failed"`
	Seconds       float64 `json:"seconds"`
	RunsPerSecond float64 `json:"runsPerSecond"`
	P50           float64 `json:"submitToReceiptP50Ms"`
	P95           float64 `json:"submitToReceiptP95Ms"`
	P99           float64 `json:"submitToReceiptP99Ms"`
}

// TestBenchTable measures end-to-end throughput and latency on this
// machine with the real binary: `warrant bench` (its runners in its own
// process, spread round-robin over the planes; runs submitted round-robin
// and followed on the submitting plane's event stream) against one
// PostgreSQL replica, three PostgreSQL replicas, and one SQLite plane, each
// `warrant plane serve` a process of its own. Configurations alternate
// within each round so a change in the machine's load hits them alike;
// the table shows every round and the median. Run:
//
//	go test ./test/scale -run TestBenchTable -scale.bench -v -timeout 30m
//
// and, for the latency of one run at a time (no queueing):
//
//	go test ./test/scale -run TestBenchTable -scale.bench -v -timeout 30m \
//	    -scale.bench-runners 1 -scale.bench-sessions 1 -scale.bench-inflight 1 -scale.bench-runs 100
func TestBenchTable(t *testing.T) {
	if !*benchTable {
		t.Skip("a benchmark: run with -scale.bench")
	}
	bin := warrantBinary(t)
	type config struct {
		name   string
		planes int
		pg     bool
	}
	configs := []config{{"PostgreSQL ×1", 1, true}, {"PostgreSQL ×3", 3, true}, {"SQLite ×1", 1, false}}
	results := map[string][]benchResult{}
	load0 := loadAvg()
	for round := range *benchRounds {
		for _, c := range configs {
			r := benchOnce(t, bin, c.planes, c.pg)
			t.Logf("round %d %-14s %6.1f runs/s  p50 %7.1f ms  p95 %7.1f ms  p99 %7.1f ms  failed %d", round+1, c.name, r.RunsPerSecond, r.P50, r.P95, r.P99, r.Failed)
			results[c.name] = append(results[c.name], r)
		}
	}
	var b strings.Builder
	inFlight := fmt.Sprint(*benchInFlight)
	if *benchInFlight <= 0 {
		inFlight = fmt.Sprint(*benchRunners * *benchSessions * 2)
	}
	fmt.Fprintf(&b, "\n%d runs × %d rounds per configuration; %d runners × %d sessions, at most %s runs in flight; load average before %s, after %s\n",
		*benchRuns, *benchRounds, *benchRunners, *benchSessions, inFlight, load0, loadAvg())
	fmt.Fprintf(&b, "| store | planes | runs/s (median) | p95 submit→receipt (median) | p50 (median) | runs/s per round | p95 per round |\n|---|---|---|---|---|---|---|\n")
	for _, c := range configs {
		rs := results[c.name]
		var rps, p95, p50 []float64
		for _, r := range rs {
			rps, p95, p50 = append(rps, r.RunsPerSecond), append(p95, r.P95), append(p50, r.P50)
		}
		store := "SQLite"
		if c.pg {
			store = "PostgreSQL"
		}
		fmt.Fprintf(&b, "| %s | %d | %.1f | %.0f ms | %.0f ms | %s | %s |\n", store, c.planes, median(rps), median(p95), median(p50), join(rps, "%.1f"), join(p95, "%.0f"))
	}
	t.Log(b.String())
}

// benchOnce starts the planes of one configuration, runs `warrant bench`
// against them and stops them.
func benchOnce(t *testing.T, bin string, planes int, pg bool) benchResult {
	var res benchResult
	t.Run(fmt.Sprintf("planes=%d,pg=%v", planes, pg), func(t *testing.T) {
		root := t.TempDir()
		keyFile, masterB64, _ := sharedKeys(t, root)
		env := append(os.Environ(), plane.MasterKeyEnv+"="+masterB64, "WARRANT_CONFIG_DIR="+filepath.Join(root, "config"))
		common := []string{"--key", keyFile, "--listen", "127.0.0.1:0", "--log-level", "error", "--rate-limit", "1000000", "--rate-burst", "1000000"}
		if pg {
			common = append(common, "--store", pgtest.Schema(t))
		}
		var urls []string
		for i := range planes {
			p := startProc(t, fmt.Sprint("plane ", i), bin, env, true, append([]string{"plane", "serve", "--data", filepath.Join(root, fmt.Sprint("plane", i))}, common...)...)
			urls = append(urls, p.url)
		}
		token := readToken(t, filepath.Join(root, "plane0", plane.AdminTokenFile))
		cmd := exec.Command(bin, "bench", "--json", "--runs", fmt.Sprint(*benchRuns), "--warmup", "20", "--pool", "default",
			"--plane-urls", strings.Join(urls, ","), "--bench-token", token,
			"--runners", fmt.Sprint(*benchRunners), "--concurrency", fmt.Sprint(*benchSessions), "--in-flight", fmt.Sprint(*benchInFlight))
		cmd.Env = env
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("warrant bench: %v\n%s", err, stderr.String())
		}
		if err := json.Unmarshal(out, &res); err != nil {
			t.Fatalf("bench output %q: %v", out, err)
		}
		if res.Failed > 0 {
			t.Errorf("%d runs failed", res.Failed)
		}
	})
	return res
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	return s[len(s)/2]
}

func join(v []float64, format string) string {
	parts := make([]string, len(v))
	for i, x := range v {
		parts[i] = fmt.Sprintf(format, x)
	}
	return strings.Join(parts, ", ")
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}
