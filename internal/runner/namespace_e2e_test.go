package runner_test

import (
	"context"
	"os"
	"strings"
	"sync"
	"testing"

	"warrant.dev/warrant/internal/runner/sandbox/namespace"
	"warrant.dev/warrant/internal/runner/session"
	"warrant.dev/warrant/internal/testutil"
	"warrant.dev/warrant/protocol"
)

// namespaceSuite is the test under which isolationFor says "namespace".
const namespaceSuite = "TestEndToEndSuiteOnNamespace"

var (
	namespaceProbeOnce sync.Once
	namespaceProbeErr  error
)

// requireNamespaceTier skips the test (fails it under CI) when this host
// cannot run the namespace tier with the warrant binary built for the
// package's tests.
func requireNamespaceTier(t *testing.T) {
	t.Helper()
	namespaceProbeOnce.Do(func() {
		namespaceProbeErr = namespace.Probe(context.Background(), namespace.Options{Executable: warrantBin}).Err()
	})
	if namespaceProbeErr != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("the namespace tier must be available under CI: %v", namespaceProbeErr)
		}
		t.Skipf("namespace tier unavailable on this host: %v", namespaceProbeErr)
	}
}

// namespaceBackend is the namespace tier as `warrant runner start` makes
// it, with opts' limits and egress prefixes.
func namespaceBackend(t *testing.T, opts ...namespace.Options) session.Backend {
	t.Helper()
	requireNamespaceTier(t)
	var o namespace.Options
	if len(opts) > 0 {
		o = opts[0]
	}
	o.Executable = warrantBin
	b, err := namespace.New(o)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestEndToEndSuiteOnNamespace runs the package's end-to-end tests whose
// subject does not depend on the tier again, every run asking for (and
// the runner offering) namespace isolation: the namespace backend must
// behave like the process backend wherever isolation does not require a
// difference. Left out: tests that read pids or marker files the session
// writes to host paths, which a namespace session cannot see; the
// namespace tier's own escape and kill tests replace them.
func TestEndToEndSuiteOnNamespace(t *testing.T) {
	if t.Name() != namespaceSuite {
		t.Fatalf("isolationFor keys on the name %q", namespaceSuite)
	}
	requireNamespaceTier(t)
	suite := []struct {
		name string
		test func(*testing.T)
	}{
		{"MockRunCompletesWithTrustedBundle", TestMockRunCompletesWithTrustedBundle},
		{"FailingAgentYieldsFailedReceiptThatVerifies", TestFailingAgentYieldsFailedReceiptThatVerifies},
		{"NetworkProbeIsBlockedAndRecorded", TestNetworkProbeIsBlockedAndRecorded},
		{"AllowlistedIPIsReachedAndLoopbackNameRefused", TestAllowlistedIPIsReachedAndLoopbackNameRefused},
		{"PiIsACapabilityMismatch", TestPiIsACapabilityMismatch},
		{"MissingWorkspaceBlobIsATransferFailure", TestMissingWorkspaceBlobIsATransferFailure},
		{"SecretIsInjectedAndNeverLeaks", TestSecretIsInjectedAndNeverLeaks},
	}
	for _, c := range suite {
		t.Run(c.name, c.test)
	}
}

// TestChildRunnerRequiringNamespace starts `warrant runner start
// --isolation-tiers namespace` as a child process, as an operator would:
// it probes the tier, offers it, and runs a namespace run with the real
// binary as the session's init and the mock agent inside.
func TestChildRunnerRequiringNamespace(t *testing.T) {
	t.Parallel()
	requireNamespaceTier(t)
	tp := testutil.StartPlane(t)
	child := startChild(t, tp.URL, t.TempDir(), tp.EnrollToken("default"), "--isolation-tiers", "namespace", "--session-memory", "512MiB", "--session-pids", "256")
	req := mockRun("write a note")
	req.Isolation = protocol.IsolationNamespace
	id := submit(t, tp.Admin, req)
	run := waitEnded(t, tp.Admin, id)
	if run.State != protocol.StateCompleted {
		t.Fatalf("run %s %+v\n%s", run.State, run.Failure, child.stderr.String())
	}
	b, _ := verifiedBundle(t, tp, id)
	if b.Receipt.Runner.Isolation != protocol.IsolationNamespace {
		t.Fatalf("receipt isolation %q", b.Receipt.Runner.Isolation)
	}
	if diff := string(artifact(t, tp, b.Events, "diff")); !strings.Contains(diff, "+write a note") {
		t.Fatalf("diff %q", diff)
	}
	log := child.stderr.String()
	if !strings.Contains(log, "namespace isolation tier available") || !strings.Contains(log, "memory_bytes=536870912") || !strings.Contains(log, `tiers="[namespace process]"`) {
		t.Fatalf("runner log:\n%s", log)
	}
}
