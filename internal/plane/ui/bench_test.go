package ui_test

import (
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"warrant.dev/warrant/client"
	"warrant.dev/warrant/internal/plane"
	"warrant.dev/warrant/internal/testutil"
	"warrant.dev/warrant/protocol"
)

// BenchmarkPages measures the server side of the UI's main pages over
// loopback HTTP, each page read through the in-memory API as the
// signed-in admin: the run list (25 rows) and a completed run's receipt
// page (300 events, a 1,000-line diff, bundle verification). It reports
// p50 and p95 per page view.
func BenchmarkPages(b *testing.B) {
	tp := testutil.StartPlane(b, testutil.WithConfig(func(c *plane.Config) { c.Logger = slog.New(slog.DiscardHandler) }))
	rn := tp.EnrollRunner("local")
	ws := testutil.UploadWorkspace(b, tp.Admin, map[string]string{"a.txt": "a\n"})
	for i := 0; i < 30; i++ {
		if _, err := tp.Admin.SubmitRun(bg, client.RunRequest{Agent: protocol.AgentSpec{Kind: protocol.AgentMock}, Prompt: "task " + strconv.Itoa(i), Pool: "local", Workspace: ws}); err != nil {
			b.Fatal(err)
		}
	}
	// A completed run with a diff and 300 events.
	var diff strings.Builder
	diff.WriteString("diff --git a/big.txt b/big.txt\nnew file mode 100644\n--- /dev/null\n+++ b/big.txt\n@@ -0,0 +1,1000 @@\n")
	for i := 0; i < 1000; i++ {
		diff.WriteString("+line " + strconv.Itoa(i) + " of a generated file\n")
	}
	cl := rn.MustClaim(b)
	h, err := cl.Client.PutBlob(bg, []byte(diff.String()))
	if err != nil {
		b.Fatal(err)
	}
	var evs []protocol.EventPayload
	for i := 0; i < 290; i++ {
		evs = append(evs, protocol.NetworkConnected{Host: "host" + strconv.Itoa(i%7) + ".example.com", Decision: protocol.DecisionBlocked})
	}
	evs = append(evs, protocol.ArtifactCreated{Kind: "diff", Hash: h})
	cl.Append(b, evs...)
	cl.Append(b, protocol.RunCompleted{})
	if _, err := cl.Client.Complete(bg, cl.RunID, cl.Receipt(b, h)); err != nil {
		b.Fatal(err)
	}
	w := newWeb(b, tp.URL)
	w.signIn(tp.AdminToken)

	for _, page := range []struct{ name, path string }{{"list", "/ui/"}, {"receipt", "/ui/runs/" + cl.RunID}} {
		b.Run(page.name, func(b *testing.B) {
			var lat []time.Duration
			for b.Loop() {
				start := time.Now()
				resp, err := w.http.Get(tp.URL + page.path)
				if err != nil {
					b.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					b.Fatalf("%s: %d", page.path, resp.StatusCode)
				}
				lat = append(lat, time.Since(start))
			}
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(lat[len(lat)*95/100].Microseconds())/1000, "p95-ms")
		})
	}
}
