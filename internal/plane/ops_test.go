package plane_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"warrant.dev/warrant/client"
	"warrant.dev/warrant/internal/plane"
	"warrant.dev/warrant/internal/store/blobfs"
	"warrant.dev/warrant/internal/store/sqlite"
	"warrant.dev/warrant/internal/testutil"
	"warrant.dev/warrant/protocol"
)

func get(t *testing.T, url string) (int, string, http.Header) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

// TestOperations: health, readiness (and draining), metrics.
func TestOperations(t *testing.T) {
	tp := testutil.StartPlane(t)
	if code, body, h := get(t, tp.URL+"/healthz"); code != 200 || !strings.Contains(body, "ok") || h.Get("X-Request-Id") == "" {
		t.Fatalf("healthz %d %s", code, body)
	}
	if code, _, _ := get(t, tp.URL+"/readyz"); code != 200 {
		t.Fatalf("readyz %d", code)
	}
	req, _ := tp.NewPrincipal(client.RoleRequester)
	submit(t, req, basicRequest(t, req))
	submit(t, req, basicRequest(t, req))
	tp.EnrollRunner("default").MustClaim(t)
	code, body, _ := get(t, tp.URL+"/metrics")
	if code != 200 {
		t.Fatalf("metrics %d", code)
	}
	for _, want := range []string{
		`warrant_runs{state="created"} 1`,
		`warrant_runs{state="claimed"} 1`,
		`warrant_claim_latency_seconds_count 1`,
		`warrant_http_request_duration_seconds_count{code="201",route="POST /v1/runs"} 2`,
		`warrant_runs_submitted_total{decision="allow"} 2`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	tp.Plane.Drain()
	if code, body, _ := get(t, tp.URL+"/readyz"); code != 503 || !strings.Contains(body, client.CodeUnavailable) {
		t.Fatalf("readyz while draining: %d %s", code, body)
	}
}

// TestRateLimit: a principal over its rate gets 429 with Retry-After;
// others are unaffected.
func TestRateLimit(t *testing.T) {
	tp := testutil.StartPlane(t, testutil.WithConfig(func(c *plane.Config) { c.RateLimit = 0.5; c.RateBurst = 3 }))
	created, err := tp.Plane.CreatePrincipal(bg, client.CreatePrincipalRequest{Name: "busy", Role: client.RoleAuditor})
	if err != nil {
		t.Fatal(err)
	}
	busy := tp.Client(created.Token.Secret)
	calm, _ := tp.NewPrincipal(client.RoleAuditor)
	for i := range 3 {
		if _, err := busy.WhoAmI(bg); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
	}
	_, err = busy.WhoAmI(bg)
	mustCode(t, err, client.CodeRateLimited)
	if !client.IsTransient(err) {
		t.Fatal("rate_limited is not retryable")
	}
	if _, err := calm.WhoAmI(bg); err != nil {
		t.Fatalf("another principal was throttled: %v", err)
	}
	r, _ := http.NewRequest("GET", tp.URL+"/v1/whoami", nil)
	r.Header.Set("Authorization", "Bearer "+created.Token.Secret)
	resp, err := http.DefaultClient.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 429 || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("status %d, Retry-After %q", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
}

// TestEventStreamLive: a watcher that connects before the run is claimed
// sees every state change and event as it happens, in order, then the
// end; a resumed stream starts after the given seq.
func TestEventStreamLive(t *testing.T) {
	testutil.CheckGoroutines(t)
	tp := testutil.StartPlane(t)
	req, _ := tp.NewPrincipal(client.RoleRequester)
	run := submit(t, req, basicRequest(t, req))
	msgs := make(chan client.StreamMessage, 100)
	errc := make(chan error, 1)
	go func() {
		errc <- req.StreamEvents(bg, run.ID, -1, func(m client.StreamMessage) error { msgs <- m; return nil })
		close(msgs)
	}()
	next := func() client.StreamMessage {
		select {
		case m := <-msgs:
			return m
		case <-time.After(10 * time.Second):
			t.Fatal("stream stalled")
			return client.StreamMessage{}
		}
	}
	for _, want := range []string{"event:0", "event:1", "state:created"} {
		if got := describe(next()); got != want {
			t.Fatalf("got %s, want %s", got, want)
		}
	}
	cl := tp.EnrollRunner("default").MustClaim(t)
	for _, want := range []string{"event:2", "state:claimed"} {
		if got := describe(next()); got != want {
			t.Fatalf("got %s, want %s", got, want)
		}
	}
	if _, err := cl.Client.Heartbeat(bg, run.ID, client.HeartbeatRequest{Phase: client.PhaseRunning}); err != nil {
		t.Fatal(err)
	}
	if got := describe(next()); got != "state:running" {
		t.Fatalf("got %s", got)
	}
	cl.Append(t, protocol.FileChanged{Path: "a.txt", ContentHash: protocol.HashBytes([]byte("a"))})
	if got := describe(next()); got != "event:3" {
		t.Fatalf("got %s", got)
	}
	cl.Finish(t, protocol.RunCompleted{})
	var rest []string
	for m := range msgs {
		rest = append(rest, describe(m))
	}
	if err := <-errc; err != nil {
		t.Fatalf("stream: %v", err)
	}
	if strings.Join(rest, " ") != "event:4 state:completed end:completed" {
		t.Fatalf("end of stream = %v", rest)
	}
	var resumed []string
	if err := req.StreamEvents(bg, run.ID, 2, func(m client.StreamMessage) error { resumed = append(resumed, describe(m)); return nil }); err != nil {
		t.Fatal(err)
	}
	if strings.Join(resumed, " ") != "event:3 event:4 state:completed end:completed" {
		t.Fatalf("resumed = %v", resumed)
	}
}

func describe(m client.StreamMessage) string {
	switch m.Kind {
	case client.StreamEvent:
		return "event:" + strconv.FormatInt(m.Event.Seq, 10)
	default:
		return m.Kind + ":" + m.State
	}
}

// TestGracefulShutdown: Server.Shutdown ends long polls and event streams
// at once, lets a request in flight finish, then returns; no goroutine is
// left behind.
func TestGracefulShutdown(t *testing.T) {
	testutil.CheckGoroutines(t)
	ctx := context.Background()
	dir := t.TempDir()
	st, err := sqlite.Open(ctx, filepath.Join(dir, "plane.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	blobs, _ := blobfs.Open(filepath.Join(dir, "blobs"))
	key, _ := protocol.GenerateKey(nil)
	master := make([]byte, 32)
	_, _ = rand.Read(master)
	notifier := plane.NewLocalNotifier()
	p, err := plane.New(ctx, plane.Config{Store: st, Blobs: blobs, Key: key, MasterKey: master, Logger: testutil.NewLogger(t), Notifier: notifier})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := plane.NewServer(p)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	url := "http://" + ln.Addr().String()
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	mk := func(tok string) *client.Client {
		c, _ := client.New(url, client.WithToken(tok), client.WithHTTPClient(&http.Client{Transport: tr}))
		return c
	}
	adm, err := p.CreatePrincipal(ctx, client.CreatePrincipalRequest{Name: "admin", Role: client.RoleAdmin})
	if err != nil {
		t.Fatal(err)
	}
	admin := mk(adm.Token.Secret)
	ws := testutil.UploadWorkspace(t, admin, map[string]string{"f": "x"})
	run, err := admin.SubmitRun(ctx, client.RunRequest{Agent: protocol.AgentSpec{Kind: "mock"}, Prompt: "p", Pool: "local", Workspace: ws})
	if err != nil {
		t.Fatal(err)
	}
	et, _ := admin.CreateEnrollToken(ctx, client.EnrollTokenRequest{Pool: "default"})
	rk, _ := protocol.GenerateKey(nil)
	enr, err := mk("").Enroll(ctx, client.EnrollRequest{EnrollToken: et.Token, PublicKeyPEM: rk.Public().PEM(), Pool: "default", Proof: rk.SignMessage(client.EnrollProofMessage(et.Token))})
	if err != nil {
		t.Fatal(err)
	}
	pollDone := make(chan error, 1)
	go func() {
		c, err := mk(enr.RunnerToken).Claim(ctx, client.ClaimRequest{Pool: "default", WaitSeconds: 60})
		if c != nil {
			err = errors.New("claimed a run in another pool")
		}
		pollDone <- err
	}()
	streamDone := make(chan error, 1)
	go func() {
		streamDone <- admin.StreamEvents(ctx, run.Run.ID, -1, func(client.StreamMessage) error { return nil })
	}()
	// An upload in flight: half its bytes now, the rest after shutdown began.
	payload := bytes.Repeat([]byte("in flight "), 100000)
	pr, pw := io.Pipe()
	upload := make(chan error, 1)
	go func() {
		req, _ := http.NewRequest("PUT", url+"/v1/blobs/"+protocol.HashBytes(payload), pr)
		req.ContentLength = int64(len(payload))
		req.Header.Set("Authorization", "Bearer "+adm.Token.Secret)
		resp, err := (&http.Client{Transport: tr}).Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode != 200 {
				err = errors.New("upload status " + resp.Status)
			}
		}
		upload <- err
	}()
	if _, err := pw.Write(payload[:len(payload)/2]); err != nil {
		t.Fatal(err)
	}
	// Wait until the long poll and the stream are waiting in the plane,
	// and the upload is in its handler: the blob store's temporary file
	// has bytes (the half written may still sit in socket buffers, with
	// the connection not yet accepted, which shutdown would just refuse).
	uploading := func() bool {
		tmps, _ := os.ReadDir(filepath.Join(dir, "blobs", "tmp"))
		for _, e := range tmps {
			if fi, err := e.Info(); err == nil && fi.Size() > 0 {
				return true
			}
		}
		return false
	}
	for deadline := time.Now().Add(30 * time.Second); notifier.Subscribers("pool:default") == 0 || notifier.Subscribers("run:"+run.Run.ID) == 0 || !uploading(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the long poll, the stream and the upload did not all reach the plane in 30 s")
		}
	}
	shut := make(chan error, 1)
	go func() {
		sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		shut <- srv.Shutdown(sctx)
	}()
	select {
	case err := <-pollDone:
		if err != nil {
			t.Fatalf("long poll: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the long poll outlived shutdown")
	}
	select {
	case <-streamDone: // the stream ends (without an end message: the run goes on)
	case <-time.After(10 * time.Second):
		t.Fatal("the event stream outlived shutdown")
	}
	select {
	case err := <-shut:
		t.Fatalf("shutdown returned (%v) with an upload in flight", err)
	case <-time.After(200 * time.Millisecond):
	}
	if _, err := pw.Write(payload[len(payload)/2:]); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	if err := <-upload; err != nil {
		t.Fatalf("the upload in flight failed: %v", err)
	}
	if err := <-shut; err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	if err := <-served; err != nil {
		t.Fatalf("serve: %v", err)
	}
	if has, _ := blobs.Has(ctx, protocol.HashBytes(payload)); !has {
		t.Fatal("the upload finished during shutdown was not stored")
	}
	if _, err := http.Get(url + "/healthz"); err == nil {
		t.Fatal("the server still accepts connections")
	}
}
