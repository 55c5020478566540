package postgres_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"warrant.dev/warrant/client"
	"warrant.dev/warrant/internal/plane"
	"warrant.dev/warrant/internal/store/postgres"
	"warrant.dev/warrant/internal/store/postgres/pgtest"
	"warrant.dev/warrant/internal/testutil"
	"warrant.dev/warrant/protocol"
)

// replica is one plane of a schema, in this process, with its own pool
// and notifier (as a separate process would have).
type replica struct {
	url   string
	plane *plane.Plane
}

// hour-long waits: a wakeup that does not cross replicas stalls the test
// (and fails it at its deadline) instead of being hidden by a timer.
const stall = time.Hour

func startReplica(t *testing.T, conn string, key *protocol.PrivateKey, master []byte) *replica {
	t.Helper()
	st := open(t, conn)
	n, err := postgres.NewNotifier(bg, st, testutil.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	p, err := plane.New(bg, plane.Config{
		Store: st, Blobs: postgres.NewBlobStore(st.Pool(), 0), Key: key, MasterKey: master, Notifier: n,
		Logger: testutil.NewLogger(t), Version: "test",
		LeaseTTL: 3 * stall, HeartbeatInterval: stall, MaxClaimWait: stall, SSEKeepAlive: stall, ReapInterval: 50 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	p.Start()
	srv := httptest.NewServer(p.Handler())
	t.Cleanup(func() {
		p.Drain()
		srv.CloseClientConnections()
		srv.Close()
		p.Close()
		n.Close()
		st.Close()
	})
	return &replica{url: srv.URL, plane: p}
}

func clientOf(t *testing.T, url, token string) *client.Client {
	t.Helper()
	c, err := client.New(url, client.WithToken(token))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestReplicasShareWork runs two plane replicas on one database and
// checks that the wakeups the plane relies on cross replicas: a claim
// long-polling on A receives a run submitted on B, a watcher streaming
// from B sees the events a runner appends through A and the end, a
// heartbeat waiting on A learns of a cancellation made on B, and a bundle
// countersigned by A verifies when fetched from B.
func TestReplicasShareWork(t *testing.T) {
	t.Parallel()
	conn := pgtest.Schema(t)
	key, err := protocol.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	master := make([]byte, 32)
	_, _ = rand.Read(master)
	a := startReplica(t, conn, key, master)
	b := startReplica(t, conn, key, master)
	ctx, cancel := context.WithTimeout(bg, 60*time.Second)
	defer cancel()

	admin, err := a.plane.CreatePrincipal(ctx, client.CreatePrincipalRequest{Name: "admin@test", Role: client.RoleAdmin})
	if err != nil {
		t.Fatal(err)
	}
	adminA, adminB := clientOf(t, a.url, admin.Token.Secret), clientOf(t, b.url, admin.Token.Secret)
	req, err := adminA.CreatePrincipal(ctx, client.CreatePrincipalRequest{Name: "dev@test", Role: client.RoleRequester})
	if err != nil {
		t.Fatal(err)
	}
	devA, devB := clientOf(t, a.url, req.Token.Secret), clientOf(t, b.url, req.Token.Secret)

	// A runner enrolled through B with a token made on A.
	rkey, _ := protocol.GenerateKey(nil)
	et, err := adminA.CreateEnrollToken(ctx, client.EnrollTokenRequest{Pool: "default"})
	if err != nil {
		t.Fatal(err)
	}
	enr, err := clientOf(t, b.url, "").Enroll(ctx, client.EnrollRequest{EnrollToken: et.Token, PublicKeyPEM: rkey.Public().PEM(), Pool: "default",
		Proof: rkey.SignMessage(client.EnrollProofMessage(et.Token))})
	if err != nil {
		t.Fatal(err)
	}
	runnerA, runnerB := clientOf(t, a.url, enr.RunnerToken), clientOf(t, b.url, enr.RunnerToken)

	// 1. A claim waiting on A is woken by a submission on B.
	claims := make(chan *client.Claim, 1)
	claimErr := make(chan error, 1)
	go func() {
		c, err := runnerA.Claim(ctx, client.ClaimRequest{Pool: "default", WaitSeconds: int(stall / time.Second)})
		if err != nil {
			claimErr <- err
			return
		}
		claims <- c
	}()
	ws := testutil.UploadWorkspace(t, devB, map[string]string{"README.md": "# replicas\n"})
	time.Sleep(100 * time.Millisecond) // let the claim start waiting (a claim after the submit would pass too, trivially)
	sub, err := devB.SubmitRun(ctx, client.RunRequest{Agent: protocol.AgentSpec{Kind: protocol.AgentCommand}, Prompt: "echo hi", Pool: "default", Workspace: ws})
	if err != nil {
		t.Fatal(err)
	}
	var claim *client.Claim
	select {
	case claim = <-claims:
	case err := <-claimErr:
		t.Fatalf("claim on A (the run was submitted on B): %v", err)
	}
	if claim == nil || claim.RunID != sub.Run.ID {
		t.Fatalf("claim on A = %+v, want run %s", claim, sub.Run.ID)
	}

	// 2. A watcher on B follows what the runner does through A.
	type streamed struct {
		types []string
		end   string
		err   error
	}
	watched := make(chan streamed, 1)
	go func() {
		var s streamed
		s.err = devB.StreamEvents(ctx, sub.Run.ID, -1, func(m client.StreamMessage) error {
			switch m.Kind {
			case client.StreamEvent:
				s.types = append(s.types, m.Event.Event.Type())
			case client.StreamEnd:
				s.end = m.State
			}
			return nil
		})
		watched <- s
	}()
	claimA := clientOf(t, a.url, claim.ClaimToken)
	chain := claim.Events
	appendEvents := func(c *client.Client, bodies ...protocol.EventPayload) {
		t.Helper()
		var batch []protocol.ChainedEvent
		for _, body := range bodies {
			e, err := protocol.NextEvent(&chain[len(chain)-1], "", protocol.NewEvent(body), time.Now())
			if err != nil {
				t.Fatal(err)
			}
			chain = append(chain, e)
			batch = append(batch, e)
		}
		if _, err := c.AppendEvents(ctx, claim.RunID, batch); err != nil {
			t.Fatalf("append: %v", err)
		}
	}
	mh, _ := claim.Contract.ManifestHash()
	appendEvents(claimA, protocol.WorkspaceMaterialized{ManifestHash: mh})
	appendEvents(claimA, protocol.CommandExecuted{ArgvHash: protocol.HashBytes([]byte("echo hi")), ExitCode: 0}, protocol.RunCompleted{})
	rc, err := protocol.BuildReceipt(protocol.ReceiptInput{
		Contract: claim.Contract, Events: chain,
		Runner: protocol.RunnerIdentity{RunnerID: enr.RunnerID, KeyID: rkey.Public().ID(), Pool: "default", AttestationTier: protocol.AttestationMock, Isolation: claim.Contract.EffectiveIsolation()},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := rc.Sign(rkey, protocol.SignerRunner); err != nil {
		t.Fatal(err)
	}
	if _, err := claimA.Complete(ctx, claim.RunID, rc); err != nil {
		t.Fatalf("complete on A: %v", err)
	}
	s := <-watched
	if s.err != nil {
		t.Fatalf("stream on B: %v", s.err)
	}
	if s.end != protocol.StateCompleted || len(s.types) != len(chain) || s.types[len(s.types)-1] != protocol.EventRunCompleted {
		t.Fatalf("stream on B saw %v and end %q; the chain has %d events", s.types, s.end, len(chain))
	}

	// 3. The bundle countersigned on A verifies from B, plane key pinned.
	bundle, _, err := adminB.Bundle(ctx, sub.Run.ID)
	if err != nil {
		t.Fatal(err)
	}
	trust := protocol.NewTrustStore()
	trust.Add(protocol.SignerPlane, key.Public())
	if rep := protocol.VerifyBundle(bundle, trust); !rep.Trusted() {
		t.Fatalf("bundle not trusted: %v", rep.Err())
	}

	// 4. A heartbeat waiting on A learns of a cancellation made on B.
	sub2, err := devA.SubmitRun(ctx, client.RunRequest{Agent: protocol.AgentSpec{Kind: protocol.AgentCommand}, Prompt: "sleep 600", Pool: "default", Workspace: ws})
	if err != nil {
		t.Fatal(err)
	}
	claim2, err := runnerB.Claim(ctx, client.ClaimRequest{Pool: "default", WaitSeconds: 10})
	if err != nil || claim2 == nil || claim2.RunID != sub2.Run.ID {
		t.Fatalf("claim 2: %+v %v", claim2, err)
	}
	beats := make(chan *client.HeartbeatResponse, 1)
	beatErr := make(chan error, 1)
	go func() {
		hb, err := clientOf(t, a.url, claim2.ClaimToken).Heartbeat(ctx, claim2.RunID, client.HeartbeatRequest{Phase: client.PhaseRunning, WaitSeconds: int(stall / time.Second)})
		if err != nil {
			beatErr <- err
			return
		}
		beats <- hb
	}()
	time.Sleep(100 * time.Millisecond) // let the heartbeat start waiting
	if _, err := devB.Cancel(ctx, sub2.Run.ID, "stop it"); err != nil {
		t.Fatal(err)
	}
	select {
	case hb := <-beats:
		if hb.Cancel == nil {
			t.Fatalf("heartbeat on A returned without the cancellation made on B: %+v", hb)
		}
	case err := <-beatErr:
		t.Fatalf("heartbeat on A: %v", err)
	}
}

// TestConcurrentFirstStart: replicas starting at the same moment on an
// empty database all start (migrations, plane key, default policy), and
// exactly one bootstraps the admin: its token file holds a working token,
// and the others leave no token file behind.
func TestConcurrentFirstStart(t *testing.T) {
	t.Parallel()
	conn := pgtest.Schema(t)
	key, _ := protocol.GenerateKey(nil)
	master := make([]byte, 32)
	_, _ = rand.Read(master)
	const n = 4
	dir := t.TempDir()
	type started struct {
		token   string
		created bool
		err     error
	}
	out := make(chan started, n)
	for i := range n {
		go func() {
			st, err := postgres.Open(bg, conn)
			if err != nil {
				out <- started{err: err}
				return
			}
			t.Cleanup(func() { st.Close() })
			p, err := plane.New(bg, plane.Config{Store: st, Blobs: postgres.NewBlobStore(st.Pool(), 0), Key: key, MasterKey: master, Logger: testutil.NewLogger(t)})
			if err != nil {
				out <- started{err: err}
				return
			}
			tok, created, err := p.Bootstrap(bg, filepath.Join(dir, fmt.Sprint("admin", i, ".token")))
			out <- started{tok, created, err}
		}()
	}
	var token string
	for range n {
		s := <-out
		if s.err != nil {
			t.Fatalf("start: %v", s.err)
		}
		if s.created {
			if token != "" {
				t.Fatal("two replicas bootstrapped an admin")
			}
			token = s.token
		}
	}
	if token == "" {
		t.Fatal("no replica bootstrapped the admin")
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.token"))
	if len(files) != 1 {
		t.Fatalf("token files %v, want exactly the bootstrapping replica's", files)
	}
	data, err := os.ReadFile(files[0])
	if err != nil || strings.TrimSpace(string(data)) != token {
		t.Fatalf("token file holds %q (%v), want the bootstrap token", data, err)
	}
}
