package plane_test

import (
	"bytes"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"warrant.dev/warrant/client"
	"warrant.dev/warrant/internal/plane"
	"warrant.dev/warrant/internal/testutil"
	"warrant.dev/warrant/protocol"
)

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) Bytes() []byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	return bytes.Clone(l.b.Bytes())
}

// recorder keeps every response body, apart from claim replies (the one
// place a secret value may travel, to the runner holding the claim).
type recorder struct {
	mu     sync.Mutex
	bodies bytes.Buffer
	claims bytes.Buffer
}

func (rec *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		return resp, err
	}
	data, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	rec.mu.Lock()
	if req.URL.Path == "/v1/claims" {
		rec.claims.Write(data)
	} else {
		rec.bodies.Write(data)
	}
	for k, v := range resp.Header {
		rec.bodies.WriteString(k + ": " + strings.Join(v, ",") + "\n")
	}
	rec.mu.Unlock()
	resp.Body = io.NopCloser(bytes.NewReader(data))
	return resp, nil
}

// TestSecretValueNeverLeaks runs a run that is released a secret and then
// scans the database files, the blob store, the plane's logs, the receipt,
// the bundle, the export and every API response except the claim: the
// value is nowhere.
func TestSecretValueNeverLeaks(t *testing.T) {
	logs := &lockedBuffer{}
	rec := &recorder{}
	tp := testutil.StartPlane(t, testutil.WithTransport(rec), testutil.WithConfig(func(c *plane.Config) {
		c.Logger = slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}))
	const value = "sv-5f1c0de-DO-NOT-LEAK-93ab"
	admin := tp.Admin
	if _, err := admin.PutSecret(bg, "API_KEY", value); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.PutPolicy(bg, secretPolicy()); err != nil {
		t.Fatal(err)
	}
	req, _ := tp.NewPrincipal(client.RoleRequester)
	r := basicRequest(t, req)
	r.Secrets = []string{"API_KEY"}
	run := submit(t, req, r)
	if _, err := req.SubmitRun(bg, client.RunRequest{Agent: r.Agent, Prompt: "dry", Pool: "default", Workspace: r.Workspace, Secrets: r.Secrets, DryRun: true}); err != nil {
		t.Fatal(err)
	}
	claimed := tp.EnrollRunner("default").MustClaim(t)
	if len(claimed.Secrets) != 1 || claimed.Secrets[0].Value != value {
		t.Fatalf("claim released %+v", claimed.Secrets)
	}
	if _, err := claimed.Client.Heartbeat(bg, run.ID, client.HeartbeatRequest{Phase: client.PhaseRunning}); err != nil {
		t.Fatal(err)
	}
	log := "redacted session log: [REDACTED:API_KEY]\n"
	logHash, err := claimed.Client.PutBlob(bg, []byte(log))
	if err != nil {
		t.Fatal(err)
	}
	claimed.Append(t, protocol.ArtifactCreated{Kind: "log", Hash: logHash})
	receipt := claimed.Finish(t, protocol.RunCompleted{})
	if _, _, err := req.Bundle(bg, run.ID); err != nil {
		t.Fatal(err)
	}
	for _, f := range []func() error{
		func() error { _, err := req.GetRun(bg, run.ID); return err },
		func() error { _, err := req.Events(bg, run.ID, -1); return err },
		func() error { _, err := admin.ListSecrets(bg); return err },
		func() error { _, err := admin.ListRuns(bg, client.ListRunsOptions{}); return err },
		func() error {
			return req.StreamEvents(bg, run.ID, -1, func(client.StreamMessage) error { return nil })
		},
		func() error {
			rc, err := admin.Export(bg, time.Time{})
			if err == nil {
				_, _ = io.Copy(io.Discard, rc)
				rc.Close()
			}
			return err
		},
		func() error {
			rc, err := admin.GetBlob(bg, logHash)
			if err == nil {
				_, _ = io.Copy(io.Discard, rc)
				rc.Close()
			}
			return err
		},
	} {
		if err := f(); err != nil {
			t.Fatal(err)
		}
	}
	receiptJSON, _ := receipt.MarshalJSON()

	// Positive controls: the scan sees what it should.
	if !bytes.Contains(rec.claims.Bytes(), []byte(value)) {
		t.Fatal("the recorder missed the claim reply")
	}
	places := map[string][]byte{
		"API responses": rec.bodies.Bytes(),
		"plane logs":    logs.Bytes(),
		"receipt":       receiptJSON,
	}
	if !bytes.Contains(places["API responses"], []byte(run.ID)) || !bytes.Contains(places["plane logs"], []byte("secret released")) {
		t.Fatal("the scan does not see the responses or logs")
	}
	err = filepath.WalkDir(tp.DataDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		places[path] = data
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var dbSeen bool
	for name, data := range places {
		if bytes.Contains(data, []byte(value)) {
			t.Errorf("the secret value appears in %s", name)
		}
		if strings.HasSuffix(name, "plane.db-wal") || strings.HasSuffix(name, "plane.db") {
			dbSeen = dbSeen || bytes.Contains(data, []byte("API_KEY"))
		}
	}
	if !dbSeen {
		t.Fatal("the scan does not see the database (the secret's name is not in it)")
	}
	t.Logf("scanned %d places", len(places))
}
