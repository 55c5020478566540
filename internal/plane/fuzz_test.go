package plane_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"warrant.dev/warrant/client"
	"warrant.dev/warrant/internal/plane"
	"warrant.dev/warrant/internal/testutil"
	"warrant.dev/warrant/protocol"
)

// The fuzz targets here drive the plane's HTTP handler in process with
// hostile request bodies and headers. Whatever arrives, the plane must
// never answer 5xx (a panic is recovered into a 500, so this also catches
// panics), must answer errors as a JSON body with a code from the closed
// set and that code's status, and must store nothing for a request it
// refuses.

// fuzzPlane is a plane for fuzzing: SQLite in a temporary directory, no
// logs, no rate limit, small body limits.
type fuzzPlane struct {
	*testutil.TestPlane
	h       http.Handler
	reqTok  string
	ws      protocol.Manifest
	wsBytes []byte
}

func newFuzzPlane(f *testing.F) *fuzzPlane {
	f.Helper()
	tp := testutil.StartPlane(f, testutil.WithConfig(func(c *plane.Config) {
		c.Logger = slog.New(slog.DiscardHandler)
		c.RateLimit, c.RateBurst = 1e9, 1e9
		c.MaxBodyBytes, c.MaxBlobBytes = 256<<10, 1<<20
		// Long polls a fuzzed waitSeconds asks for end almost at once.
		c.HeartbeatInterval, c.MaxClaimWait = 5*time.Millisecond, 5*time.Millisecond
		// A claim outlives the fuzzing: with the test planes' 10 s lease
		// the reaper failed a worker's run mid-campaign, every later input
		// met a dead claim, and a run.failed appended between an oracle's
		// two counts looked like a refused request storing an event.
		c.LeaseTTL = 24 * time.Hour
	}))
	resp, err := tp.Admin.CreatePrincipal(context.Background(), client.CreatePrincipalRequest{Name: "fuzz@test", Role: client.RoleRequester})
	if err != nil {
		f.Fatal(err)
	}
	fp := &fuzzPlane{TestPlane: tp, h: tp.Plane.Handler(), reqTok: resp.Token.Secret}
	fp.ws = testutil.UploadWorkspace(f, tp.Client(resp.Token.Secret), map[string]string{"README.md": "# fuzz\n"})
	fp.wsBytes, _ = json.Marshal(fp.ws)
	return fp
}

// do serves one request in process and checks the reply's form.
func (fp *fuzzPlane) do(t *testing.T, method, target, token, contentType string, body []byte, header map[string]string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(method, target, bytes.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	fp.h.ServeHTTP(rec, req)
	checkReply(t, method+" "+target, rec)
	return rec
}

// checkReply: never 5xx; an error is {"error": {code, message}} with a
// code of the closed set and its status.
func checkReply(t *testing.T, what string, rec *httptest.ResponseRecorder) {
	t.Helper()
	if rec.Code >= 500 {
		t.Fatalf("%s answered %d: %s", what, rec.Code, rec.Body.Bytes())
	}
	if rec.Code < 400 {
		return
	}
	var env struct {
		Error client.APIError `json:"error"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &env); err != nil || env.Error.Code == "" || env.Error.Message == "" {
		t.Fatalf("%s answered %d with a body that is not a JSON error: %q", what, rec.Code, rec.Body.Bytes())
	}
	if want, ok := client.StatusForCode[env.Error.Code]; !ok || want != rec.Code {
		t.Fatalf("%s answered %d with code %q (closed set: %v)", what, rec.Code, env.Error.Code, ok)
	}
}

func (fp *fuzzPlane) runCount(t *testing.T) int {
	t.Helper()
	m, err := fp.Store.CountRunsByState(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, c := range m {
		n += c
	}
	return n
}

// FuzzSubmitRun fuzzes POST /v1/runs bodies: a refused submission creates
// no run; an accepted one creates exactly one.
func FuzzSubmitRun(f *testing.F) {
	fp := newFuzzPlane(f)
	good := `{"agent":{"kind":"command"},"prompt":"echo hi","pool":"default","workspace":` + string(fp.wsBytes) + `}`
	f.Add([]byte(good))
	f.Add([]byte(strings.Replace(good, `"pool":"default"`, `"pool":"default","secrets":["A","A"],"allowHosts":["*"]`, 1)))
	f.Add([]byte(strings.Replace(good, `"prompt":"echo hi"`, `"prompt":"x","dryRun":true,"budget":{"maxSpendUsd":-1}`, 1)))
	f.Add([]byte(strings.Replace(good, `"command"`, `"command"},"execution":{"kind":"argv","command":"sh","args":["-c","x"],"env":{"secrets":[{"env":"X","secretName":"Y"}]}`, 1)))
	f.Add([]byte(`{"agent":{"kind":"mock"},"prompt":"x","pool":"../x","workspace":{"version":"warrant.manifest.v1","baseRef":"","bundleHash":"` + strings.Repeat("a", 64) + `","untrackedFiles":[{"path":"../../etc/passwd","hash":"","bytes":0}],"deniedPatterns":[],"deniedPaths":[]}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		before := fp.runCount(t)
		rec := fp.do(t, http.MethodPost, "/v1/runs", fp.reqTok, "application/json", body, nil)
		after := fp.runCount(t)
		switch {
		case rec.Code == http.StatusCreated && after != before+1:
			t.Fatalf("accepted submission made %d runs", after-before)
		case rec.Code != http.StatusCreated && after != before:
			t.Fatalf("refused submission (%d) made %d runs", rec.Code, after-before)
		}
	})
}

var frameHeader = regexp.MustCompile(`([0-9a-f]{64}) [0-9]+\n`)

// FuzzPutBlobs fuzzes the batch upload stream (POST /v1/blobs: "<hash>
// <size>\n" then size bytes, repeated). Whatever the reply, every blob the
// plane holds under a name from the stream has exactly the bytes of that
// name; an accepted batch stored every frame.
func FuzzPutBlobs(f *testing.F) {
	fp := newFuzzPlane(f)
	frame := func(data string) string {
		return protocol.HashBytes([]byte(data)) + " " + fmt.Sprint(len(data)) + "\n" + data
	}
	f.Add([]byte(frame("hello") + frame("") + frame("world\n")))
	f.Add([]byte(frame("hello")[:70]))
	f.Add([]byte(protocol.HashBytes([]byte("x")) + " 5\nxyzzy"))
	f.Add([]byte(protocol.HashBytes([]byte("x")) + " -1\n"))
	f.Add([]byte(protocol.HashBytes([]byte("x")) + " 99999999999999999999\n"))
	f.Add([]byte(strings.ToUpper(protocol.HashBytes([]byte("x"))) + " 1\nx"))
	f.Fuzz(func(t *testing.T, body []byte) {
		rec := fp.do(t, http.MethodPost, "/v1/blobs", fp.reqTok, client.BlobsContentType, body, nil)
		// Every name that could head a frame, wherever it is in the stream.
		names := frameHeader.FindAllSubmatch(body, -1)
		frames := len(names)
		for _, m := range names {
			name := m[1]
			rc, _, err := fp.Blobs.Open(context.Background(), string(name))
			if err != nil {
				continue
			}
			data, err := io.ReadAll(rc)
			rc.Close()
			if err != nil || protocol.HashBytes(data) != string(name) {
				t.Fatalf("the plane holds blob %s with other content (%d bytes, %v)", name, len(data), err)
			}
		}
		if rec.Code == http.StatusOK {
			var resp client.PutBlobsResponse
			if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil {
				t.Fatalf("reply: %v", err)
			}
			if resp.Stored+resp.Present > frames {
				t.Fatalf("accepted %d blobs from a stream of at most %d frames", resp.Stored+resp.Present, frames)
			}
		}
	})
}

// fuzzClaim is a run claimed by a hand-driven runner of the fuzz plane.
type fuzzClaim struct {
	*testutil.Claimed
	genesis string // the contract hash
}

func (fp *fuzzPlane) newClaim(t testing.TB, r *testutil.Runner) *fuzzClaim {
	t.Helper()
	req := client.RunRequest{Agent: protocol.AgentSpec{Kind: protocol.AgentCommand}, Prompt: "echo hi", Pool: "default", Workspace: fp.ws}
	if _, err := fp.Client(fp.reqTok).SubmitRun(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	c := r.MustClaim(t)
	h, err := c.Contract.Hash()
	if err != nil {
		t.Fatal(err)
	}
	return &fuzzClaim{Claimed: c, genesis: h}
}

func (fp *fuzzPlane) eventCount(t *testing.T, runID string) int64 {
	t.Helper()
	run, err := fp.Store.GetRun(context.Background(), runID)
	if err != nil {
		t.Fatal(err)
	}
	return run.EventCount
}

// FuzzAppendEvents fuzzes POST /v1/runs/{id}/events with a claim token,
// two ways: the raw body, and an event body wrapped into a correctly
// chained event after the run's head (so the fuzzer reaches the plane's
// checks of event types and payloads). A refused append stores nothing;
// an accepted one extends the chain by exactly the events sent, and the
// stored chain still verifies from the contract.
func FuzzAppendEvents(f *testing.F) {
	fp := newFuzzPlane(f)
	r := fp.EnrollRunner("default")
	cur := fp.newClaim(f, r)
	f.Add(false, []byte(`{"events":[]}`))
	f.Add(false, []byte(`{"events":[{"version":"warrant.event.v1","seq":3,"ts":"2026-01-01T00:00:00.000Z","prev":"","event":{"type":"run.completed"},"hash":""}]}`))
	for _, body := range []string{
		`{"type":"command.executed","argvHash":"` + protocol.HashBytes(nil) + `","exitCode":0}`,
		`{"type":"file.changed","path":"a/b.txt","contentHash":"` + protocol.HashBytes(nil) + `"}`,
		`{"type":"network.connected","host":"example.com","decision":"blocked"}`,
		`{"type":"secret.released","name":"X","scope":"pool:default"}`,
		`{"type":"run.failed","failure":"session_failed","message":"boom"}`,
		`{"type":"run.completed"}`,
		`{"type":"model.called","provider":"p","model":"m","extra":[1,2,{"x":null}]}`,
	} {
		f.Add(true, []byte(body))
	}
	f.Fuzz(func(t *testing.T, wrap bool, data []byte) {
		if cur.Claimed == nil {
			cur = fp.newClaim(t, r)
		}
		body := data
		var sent int64
		if wrap {
			var ev protocol.EventBody
			if err := ev.UnmarshalJSON(data); err != nil {
				return // not an event body: the raw mode covers malformed ones
			}
			head := cur.Events[len(cur.Events)-1]
			e, err := protocol.NextEvent(&head, "", ev, time.Now())
			if err != nil {
				return
			}
			b, err := json.Marshal(client.AppendEventsRequest{Events: []protocol.ChainedEvent{e}})
			if err != nil {
				return
			}
			body, sent = b, 1
		}
		before := fp.eventCount(t, cur.RunID)
		rec := fp.do(t, http.MethodPost, "/v1/runs/"+cur.RunID+"/events", cur.ClaimToken, "application/json", body, nil)
		after := fp.eventCount(t, cur.RunID)
		if rec.Code != http.StatusOK {
			if after != before {
				t.Fatalf("refused append (%d: %s) stored %d events", rec.Code, rec.Body.String(), after-before)
			}
			return
		}
		if wrap && after != before+sent {
			t.Fatalf("accepted append of %d event stored %d", sent, after-before)
		}
		evs, err := fp.Store.ListEvents(context.Background(), cur.RunID, -1, 0)
		if err != nil {
			t.Fatal(err)
		}
		chain := make([]protocol.ChainedEvent, len(evs))
		for i, e := range evs {
			if err := chain[i].UnmarshalJSON(e.Data); err != nil {
				t.Fatalf("stored event %d does not parse: %v", e.Seq, err)
			}
		}
		if err := protocol.VerifyChain(chain, cur.genesis); err != nil {
			t.Fatalf("the stored chain no longer verifies: %v", err)
		}
		cur.Events = chain
		if last := chain[len(chain)-1].Event.Type(); last == protocol.EventRunCompleted || last == protocol.EventRunFailed || last == protocol.EventRunCancelled {
			cur.Claimed = nil // the chain is closed: use a fresh run next
		}
	})
}

// FuzzComplete fuzzes POST /v1/runs/{id}/complete two ways: the raw body,
// and an honest receipt of a finished chain whose top-level members the
// fuzz input (a JSON object) replaces, re-signed by the claiming runner's
// own key, so every check behind the signature is reached. The plane
// accepts a receipt only if offline verification (protocol
// VerifyCompletion) accepts it too; a refused completion leaves the run
// unfinished, with no receipt.
func FuzzComplete(f *testing.F) {
	fp := newFuzzPlane(f)
	r := fp.EnrollRunner("default")
	var cur *fuzzClaim
	var honest map[string]json.RawMessage
	fresh := func(t testing.TB) {
		cur = fp.newClaim(t, r)
		cur.Append(t, protocol.CommandExecuted{ArgvHash: protocol.HashBytes([]byte("argv")), ExitCode: 0}, protocol.RunCompleted{})
		b, err := cur.Receipt(t, "").MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		honest = nil
		if err := json.Unmarshal(b, &honest); err != nil {
			t.Fatal(err)
		}
	}
	fresh(f)
	f.Add(false, []byte(`{"receipt":null}`))
	f.Add(false, []byte(`{"receipt":{"version":"warrant.receipt.v1","signatures":[]}}`))
	for _, overlay := range []string{
		`{}`,
		`{"eventCount":1}`,
		`{"status":"failed"}`,
		`{"eventsHead":"` + strings.Repeat("0", 64) + `"}`,
		`{"secretsReleased":[{"name":"X","scope":"pool:default","ts":"2026-01-01T00:00:00.000Z"}]}`,
		`{"networkAccessed":[{"host":"a.example","decision":"allowed"}]}`,
		`{"runner":{"runnerId":"rnr_x","keyId":"ed25519:0000000000000000","pool":"default","attestationTier":"mock"}}`,
		`{"workspaceOut":{"diffHash":"` + strings.Repeat("a", 64) + `","artifactHashes":[]}}`,
		`{"version":"warrant.receipt.v2"}`,
		`{"costUsd":1e308,"extra":{"nested":[1,2,3]}}`,
	} {
		f.Add(true, []byte(overlay))
	}
	f.Fuzz(func(t *testing.T, overlay bool, data []byte) {
		if cur == nil {
			fresh(t)
		}
		body := data
		var sent *protocol.Receipt
		if overlay {
			var patch map[string]json.RawMessage
			if err := json.Unmarshal(data, &patch); err != nil {
				return
			}
			merged := map[string]json.RawMessage{}
			for k, v := range honest {
				merged[k] = v
			}
			for k, v := range patch {
				merged[k] = v
			}
			delete(merged, "signatures")
			raw, err := json.Marshal(merged)
			if err != nil {
				return
			}
			if rc, err := protocol.ParseReceipt(raw); err == nil {
				rc.Signatures = nil
				if err := rc.Sign(r.Key, protocol.SignerRunner); err == nil {
					sent = rc
					raw, _ = rc.MarshalJSON()
				}
			}
			body = []byte(`{"receipt":` + string(raw) + `}`)
		}
		rec := fp.do(t, http.MethodPost, "/v1/runs/"+cur.RunID+"/complete", cur.ClaimToken, "application/json", body, nil)
		run, err := fp.Store.GetRun(context.Background(), cur.RunID)
		if err != nil {
			t.Fatal(err)
		}
		if rec.Code != http.StatusOK {
			if run.HasReceipt || run.State == protocol.StateCompleted {
				t.Fatalf("refused completion (%d) left the run %s with a receipt=%v", rec.Code, run.State, run.HasReceipt)
			}
			return
		}
		if sent != nil {
			pub := r.Key.Public()
			if err := protocol.VerifyCompletion(cur.Contract, cur.Events, sent, pub); err != nil {
				t.Fatalf("the plane accepted a receipt offline verification refuses: %v", err)
			}
		}
		if !run.HasReceipt {
			t.Fatalf("accepted completion left no receipt (state %s)", run.State)
		}
		cur = nil // used up: the next input gets a fresh run
	})
}

// cancelOnFlush cancels a request's context at its n-th flush, so a
// live stream handler returns after sending what it had.
type cancelOnFlush struct {
	*httptest.ResponseRecorder
	n      int
	cancel context.CancelFunc
}

func (c *cancelOnFlush) Flush() {
	c.ResponseRecorder.Flush()
	if c.n--; c.n <= 0 {
		c.cancel()
	}
}

// FuzzStreamResume fuzzes the resume points of the two event streams:
// ?after= and Last-Event-ID of GET /v1/runs/{id}/events/stream (a
// finished run, so the stream ends by itself) and Last-Event-ID of GET
// /v1/runs/stream. Invalid ones are 400; valid ones stream only events
// after the resume point, and the run's stream ends with "end".
func FuzzStreamResume(f *testing.F) {
	fp := newFuzzPlane(f)
	r := fp.EnrollRunner("default")
	c := fp.newClaim(f, r)
	c.Finish(f, protocol.RunCompleted{})
	for _, s := range [][2]string{{"", ""}, {"-1", ""}, {"2", ""}, {"", "3"}, {"x", "1"}, {"-2", ""}, {"9223372036854775807", ""}, {"", " 4 "}, {"1e3", "0x10"}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, after, lastID string) {
		if strings.ContainsAny(lastID, "\r\n\x00") || !utf8Valid(lastID) {
			return // net/http never delivers such a header
		}
		hdr := map[string]string{}
		if lastID != "" {
			hdr["Last-Event-ID"] = lastID
		}
		target := "/v1/runs/" + c.RunID + "/events/stream"
		if after != "" {
			target += "?after=" + url.QueryEscape(after)
		}
		rec := fp.do(t, http.MethodGet, target, fp.AdminToken, "", nil, hdr)
		if rec.Code != http.StatusOK && rec.Code != http.StatusBadRequest {
			t.Fatalf("event stream answered %d", rec.Code)
		}
		if rec.Code == http.StatusOK {
			resume := after
			if h := strings.TrimSpace(lastID); h != "" {
				resume = h
			}
			from := int64(-1)
			if resume != "" {
				n, err := strconv.ParseInt(resume, 10, 64)
				if err != nil || n < -1 {
					t.Fatalf("resume point %q was accepted", resume)
				}
				from = n
			}
			body := rec.Body.String()
			if !strings.Contains(body, "event: end\n") {
				t.Fatalf("the finished run's stream did not end:\n%s", body)
			}
			for _, line := range strings.Split(body, "\n") {
				if id, ok := strings.CutPrefix(line, "id: "); ok {
					if n, err := strconv.ParseInt(id, 10, 64); err != nil || n <= from {
						t.Fatalf("resumed after %d but got event id %s", from, id)
					}
				}
			}
		}
		// The run list stream: cancelled once its first read was sent.
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		req := httptest.NewRequest(http.MethodGet, "/v1/runs/stream", nil).WithContext(ctx)
		req.Header.Set("Authorization", "Bearer "+fp.AdminToken)
		if lastID != "" {
			req.Header.Set("Last-Event-ID", lastID)
		}
		w := &cancelOnFlush{ResponseRecorder: httptest.NewRecorder(), n: 2, cancel: cancel}
		fp.h.ServeHTTP(w, req)
		checkReply(t, "GET /v1/runs/stream", w.ResponseRecorder)
		if w.Code != http.StatusOK && w.Code != http.StatusBadRequest {
			t.Fatalf("run stream answered %d", w.Code)
		}
	})
}

func utf8Valid(s string) bool { return utf8.ValidString(s) }

// FuzzRoutes fuzzes the JSON bodies of the remaining write routes, each
// with the token it needs: enrollment (public: no token at all), claims
// (runner), heartbeats (claim), principals, tokens, enroll tokens,
// policy and secrets (admin), missing blobs (requester), approve, deny and
// cancel (requester, admin). Never 5xx, errors in the closed set, and a
// refused enrollment enrolls no runner.
func FuzzRoutes(f *testing.F) {
	fp := newFuzzPlane(f)
	r := fp.EnrollRunner("default")
	cl := fp.newClaim(f, r)
	runID := cl.RunID
	et, err := fp.Admin.CreateEnrollToken(context.Background(), client.EnrollTokenRequest{Pool: "default"})
	if err != nil {
		f.Fatal(err)
	}
	key, _ := protocol.GenerateKey(nil)
	enroll, _ := json.Marshal(client.EnrollRequest{EnrollToken: et.Token, PublicKeyPEM: key.Public().PEM(), Pool: "default", Proof: key.SignMessage(client.EnrollProofMessage(et.Token))})
	policy, _ := json.Marshal(map[string]any{"policy": plane.DefaultPolicy()})
	routes := []struct {
		method, path, token string
	}{
		{http.MethodPost, "/v1/runners/enroll", ""},
		{http.MethodPost, "/v1/claims", ""}, // a runner token, below
		{http.MethodPost, "/v1/runs/" + runID + "/heartbeat", cl.ClaimToken},
		{http.MethodPost, "/v1/principals", fp.AdminToken},
		{http.MethodPost, "/v1/enroll-tokens", fp.AdminToken},
		{http.MethodPut, "/v1/policy", fp.AdminToken},
		{http.MethodPut, "/v1/secrets/FUZZ_SECRET", fp.AdminToken},
		{http.MethodPost, "/v1/blobs/missing", fp.reqTok},
		{http.MethodPost, "/v1/runs/" + runID + "/approve", fp.AdminToken},
		{http.MethodPost, "/v1/runs/" + runID + "/deny", fp.AdminToken},
		{http.MethodPost, "/v1/runs/" + runID + "/cancel", fp.reqTok},
	}
	routes[1].token = newRunnerToken(f, fp)
	seeds := [][]byte{enroll, []byte(`{"pool":"default","tiers":["process"],"waitSeconds":1}`), []byte(`{"phase":"running","waitSeconds":1}`),
		[]byte(`{"name":"fuzz","role":"auditor"}`), []byte(`{"pool":"default","ttlSeconds":60}`), policy, []byte(`{"value":"v"}`),
		[]byte(`{"hashes":["` + protocol.HashBytes(nil) + `"]}`), []byte(`{"reason":"r"}`), []byte(`{}`), []byte(``)}
	for i, s := range seeds {
		f.Add(uint8(i), s)
	}
	f.Fuzz(func(t *testing.T, route uint8, body []byte) {
		rt := routes[int(route)%len(routes)]
		before, err := fp.Store.ListRunners(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		rec := fp.do(t, rt.method, rt.path, rt.token, "application/json", body, nil)
		if rt.path == "/v1/runners/enroll" && rec.Code >= 400 {
			after, err := fp.Store.ListRunners(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if len(after) != len(before) {
				t.Fatalf("a refused enrollment (%d) enrolled a runner", rec.Code)
			}
		}
	})
}

// newRunnerToken enrolls another runner and returns its token.
func newRunnerToken(f *testing.F, fp *fuzzPlane) string {
	f.Helper()
	et, err := fp.Admin.CreateEnrollToken(context.Background(), client.EnrollTokenRequest{Pool: "default"})
	if err != nil {
		f.Fatal(err)
	}
	key, _ := protocol.GenerateKey(nil)
	resp, err := fp.Client("").Enroll(context.Background(), client.EnrollRequest{EnrollToken: et.Token, PublicKeyPEM: key.Public().PEM(), Pool: "default", Proof: key.SignMessage(client.EnrollProofMessage(et.Token))})
	if err != nil {
		f.Fatal(err)
	}
	return resp.RunnerToken
}
