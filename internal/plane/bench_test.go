package plane_test

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"testing"
	"time"

	"warrant.dev/warrant/client"
	"warrant.dev/warrant/internal/plane"
	"warrant.dev/warrant/internal/testutil"
	"warrant.dev/warrant/protocol"
)

// quiet drops the plane's logs: a benchmark prints every b.Log line.
var quiet = testutil.WithConfig(func(c *plane.Config) { c.Logger = slog.New(slog.DiscardHandler) })

func percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(p * float64(len(s)-1))
	return s[i]
}

// BenchmarkClaimLatency measures, per run, the time from the start of its
// submission to the claim arriving at a runner already waiting in a long
// poll (submit + policy + contract signing + commit + wakeup + claim).
// It reports p50 and p95.
func BenchmarkClaimLatency(b *testing.B) {
	tp := testutil.StartPlane(b, quiet, testutil.WithLeases(time.Hour, 10*time.Minute))
	req, _ := tp.NewPrincipal(client.RoleRequester)
	r := basicRequestB(b, req)
	rn := tp.EnrollRunner("default")
	claims := make(chan time.Time, 1)
	stop := make(chan struct{})
	go func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			c, err := rn.Client.Claim(bg, client.ClaimRequest{Pool: "default", Tiers: []string{"process"}, WaitSeconds: 5})
			if err != nil {
				return
			}
			if c != nil {
				claims <- time.Now()
			}
		}
	}()
	time.Sleep(50 * time.Millisecond)
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		if _, err := req.SubmitRun(bg, r); err != nil {
			b.Fatal(err)
		}
		got := <-claims
		lat = append(lat, got.Sub(start))
	}
	b.StopTimer()
	close(stop)
	b.ReportMetric(float64(percentile(lat, 0.50).Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(percentile(lat, 0.95).Microseconds())/1000, "p95-ms")
}

// BenchmarkSubmit measures run submissions (validation, blob check, policy,
// contract signing, commit) from 8 concurrent clients.
func BenchmarkSubmit(b *testing.B) {
	tp := testutil.StartPlane(b, quiet)
	req, _ := tp.NewPrincipal(client.RoleRequester)
	r := basicRequestB(b, req)
	b.SetParallelism(4) // 4 × GOMAXPROCS clients
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := req.SubmitRun(bg, r); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "runs/s")
}

func basicRequestB(b *testing.B, c *client.Client) client.RunRequest {
	ws := testutil.UploadWorkspace(b, c, map[string]string{"README.md": "# hello\n", "src/app.go": "package app\n"})
	return client.RunRequest{Agent: protocol.AgentSpec{Kind: protocol.AgentMock}, Prompt: "bench", Pool: "default", Workspace: ws}
}

// BenchmarkSubmitLargeWorkspace submits runs whose snapshot names 20,000
// files (already uploaded): the blob check, the blob references and the
// contract for a large repository.
func BenchmarkSubmitLargeWorkspace(b *testing.B) {
	tp := testutil.StartPlane(b, quiet)
	req, _ := tp.NewPrincipal(client.RoleRequester)
	const files = 20000
	var ups []client.BlobUpload
	snap := protocol.Snapshot{}
	for i := range files {
		data := []byte(fmt.Sprintf("file %d\n", i))
		h := protocol.HashBytes(data)
		ups = append(ups, client.BlobUpload{Hash: h, Size: int64(len(data)), Open: func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil }})
		snap.Entries = append(snap.Entries, protocol.SnapshotEntry{Path: fmt.Sprintf("src/f%06d.txt", i), Mode: "100644", Hash: h, Size: int64(len(data))})
	}
	if _, err := req.PutBlobs(bg, ups); err != nil {
		b.Fatal(err)
	}
	data, _ := snap.Encode()
	sh, err := req.PutBlob(bg, data)
	if err != nil {
		b.Fatal(err)
	}
	r := client.RunRequest{Agent: protocol.AgentSpec{Kind: protocol.AgentMock}, Prompt: "bench", Pool: "default", Workspace: protocol.Manifest{
		Version: protocol.VersionManifest, BaseRef: "0000000000000000000000000000000000000000", BundleHash: sh,
		UntrackedFiles: []protocol.ManifestFile{}, DeniedPatterns: []string{}, DeniedPaths: []string{}, Format: protocol.SnapshotVersion}}
	b.ResetTimer()
	for range b.N {
		if _, err := req.SubmitRun(bg, r); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRunLifecycle takes runs through the plane one after another
// with the requests a runner makes for an `echo hi` run of a three-file
// workspace: submit, claim, heartbeat, the workspace's blobs, the events in
// the batches a runner posts them, the session log upload and the receipt.
// Its CPU profile (-cpuprofile) is the plane's (and the client's) cost per
// run.
func BenchmarkRunLifecycle(b *testing.B) {
	tp := testutil.StartPlane(b, quiet, testutil.WithLeases(time.Hour, 10*time.Minute))
	req, _ := tp.NewPrincipal(client.RoleRequester)
	ws := testutil.UploadWorkspace(b, req, map[string]string{"README.md": "# hello\n", "src/app.go": "package app\n", "NOTES.md": "# notes\n"})
	r := client.RunRequest{Agent: protocol.AgentSpec{Kind: protocol.AgentMock}, Prompt: "bench", Pool: "default", Workspace: ws}
	rn := tp.EnrollRunner("default")
	b.ResetTimer()
	cpu0 := cpuTime()
	for range b.N {
		lifecycle(b, req, rn, r)
	}
	b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/1000/float64(b.N), "cpu-ms/op")
}

func lifecycle(b *testing.B, req *client.Client, rn *testutil.Runner, r client.RunRequest) {
	if _, err := req.SubmitRun(bg, r); err != nil {
		b.Fatal(err)
	}
	c := rn.MustClaim(b)
	if _, err := c.Client.Heartbeat(bg, c.RunID, client.HeartbeatRequest{Phase: client.PhaseProvisioning}); err != nil {
		b.Fatal(err)
	}
	snapRC, err := c.Client.GetBlob(bg, c.Contract.Workspace.BundleHash)
	if err != nil {
		b.Fatal(err)
	}
	data, _ := io.ReadAll(snapRC)
	snapRC.Close()
	snap, err := protocol.ParseSnapshot(data)
	if err != nil {
		b.Fatal(err)
	}
	for _, e := range snap.Entries {
		rc, err := c.Client.GetBlob(bg, e.Hash)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, rc)
		rc.Close()
	}
	mh, _ := c.Contract.ManifestHash()
	c.Append(b, protocol.WorkspaceMaterialized{ManifestHash: mh})
	if _, err := c.Client.Heartbeat(bg, c.RunID, client.HeartbeatRequest{Phase: client.PhaseRunning}); err != nil {
		b.Fatal(err)
	}
	c.Append(b, protocol.CommandExecuted{ArgvHash: mh, ExitCode: 0})
	log := []byte("hi\n")
	lh := protocol.HashBytes(log)
	if _, err := c.Client.PutBlobs(bg, []client.BlobUpload{{Hash: lh, Size: int64(len(log)), Open: func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(log)), nil }}}); err != nil {
		b.Fatal(err)
	}
	c.Append(b, protocol.ArtifactCreated{Kind: "log", Hash: lh}, protocol.BoundaryCrossed{Direction: "out", ContentHash: lh, DataClass: "session-log"})
	c.Append(b, protocol.RunCompleted{})
	if _, err := c.Client.Complete(bg, c.RunID, c.Receipt(b, "", lh)); err != nil {
		b.Fatal(err)
	}
}
