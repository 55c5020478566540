//go:build linux

package namespace

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"warrant.dev/warrant/internal/runner/sandbox/process"
	"warrant.dev/warrant/internal/runner/session"
	"warrant.dev/warrant/protocol"
)

// BenchmarkStartOverhead measures a whole session of `true` (egress proxy,
// cgroups, namespaces, new root, harness, teardown) in the namespace tier
// against the process tier, alternating the two, and reports each one's
// p50 and p90 and the ratio of the p50s. The init is the real warrant
// binary ($WARRANT_BIN, else built here), as a runner would run it.
//
//	go test -run '^$' -bench StartOverhead -benchtime 200x ./internal/runner/sandbox/namespace/
func BenchmarkStartOverhead(b *testing.B) {
	bin := os.Getenv("WARRANT_BIN")
	if bin == "" {
		bin = filepath.Join(b.TempDir(), "warrant")
		out, err := exec.Command("go", "build", "-o", bin, "warrant.dev/warrant/cmd/warrant").CombinedOutput()
		if err != nil {
			b.Skipf("build warrant: %v\n%s", err, out)
		}
	}
	ns, err := New(Options{Executable: bin})
	if err != nil {
		b.Fatal(err)
	}
	if err := Probe(context.Background(), Options{Executable: bin}).Err(); err != nil {
		b.Skip(err)
	}
	proc := process.New(process.Options{})
	c := &protocol.Contract{RunID: "run_bench", Network: protocol.NetworkPolicy{DefaultDeny: true}}
	e := &session.Execution{Kind: protocol.ExecArgv, Cmd: "true", Cwd: ".", Timeout: time.Minute, EgressProxy: true}
	dir := b.TempDir()
	ws := filepath.Join(dir, "ws")
	if err := os.Mkdir(ws, 0o755); err != nil {
		b.Fatal(err)
	}
	once := func(be session.Backend, i int) time.Duration {
		var log lockedBuffer
		start := time.Now()
		res, err := be.Run(context.Background(), &session.Session{
			RunID: "run_bench", Contract: c, Execution: e, Workspace: ws,
			ScratchDir: filepath.Join(dir, "scratch"), Log: &log,
			Record: func(protocol.EventPayload) error { return nil }, KillGrace: time.Second,
		})
		d := time.Since(start)
		if err != nil || res.ExitCode != 0 {
			b.Fatalf("%s: %+v %v %s", be.Isolation(), res, err, log.String())
		}
		return d
	}
	var tp, tn []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		tp = append(tp, once(proc, i))
		tn = append(tn, once(ns, i))
	}
	b.StopTimer()
	pct := func(ds []time.Duration, p float64) float64 {
		s := slices.Clone(ds)
		slices.Sort(s)
		return float64(s[int(float64(len(s)-1)*p)]) / float64(time.Millisecond)
	}
	b.ReportMetric(pct(tp, 0.5), "process-p50-ms")
	b.ReportMetric(pct(tp, 0.9), "process-p90-ms")
	b.ReportMetric(pct(tn, 0.5), "namespace-p50-ms")
	b.ReportMetric(pct(tn, 0.9), "namespace-p90-ms")
	b.ReportMetric(pct(tn, 0.5)/pct(tp, 0.5), "p50-ratio")
}
