package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"warrant.dev/warrant/internal/runner/sandbox/namespace"
	"warrant.dev/warrant/internal/runner/sandbox/process"
	"warrant.dev/warrant/internal/runner/session"
	"warrant.dev/warrant/protocol"
)

// isolationFlags choose and configure a runner's isolation tiers; `runner
// start` and `runner doctor` share them, so doctor answers for the exact
// configuration start would use.
type isolationFlags struct {
	require      []string
	cgroupParent string
	memory       string
	pids         int64
	cpus         float64
	sandboxID    int
}

func (f *isolationFlags) register(fl *pflag.FlagSet) {
	fl.StringSliceVar(&f.require, "isolation-tiers", nil, "isolation tiers the runner must offer (process, namespace); it refuses to start if one is unavailable (default: process, plus namespace when this host supports it)")
	fl.StringVar(&f.cgroupParent, "cgroup-parent", "", "cgroup under which namespace sessions get theirs: relative to the runner's own cgroup, or absolute (default: the runner's own cgroup)")
	fl.StringVar(&f.memory, "session-memory", "", "memory limit of a namespace session, e.g. 512MiB or 2GiB (default 2GiB)")
	fl.Int64Var(&f.pids, "session-pids", 0, "process limit of a namespace session (default 512)")
	fl.Float64Var(&f.cpus, "session-cpus", 0, "CPU limit of a namespace session, in CPUs (default 2)")
	fl.IntVar(&f.sandboxID, "sandbox-id", 0, "host uid and gid a root runner's namespace sessions run as (default 65534, nobody)")
}

func (f *isolationFlags) namespaceOptions(self string) (namespace.Options, error) {
	opts := namespace.Options{
		Executable:   self,
		CgroupParent: f.cgroupParent,
		Limits:       namespace.Limits{Pids: f.pids, CPUs: f.cpus},
		SandboxUID:   f.sandboxID,
		SandboxGID:   f.sandboxID,
	}
	if f.memory != "" {
		n, err := parseSize(f.memory)
		if err != nil {
			return opts, usageError("--session-memory: %v", err)
		}
		opts.Limits.MemoryBytes = n
	}
	for _, t := range f.require {
		if t != protocol.IsolationProcess && t != protocol.IsolationNamespace {
			return opts, usageError("--isolation-tiers: unknown tier %q (want process or namespace)", t)
		}
	}
	return opts, nil
}

// parseSize reads a byte count with an optional binary or decimal unit:
// 1073741824, 1GiB, 512MiB, 2G, 500M.
func parseSize(s string) (int64, error) {
	units := []struct {
		suffix string
		mult   int64
	}{
		{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
		{"K", 1000}, {"M", 1000 * 1000}, {"G", 1000 * 1000 * 1000}, {"T", 1000 * 1000 * 1000 * 1000},
		{"B", 1},
	}
	t := strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range units {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSpace(strings.TrimSuffix(t, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n <= 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("%q is not a positive size like 512MiB or 2GiB", s)
	}
	return n * mult, nil
}

// tierStatus is one tier as doctor reports it.
type tierStatus struct {
	Tier      string              `json:"tier"`
	Available bool                `json:"available"`
	Detail    string              `json:"detail,omitempty"`
	Features  []namespace.Feature `json:"features,omitempty"`
}

// probeNamespace probes the namespace tier. A Go test binary cannot be
// the session init (run with the init's argument it would run its tests
// again, probing again): in tests the tier is reported unavailable, and
// tests that need it start a real warrant binary.
func probeNamespace(ctx context.Context, opts namespace.Options) *namespace.Report {
	if testing.Testing() {
		return &namespace.Report{Features: []namespace.Feature{{
			Name: "warrant executable", Detail: opts.Executable + " is a Go test binary, which cannot be the session init",
		}}}
	}
	return namespace.Probe(ctx, opts)
}

// probeTiers checks every tier: process always works; namespace is probed.
func probeTiers(ctx context.Context, opts namespace.Options) []tierStatus {
	ns := probeNamespace(ctx, opts)
	nsStatus := tierStatus{Tier: protocol.IsolationNamespace, Available: ns.Available, Features: ns.Features}
	if err := ns.Err(); err != nil {
		nsStatus.Detail = err.Error()
	} else {
		nsStatus.Detail = "new user, mount, PID, IPC, UTS and network namespaces; cgroup limits; egress only through the proxy"
	}
	return []tierStatus{
		{Tier: protocol.IsolationProcess, Available: true, Detail: "a child process with a scrubbed environment and the egress proxy in its proxy variables (no kernel isolation)"},
		nsStatus,
	}
}

// runnerBackends builds the session backends `runner start` registers:
// process always, namespace when the probe passes. A tier the operator
// requires (--isolation-tiers) that this host lacks fails the start with
// the probe's reason; one not required is left out, and the log says why.
func (a *app) runnerBackends(ctx context.Context, f isolationFlags, self string, log *slog.Logger) ([]session.Backend, error) {
	opts, err := f.namespaceOptions(self)
	if err != nil {
		return nil, err
	}
	backends := []session.Backend{process.New(process.Options{})}
	report := probeNamespace(ctx, opts)
	if err := report.Err(); err != nil {
		if slices.Contains(f.require, protocol.IsolationNamespace) {
			return nil, fmt.Errorf("the namespace isolation tier is required (--isolation-tiers) but unavailable: %w (see `warrant runner doctor`)", err)
		}
		log.Warn("namespace isolation tier unavailable: not offered to the plane", "reason", err.Error(), "hint", "warrant runner doctor")
		return backends, nil
	}
	nb, err := namespace.New(opts)
	if err != nil {
		return nil, err
	}
	lim := nb.Limits()
	log.Info("namespace isolation tier available", "memory_bytes", lim.MemoryBytes, "pids", lim.Pids, "cpus", lim.CPUs)
	return append(backends, nb), nil
}

func (a *app) runnerDoctorCmd() *cobra.Command {
	var f isolationFlags
	cmd := &cobra.Command{
		Use:   "doctor",
		Short: "Say which isolation tiers this host supports, and why",
		Long: `Check, by trying each one, what every isolation tier needs on this host with
these settings, and print which tiers a runner started here would offer. The
namespace tier needs user, mount, PID, network, IPC and UTS namespaces, the
memory, pids and cpu cgroup controllers (v2 or v1) with a writable cgroup for
sessions, and a trial session must run. Exit status 1 when a tier named in
--isolation-tiers is unavailable.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			self, err := os.Executable()
			if err != nil {
				return fmt.Errorf("find the warrant executable: %w", err)
			}
			opts, err := f.namespaceOptions(self)
			if err != nil {
				return err
			}
			tiers := probeTiers(a.ctx, opts)
			if a.json {
				if err := printJSON(a.stdio.Out, struct {
					Tiers []tierStatus `json:"tiers"`
				}{tiers}); err != nil {
					return err
				}
			} else {
				printTiers(a.stdio.Out, styleFor(a.stdio.Out), tiers)
			}
			var missing []string
			for _, t := range tiers {
				if !t.Available && slices.Contains(f.require, t.Tier) {
					missing = append(missing, t.Tier)
				}
			}
			if len(missing) > 0 {
				return withExit(ExitFailure, errors.New("required isolation tier unavailable: "+strings.Join(missing, ", ")))
			}
			return nil
		},
	}
	f.register(cmd.Flags())
	return cmd
}

func printTiers(w interface{ Write([]byte) (int, error) }, s style, tiers []tierStatus) {
	for _, t := range tiers {
		state := s.green("available")
		if !t.Available {
			state = s.red("unavailable")
		}
		fmt.Fprintf(w, "%s  %s\n", s.bold(fmt.Sprintf("%-9s", t.Tier)), state)
		if len(t.Features) == 0 {
			fmt.Fprintf(w, "    %s\n", t.Detail)
			continue
		}
		tb := newTable(w)
		for _, f := range t.Features {
			mark := s.green("ok")
			switch {
			case strings.HasPrefix(f.Detail, "not tried"):
				mark = s.dim("--")
			case !f.OK:
				mark = s.red("NO")
			}
			tb.row("   ", mark, f.Name, f.Detail)
		}
		_ = tb.flush()
	}
}
