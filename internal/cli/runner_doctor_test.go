package cli

import (
	"errors"
	"log/slog"
	"testing"
)

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{
		"1073741824": 1 << 30, "2GiB": 2 << 30, "512MiB": 512 << 20, "64KiB": 64 << 10,
		"2G": 2_000_000_000, "500M": 500_000_000, "100B": 100, " 1 GiB ": 1 << 30,
	} {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "GiB", "-1GiB", "0", "1.5GiB", "2XB", "99999999999TiB"} {
		if n, err := parseSize(bad); err == nil {
			t.Errorf("parseSize(%q) = %d, want an error", bad, n)
		}
	}
}

func TestIsolationFlags(t *testing.T) {
	f := isolationFlags{memory: "256MiB", pids: 64, cpus: 0.5, require: []string{"namespace", "process"}}
	opts, err := f.namespaceOptions("/usr/local/bin/warrant")
	if err != nil {
		t.Fatal(err)
	}
	if opts.Limits.MemoryBytes != 256<<20 || opts.Limits.Pids != 64 || opts.Limits.CPUs != 0.5 || opts.Executable != "/usr/local/bin/warrant" {
		t.Fatalf("%+v", opts)
	}
	for _, f := range []isolationFlags{{require: []string{"vm"}}, {memory: "lots"}} {
		_, err := f.namespaceOptions("/w")
		var ee *exitError
		if !errors.As(err, &ee) || ee.code != ExitUsage {
			t.Errorf("%+v: err %v, want a usage error", f, err)
		}
	}
}

// In a test binary the namespace tier is never probed (the binary cannot
// be the session init), and requiring it fails the start.
func TestRunnerBackendsInATestBinary(t *testing.T) {
	a := &app{ctx: t.Context()}
	bs, err := a.runnerBackends(t.Context(), isolationFlags{}, "/nonexistent/warrant", discardLogger())
	if err != nil || len(bs) != 1 || bs[0].Isolation() != "process" {
		t.Fatalf("backends %v, %v", bs, err)
	}
	if _, err := a.runnerBackends(t.Context(), isolationFlags{require: []string{"namespace"}}, "/nonexistent/warrant", discardLogger()); err == nil {
		t.Fatal("a required namespace tier that is unavailable did not fail the start")
	}
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
