package reliability_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"warrant.dev/warrant/client"
	"warrant.dev/warrant/protocol"
)

// handRunner is a runner enrolled through the SDK and driven by hand, so
// the test can forge and replay what a real runner never would.
type handRunner struct {
	id    string
	pool  string
	key   *protocol.PrivateKey
	token string
	c     *client.Client
	url   string
}

func enrollHand(t *testing.T, pp *planeProc, pool string) *handRunner {
	t.Helper()
	key, err := protocol.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	et := pp.enrollToken(t, pool)
	resp, err := newClient(t, pp.url, "").Enroll(bg(t), client.EnrollRequest{
		EnrollToken: et, PublicKeyPEM: key.Public().PEM(), Pool: pool, Name: "hand", Proof: key.SignMessage(client.EnrollProofMessage(et)),
	})
	if err != nil {
		t.Fatalf("enroll: %v", err)
	}
	registerToken(t, resp.RunnerToken, "hand runner token")
	return &handRunner{id: resp.RunnerID, pool: pool, key: key, token: resp.RunnerToken, c: newClient(t, pp.url, resp.RunnerToken), url: pp.url}
}

// handClaim is a claim a handRunner holds.
type handClaim struct {
	*client.Claim
	r      *handRunner
	c      *client.Client // claim token
	events []protocol.ChainedEvent
}

func (h *handRunner) claim(t *testing.T) *handClaim {
	t.Helper()
	cl, err := h.c.Claim(bg(t), client.ClaimRequest{Pool: h.pool, WaitSeconds: 5})
	if err != nil || cl == nil {
		t.Fatalf("claim: %v %v", cl, err)
	}
	registerToken(t, cl.ClaimToken, "claim token")
	return &handClaim{Claim: cl, r: h, c: newClient(t, h.url, cl.ClaimToken), events: cl.Events}
}

// next builds the event after the chain's head (not posted).
func (hc *handClaim) next(t *testing.T, p protocol.EventPayload) protocol.ChainedEvent {
	t.Helper()
	e, err := protocol.NextEvent(&hc.events[len(hc.events)-1], "", protocol.NewEvent(p), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// post appends payloads as chained events and posts them.
func (hc *handClaim) post(t *testing.T, ps ...protocol.EventPayload) error {
	t.Helper()
	var batch []protocol.ChainedEvent
	chain := hc.events
	for _, p := range ps {
		e, err := protocol.NextEvent(&chain[len(chain)-1], "", protocol.NewEvent(p), time.Now())
		if err != nil {
			t.Fatal(err)
		}
		batch = append(batch, e)
		chain = append(chain, e)
	}
	if _, err := hc.c.AppendEvents(bg(t), hc.RunID, batch); err != nil {
		return err
	}
	hc.events = chain
	return nil
}

// receipt builds the receipt of the chain, lets edit change the input,
// and signs it with key (the runner's own when nil).
func (hc *handClaim) receipt(t *testing.T, edit func(*protocol.ReceiptInput), key *protocol.PrivateKey) *protocol.Receipt {
	t.Helper()
	in := protocol.ReceiptInput{Contract: hc.Contract, Events: hc.events,
		Runner: protocol.RunnerIdentity{RunnerID: hc.r.id, KeyID: hc.r.key.Public().ID(), Pool: hc.r.pool, AttestationTier: protocol.AttestationMock, Isolation: protocol.IsolationProcess}}
	if edit != nil {
		edit(&in)
	}
	rc, err := protocol.BuildReceipt(in)
	if err != nil {
		t.Fatal(err)
	}
	if key == nil {
		key = hc.r.key
	}
	if err := rc.Sign(key, protocol.SignerRunner); err != nil {
		t.Fatal(err)
	}
	return rc
}

// finish ends the chain with run.completed and posts an honest receipt.
func (hc *handClaim) finish(t *testing.T) *protocol.Receipt {
	t.Helper()
	if err := hc.post(t, protocol.RunCompleted{}); err != nil {
		t.Fatalf("post run.completed: %v", err)
	}
	rc := hc.receipt(t, nil, nil)
	out, err := hc.c.Complete(bg(t), hc.RunID, rc)
	if err != nil {
		t.Fatalf("complete: %v", err)
	}
	return out
}

// refused checks that err is the API error want (and, for
// receipt_rejected, names check).
func refused(t *testing.T, err error, want *client.APIError, check string) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("got %v, want %s", err, want.Code)
	}
	if check != "" {
		var api *client.APIError
		if !errors.As(err, &api) || api.Check != check {
			t.Fatalf("receipt rejected by check %q, want %q (%v)", api.Check, check, err)
		}
	}
}

// failedChecks lists the checks a bundle verification failed.
func failedChecks(rep *protocol.Report) []string {
	var out []string
	for _, c := range rep.Checks {
		if c.Err != nil {
			out = append(out, c.Name)
		}
	}
	return out
}

// TestForgedAndReplayed sends a real plane (a `warrant plane serve`
// process) the objects an attacker holding some credential would forge or
// replay, through the client SDK, and checks each is refused with the
// right error code (and, for receipts, the right verification check); and
// verifies tampered bundles offline, which must not verify. Runs of pool
// "hand" are driven by hand-held runners; runs of pool "default" go to a
// real runner, for the workspaces that only materialization can refuse.
func TestForgedAndReplayed(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a real plane process")
	}
	w := newWorld(t, "forged", worldConfig{plane: planeConfig{leaseTTL: 3 * time.Second, heartbeat: time.Second}})
	pp := w.pp
	ctx := bg(t)
	pv, err := pp.admin.GetPolicy(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pol := pv.Policy
	pol.Runners.AllowPools = append(pol.Runners.AllowPools, "hand")
	pol.Secrets.Releasable = append(pol.Secrets.Releasable, protocol.SecretScopeRule{Name: secretEnv, Scope: "pool:hand", Pools: []string{"hand"}})
	if _, err := pp.admin.PutPolicy(ctx, pol); err != nil {
		t.Fatal(err)
	}
	r1 := enrollHand(t, pp, "hand")
	r2 := enrollHand(t, pp, "hand")
	reqC := w.req
	// submitHand queues a run for the hand runners and claims it with r.
	submitHand := func(t *testing.T, r *handRunner, secret bool) *handClaim {
		t.Helper()
		req := client.RunRequest{Agent: protocol.AgentSpec{Kind: protocol.AgentCommand}, Prompt: "echo forged", Pool: "hand", Workspace: w.ws}
		if secret {
			req.Secrets = []string{secretEnv}
		}
		if _, err := reqC.SubmitRun(bg(t), req); err != nil {
			t.Fatal(err)
		}
		return r.claim(t)
	}
	started := func(t *testing.T, hc *handClaim) {
		t.Helper()
		mh, _ := hc.Contract.ManifestHash()
		if err := hc.post(t, protocol.WorkspaceMaterialized{ManifestHash: mh}, protocol.CommandExecuted{ArgvHash: protocol.HashBytes([]byte("argv")), ExitCode: 0}); err != nil {
			t.Fatal(err)
		}
	}
	attacker, _ := protocol.GenerateKey(nil)

	cases := []struct {
		name  string
		want  *client.APIError
		check string
		do    func(t *testing.T) error
	}{
		// --- claim tokens ---
		{"claim token reused after completion: heartbeat", client.ErrClaimUsed, "", func(t *testing.T) error {
			hc := submitHand(t, r1, false)
			started(t, hc)
			hc.finish(t)
			_, err := hc.c.Heartbeat(bg(t), hc.RunID, client.HeartbeatRequest{Phase: client.PhaseRunning})
			return err
		}},
		{"claim token reused after completion: events", client.ErrClaimUsed, "", func(t *testing.T) error {
			hc := submitHand(t, r1, false)
			started(t, hc)
			hc.finish(t)
			e := hc.next(t, protocol.FileChanged{Path: "late.txt", ContentHash: protocol.HashBytes(nil)})
			_, err := hc.c.AppendEvents(bg(t), hc.RunID, []protocol.ChainedEvent{e})
			return err
		}},
		{"claim token reused after completion: another receipt", client.ErrClaimUsed, "", func(t *testing.T) error {
			hc := submitHand(t, r1, false)
			started(t, hc)
			hc.finish(t)
			rc := hc.receipt(t, func(in *protocol.ReceiptInput) { in.ArtifactHashes = []string{protocol.HashBytes([]byte("x"))} }, nil)
			_, err := hc.c.Complete(bg(t), hc.RunID, rc)
			return err
		}},
		{"claim token after its lease expired", client.ErrClaimExpired, "", func(t *testing.T) error {
			hc := submitHand(t, r1, false)
			var err error
			eventually(15*time.Second, func() bool {
				_, err = hc.c.Heartbeat(bg(t), hc.RunID, client.HeartbeatRequest{})
				if err == nil {
					time.Sleep(4 * time.Second) // no heartbeat for longer than the lease
				}
				return err != nil
			})
			if r, gerr := pp.admin.GetRun(bg(t), hc.RunID); gerr != nil || r.State != protocol.StateFailed {
				t.Errorf("the run whose lease lapsed is %v %v, want failed", r, gerr)
			}
			return err
		}},
		{"claim token used on another run", client.ErrForbidden, "", func(t *testing.T) error {
			a := submitHand(t, r1, false)
			b := submitHand(t, r2, false)
			_, err := a.c.Heartbeat(bg(t), b.RunID, client.HeartbeatRequest{})
			return err
		}},
		{"claim token reading another run's blob", client.ErrForbidden, "", func(t *testing.T) error {
			a := submitHand(t, r1, false)
			b := submitHand(t, r2, false)
			out, err := newClient(t, pp.url, b.ClaimToken).PutBlob(bg(t), []byte("output of run b "+b.RunID))
			if err != nil {
				t.Fatal(err)
			}
			_, err = a.c.GetBlob(bg(t), out)
			return err
		}},
		// --- events ---
		{"events of another run's chain", client.ErrChainRejected, "", func(t *testing.T) error {
			a := submitHand(t, r1, false)
			b := submitHand(t, r2, false)
			e := b.next(t, protocol.CommandExecuted{ArgvHash: protocol.HashBytes([]byte("b")), ExitCode: 0})
			_, err := a.c.AppendEvents(bg(t), a.RunID, []protocol.ChainedEvent{e})
			return err
		}},
		{"event with a forged prev", client.ErrChainRejected, "", func(t *testing.T) error {
			hc := submitHand(t, r1, false)
			last := hc.events[len(hc.events)-1]
			last.Hash = protocol.HashBytes([]byte("not the head"))
			e, err := protocol.NextEvent(&last, "", protocol.NewEvent(protocol.RunCompleted{}), time.Now())
			if err != nil {
				t.Fatal(err)
			}
			_, err = hc.c.AppendEvents(bg(t), hc.RunID, []protocol.ChainedEvent{e})
			return err
		}},
		{"event whose hash does not match its content", client.ErrChainRejected, "", func(t *testing.T) error {
			hc := submitHand(t, r1, false)
			e := hc.next(t, protocol.CommandExecuted{ArgvHash: protocol.HashBytes([]byte("a")), ExitCode: 0})
			e.Event = protocol.NewEvent(protocol.CommandExecuted{ArgvHash: protocol.HashBytes([]byte("a")), ExitCode: 1})
			_, err := hc.c.AppendEvents(bg(t), hc.RunID, []protocol.ChainedEvent{e})
			return err
		}},
		{"event with a seq gap", client.ErrChainRejected, "", func(t *testing.T) error {
			hc := submitHand(t, r1, false)
			last := hc.events[len(hc.events)-1]
			last.Seq++
			e, err := protocol.NextEvent(&last, "", protocol.NewEvent(protocol.RunCompleted{}), time.Now())
			if err != nil {
				t.Fatal(err)
			}
			_, err = hc.c.AppendEvents(bg(t), hc.RunID, []protocol.ChainedEvent{e})
			return err
		}},
		{"replayed seq with other content (a fork)", client.ErrChainRejected, "", func(t *testing.T) error {
			hc := submitHand(t, r1, false)
			base := hc.events
			if err := hc.post(t, protocol.CommandExecuted{ArgvHash: protocol.HashBytes([]byte("1")), ExitCode: 0}); err != nil {
				t.Fatal(err)
			}
			fork, err := protocol.NextEvent(&base[len(base)-1], "", protocol.NewEvent(protocol.CommandExecuted{ArgvHash: protocol.HashBytes([]byte("2")), ExitCode: 0}), time.Now())
			if err != nil {
				t.Fatal(err)
			}
			_, err = hc.c.AppendEvents(bg(t), hc.RunID, []protocol.ChainedEvent{fork})
			return err
		}},
		{"event type only the plane writes (secret.released)", client.ErrChainRejected, "", func(t *testing.T) error {
			hc := submitHand(t, r1, false)
			return hc.post(t, protocol.SecretReleased{Name: secretEnv, Scope: "pool:hand"})
		}},
		{"event after the terminal event", client.ErrChainRejected, "", func(t *testing.T) error {
			hc := submitHand(t, r1, false)
			if err := hc.post(t, protocol.RunCompleted{}); err != nil {
				t.Fatal(err)
			}
			return hc.post(t, protocol.FileChanged{Path: "after.txt", ContentHash: protocol.HashBytes(nil)})
		}},
		// --- receipts ---
		{"receipt signed by an unenrolled key", client.ErrReceiptRejected, protocol.CheckRunnerSignature, func(t *testing.T) error {
			hc := submitHand(t, r1, false)
			started(t, hc)
			if err := hc.post(t, protocol.RunCompleted{}); err != nil {
				t.Fatal(err)
			}
			_, err := hc.c.Complete(bg(t), hc.RunID, hc.receipt(t, nil, attacker))
			return err
		}},
		{"receipt naming an unenrolled key", client.ErrReceiptRejected, protocol.CheckRunnerKey, func(t *testing.T) error {
			hc := submitHand(t, r1, false)
			if err := hc.post(t, protocol.RunCompleted{}); err != nil {
				t.Fatal(err)
			}
			rc := hc.receipt(t, func(in *protocol.ReceiptInput) { in.Runner.KeyID = attacker.Public().ID() }, attacker)
			_, err := hc.c.Complete(bg(t), hc.RunID, rc)
			return err
		}},
		{"receipt with another runner's key id", client.ErrReceiptRejected, protocol.CheckRunnerKey, func(t *testing.T) error {
			hc := submitHand(t, r1, false)
			if err := hc.post(t, protocol.RunCompleted{}); err != nil {
				t.Fatal(err)
			}
			rc := hc.receipt(t, func(in *protocol.ReceiptInput) { in.Runner.KeyID = r2.key.Public().ID() }, r2.key)
			_, err := hc.c.Complete(bg(t), hc.RunID, rc)
			return err
		}},
		{"receipt naming another runner", client.ErrReceiptRejected, protocol.CheckRunnerKey, func(t *testing.T) error {
			hc := submitHand(t, r1, false)
			if err := hc.post(t, protocol.RunCompleted{}); err != nil {
				t.Fatal(err)
			}
			rc := hc.receipt(t, func(in *protocol.ReceiptInput) { in.Runner.RunnerID = r2.id; in.Runner.KeyID = r2.key.Public().ID() }, r2.key)
			_, err := hc.c.Complete(bg(t), hc.RunID, rc)
			return err
		}},
		{"receipt carrying a forged plane countersignature", client.ErrReceiptRejected, protocol.CheckRunnerSignature, func(t *testing.T) error {
			hc := submitHand(t, r1, false)
			if err := hc.post(t, protocol.RunCompleted{}); err != nil {
				t.Fatal(err)
			}
			rc := hc.receipt(t, nil, nil)
			if err := rc.Sign(attacker, protocol.SignerPlane); err != nil {
				t.Fatal(err)
			}
			_, err := hc.c.Complete(bg(t), hc.RunID, rc)
			return err
		}},
		{"receipt whose events head is not the chain's", client.ErrReceiptRejected, protocol.CheckEventChain, func(t *testing.T) error {
			hc := submitHand(t, r1, false)
			started(t, hc)
			if err := hc.post(t, protocol.RunCompleted{}); err != nil {
				t.Fatal(err)
			}
			// A receipt built from a chain one event shorter, with a
			// terminal event the plane never stored.
			short := append([]protocol.ChainedEvent(nil), hc.events[:len(hc.events)-2]...)
			e, err := protocol.NextEvent(&short[len(short)-1], "", protocol.NewEvent(protocol.RunCompleted{}), time.Now())
			if err != nil {
				t.Fatal(err)
			}
			rc := hc.receipt(t, func(in *protocol.ReceiptInput) { in.Events = append(short, e) }, nil)
			_, err = hc.c.Complete(bg(t), hc.RunID, rc)
			return err
		}},
		{"receipt hiding a released secret", client.ErrReceiptRejected, protocol.CheckSecretsReleased, func(t *testing.T) error {
			hc := submitHand(t, r1, true)
			if len(hc.Secrets) != 1 || hc.Secrets[0].Value != w.secret {
				t.Fatalf("the claim did not release the secret: %+v", len(hc.Secrets))
			}
			if err := hc.post(t, protocol.RunCompleted{}); err != nil {
				t.Fatal(err)
			}
			rc := hc.receipt(t, nil, nil)
			rc.SecretsReleased = []protocol.SecretRelease{}
			rc.Signatures = nil
			if err := rc.Sign(r1.key, protocol.SignerRunner); err != nil {
				t.Fatal(err)
			}
			_, err := hc.c.Complete(bg(t), hc.RunID, rc)
			return err
		}},
		{"receipt hiding a blocked host", client.ErrReceiptRejected, protocol.CheckNetworkAccessed, func(t *testing.T) error {
			hc := submitHand(t, r1, false)
			if err := hc.post(t, protocol.NetworkConnected{Host: "exfil.example", Decision: "blocked"}, protocol.RunCompleted{}); err != nil {
				t.Fatal(err)
			}
			rc := hc.receipt(t, nil, nil)
			rc.NetworkAccessed = []protocol.NetworkAccess{}
			rc.Signatures = nil
			if err := rc.Sign(r1.key, protocol.SignerRunner); err != nil {
				t.Fatal(err)
			}
			_, err := hc.c.Complete(bg(t), hc.RunID, rc)
			return err
		}},
		{"receipt whose status contradicts the chain", client.ErrReceiptRejected, protocol.CheckTerminalStatus, func(t *testing.T) error {
			hc := submitHand(t, r1, false)
			if err := hc.post(t, protocol.RunFailed{Failure: protocol.FailureSessionFailed, Message: "boom"}); err != nil {
				t.Fatal(err)
			}
			rc := hc.receipt(t, nil, nil)
			rc.Status = protocol.StateCompleted
			rc.Signatures = nil
			if err := rc.Sign(r1.key, protocol.SignerRunner); err != nil {
				t.Fatal(err)
			}
			_, err := hc.c.Complete(bg(t), hc.RunID, rc)
			return err
		}},
		// --- tokens of the wrong kind, reused or revoked ---
		{"enroll token reused", client.ErrUnauthenticated, "", func(t *testing.T) error {
			et := pp.enrollToken(t, "hand")
			for i := range 2 {
				key, _ := protocol.GenerateKey(nil)
				_, err := newClient(t, pp.url, "").Enroll(bg(t), client.EnrollRequest{EnrollToken: et, PublicKeyPEM: key.Public().PEM(), Pool: "hand", Proof: key.SignMessage(client.EnrollProofMessage(et))})
				if i == 1 {
					return err
				}
				if err != nil {
					t.Fatal(err)
				}
			}
			return nil
		}},
		{"enroll proof signed by another key", client.ErrBadRequest, "", func(t *testing.T) error {
			et := pp.enrollToken(t, "hand")
			key, _ := protocol.GenerateKey(nil)
			_, err := newClient(t, pp.url, "").Enroll(bg(t), client.EnrollRequest{EnrollToken: et, PublicKeyPEM: key.Public().PEM(), Pool: "hand", Proof: attacker.SignMessage(client.EnrollProofMessage(et))})
			// The refused proof did not use the token up.
			if _, err2 := newClient(t, pp.url, "").Enroll(bg(t), client.EnrollRequest{EnrollToken: et, PublicKeyPEM: key.Public().PEM(), Pool: "hand", Proof: key.SignMessage(client.EnrollProofMessage(et))}); err2 != nil {
				t.Errorf("the token was used up by a refused proof: %v", err2)
			}
			return err
		}},
		{"runner token used as a principal token", client.ErrForbidden, "", func(t *testing.T) error {
			_, err := newClient(t, pp.url, r1.token).ListRuns(bg(t), client.ListRunsOptions{})
			return err
		}},
		{"runner token submitting a run", client.ErrForbidden, "", func(t *testing.T) error {
			_, err := newClient(t, pp.url, r1.token).SubmitRun(bg(t), client.RunRequest{Agent: protocol.AgentSpec{Kind: protocol.AgentCommand}, Prompt: "x", Pool: "hand", Workspace: w.ws})
			return err
		}},
		{"claim token used as a principal token", client.ErrForbidden, "", func(t *testing.T) error {
			hc := submitHand(t, r1, false)
			_, err := hc.c.ListRuns(bg(t), client.ListRunsOptions{})
			return err
		}},
		{"principal token claiming work", client.ErrForbidden, "", func(t *testing.T) error {
			_, err := reqC.Claim(bg(t), client.ClaimRequest{Pool: "hand"})
			return err
		}},
		{"revoked runner claiming", client.ErrUnauthenticated, "", func(t *testing.T) error {
			r3 := enrollHand(t, pp, "hand")
			if err := pp.admin.RevokeRunner(bg(t), r3.id); err != nil {
				t.Fatal(err)
			}
			_, err := r3.c.Claim(bg(t), client.ClaimRequest{Pool: "hand"})
			return err
		}},
		{"made-up token", client.ErrUnauthenticated, "", func(t *testing.T) error {
			_, err := newClient(t, pp.url, "wct_"+strings.Repeat("A", 43)).Heartbeat(bg(t), "run_x", client.HeartbeatRequest{})
			return err
		}},
		{"requester reading another requester's run", client.ErrForbidden, "", func(t *testing.T) error {
			hc := submitHand(t, r1, false)
			other := newClient(t, pp.url, pp.principal(t, "other@test", client.RoleRequester))
			_, err := other.GetRun(bg(t), hc.RunID)
			return err
		}},
		// --- content and workspaces ---
		{"blob whose bytes do not match its name", client.ErrHashMismatch, "", func(t *testing.T) error {
			return putBlobAs(t, pp.url, w.reqToken, protocol.HashBytes([]byte("claimed")), []byte("actual"))
		}},
		{"manifest with a traversal path", client.ErrBadRequest, "", func(t *testing.T) error {
			m := w.ws
			m.UntrackedFiles = []protocol.ManifestFile{{Path: "../../etc/cron.d/pwn", Hash: protocol.HashBytes(nil), Bytes: 0}}
			_, err := reqC.SubmitRun(bg(t), client.RunRequest{Agent: protocol.AgentSpec{Kind: protocol.AgentCommand}, Prompt: "x", Pool: "default", Workspace: m})
			return err
		}},
		{"manifest with a .git path", client.ErrBadRequest, "", func(t *testing.T) error {
			m := w.ws
			m.UntrackedFiles = []protocol.ManifestFile{{Path: ".git/hooks/pre-commit", Hash: protocol.HashBytes(nil), Bytes: 0}}
			_, err := reqC.SubmitRun(bg(t), client.RunRequest{Agent: protocol.AgentSpec{Kind: protocol.AgentCommand}, Prompt: "x", Pool: "default", Workspace: m})
			return err
		}},
		{"snapshot with a traversal path", client.ErrBadRequest, "", func(t *testing.T) error {
			_, err := reqC.SubmitRun(bg(t), client.RunRequest{Agent: protocol.AgentSpec{Kind: protocol.AgentCommand}, Prompt: "x", Pool: "default",
				Workspace: rawSnapshotManifest(t, reqC, "100644 "+protocol.HashBytes(nil)+" 0\t../escape.txt\n")})
			return err
		}},
		{"snapshot with a .git path", client.ErrBadRequest, "", func(t *testing.T) error {
			_, err := reqC.SubmitRun(bg(t), client.RunRequest{Agent: protocol.AgentSpec{Kind: protocol.AgentCommand}, Prompt: "x", Pool: "default",
				Workspace: rawSnapshotManifest(t, reqC, "100644 "+protocol.HashBytes(nil)+" 0\t.git/config\n")})
			return err
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			refused(t, c.do(t), c.want, c.check)
		})
	}

	// A retried completion with the very receipt that succeeded is
	// answered again (idempotent), not refused.
	t.Run("completion retried with the same receipt", func(t *testing.T) {
		hc := submitHand(t, r1, false)
		started(t, hc)
		if err := hc.post(t, protocol.RunCompleted{}); err != nil {
			t.Fatal(err)
		}
		rc := hc.receipt(t, nil, nil)
		first, err := hc.c.Complete(bg(t), hc.RunID, rc)
		if err != nil {
			t.Fatal(err)
		}
		again, err := hc.c.Complete(bg(t), hc.RunID, rc)
		if err != nil {
			t.Fatalf("retried completion: %v", err)
		}
		h1, _ := first.Hash()
		h2, _ := again.Hash()
		if h1 != h2 {
			t.Fatal("the retried completion returned another receipt")
		}
	})

	// Workspaces only the runner's materialization can refuse: a symlink
	// that leads out of the workspace, and a file written through it.
	t.Run("symlink escapes refused at materialization", func(t *testing.T) {
		rn := w.startRunner("forged-runner", 1)
		outside := filepath.Join(suiteDir(t, "outside"), "pwned")
		rel, err := filepath.Rel("/", outside)
		if err != nil {
			t.Fatal(err)
		}
		target := strings.Repeat("../", 12) + filepath.Dir(rel)
		for _, snap := range []string{
			// link -> a directory outside the workspace
			"120000 " + protocol.HashBytes([]byte(target)) + " " + fmt.Sprint(len(target)) + "\tlink\n",
			// link -> outside, and a file "through" it
			"120000 " + protocol.HashBytes([]byte(target)) + " " + fmt.Sprint(len(target)) + "\tlink\n" +
				"100644 " + protocol.HashBytes([]byte("pwned\n")) + " 6\tlink/pwned\n",
		} {
			if _, err := reqC.PutBlob(ctx, []byte(target)); err != nil {
				t.Fatal(err)
			}
			if _, err := reqC.PutBlob(ctx, []byte("pwned\n")); err != nil {
				t.Fatal(err)
			}
			m := rawSnapshotManifest(t, reqC, snap)
			resp, err := reqC.SubmitRun(ctx, client.RunRequest{Agent: protocol.AgentSpec{Kind: protocol.AgentCommand}, Prompt: "cat link/pwned; ls link", Pool: "default", Workspace: m})
			if errors.Is(err, client.ErrBadRequest) {
				t.Logf("refused at submission: %v", err)
				continue
			}
			if err != nil {
				t.Fatal(err)
			}
			end, err := w.waitEnd(ctx, pp.admin, resp.Run.ID, 60*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if end.State != protocol.StateFailed || end.Failure == nil || !strings.Contains(end.Failure.Message, "outside the workspace") && !strings.Contains(end.Failure.Message, "symlink") {
				t.Errorf("a workspace with an escaping symlink ended %s %+v", end.State, end.Failure)
			} else {
				t.Logf("refused at materialization: %s: %s", end.Failure.Class, end.Failure.Message)
			}
			if _, err := os.Lstat(outside); err == nil {
				t.Errorf("materialization wrote %s outside the workspace", outside)
			}
		}
		rn.stop(20 * time.Second)
	})

	// Bundles tampered with after the fact: offline verification with the
	// plane key pinned refuses each, naming the check, and so does the
	// real `warrant verify`.
	t.Run("tampered bundles refused offline", func(t *testing.T) {
		hc := submitHand(t, r1, false)
		started(t, hc)
		hc.finish(t)
		_, raw, err := pp.admin.Bundle(ctx, hc.RunID)
		if err != nil {
			t.Fatal(err)
		}
		trust := protocol.NewTrustStore()
		trust.Add(protocol.SignerPlane, pp.key)
		trust.Add(protocol.SignerRunner, r1.key.Public())
		parse := func() *protocol.Bundle {
			b, err := protocol.ParseBundle(raw)
			if err != nil {
				t.Fatal(err)
			}
			return b
		}
		if rep := protocol.VerifyBundle(parse(), trust); !rep.Trusted() {
			t.Fatalf("the honest bundle does not verify: %v", rep.Err())
		}
		attackerRunner, _ := protocol.GenerateKey(nil)
		tampered := []struct {
			name    string
			want    string // a check that must fail
			trusted bool   // whether only pinning catches it (the bundle is internally valid)
			edit    func(b *protocol.Bundle)
		}{
			{"runner key swapped for another runner's", protocol.CheckRunnerKey, false, func(b *protocol.Bundle) {
				b.Keys.RunnerPublicKeyPEM = r2.key.Public().PEM()
			}},
			{"plane key swapped for the attacker's", protocol.CheckContractSignature, false, func(b *protocol.Bundle) {
				b.Keys.PlanePublicKeyPEM = attacker.Public().PEM()
			}},
			{"everything re-signed with the attacker's keys", protocol.CheckPinnedKeys, true, func(b *protocol.Bundle) {
				b.Contract.Signatures = []protocol.Signature{}
				if err := b.Contract.Sign(attacker, protocol.SignerPlane); err != nil {
					t.Fatal(err)
				}
				b.Receipt.Runner.KeyID = attackerRunner.Public().ID()
				b.Receipt.Signatures = []protocol.Signature{}
				if err := b.Receipt.Sign(attackerRunner, protocol.SignerRunner); err != nil {
					t.Fatal(err)
				}
				if err := b.Receipt.Sign(attacker, protocol.SignerPlane); err != nil {
					t.Fatal(err)
				}
				b.Keys.PlanePublicKeyPEM = attacker.Public().PEM()
				b.Keys.RunnerPublicKeyPEM = attackerRunner.Public().PEM()
			}},
			{"an event's exit code changed", protocol.CheckEventChain, false, func(b *protocol.Bundle) {
				for i, e := range b.Events {
					if e.Event.Type() == protocol.EventCommandExecuted {
						b.Events[i].Event = protocol.NewEvent(protocol.CommandExecuted{ArgvHash: protocol.HashBytes([]byte("argv")), ExitCode: 1})
					}
				}
			}},
			{"plane countersignature removed", protocol.CheckPlaneCountersign, false, func(b *protocol.Bundle) {
				b.Receipt.Signatures = b.Receipt.Signatures[:1]
			}},
		}
		dir := suiteDir(t, "tampered")
		for _, tc := range tampered {
			b := parse()
			tc.edit(b)
			rep := protocol.VerifyBundle(b, trust)
			failed := failedChecks(rep)
			if rep.Trusted() || !slices.Contains(failed, tc.want) || rep.Valid() != tc.trusted {
				t.Errorf("%s: trusted=%v valid=%v failed checks %v, want %s failed", tc.name, rep.Trusted(), rep.Valid(), failed, tc.want)
				continue
			}
			data, err := b.MarshalJSON()
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-")+".bundle.json")
			if err := os.WriteFile(path, data, 0o600); err != nil {
				t.Fatal(err)
			}
			tf, _ := json.Marshal(trust.File())
			if err := os.WriteFile(path+".trust.json", tf, 0o600); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(warrantBinary(t), "verify", "--trust", path+".trust.json", path)
			cmd.Env = append(os.Environ(), "WARRANT_CONFIG_DIR="+dir)
			out, err := cmd.CombinedOutput()
			if err == nil || !strings.Contains(string(out), tc.want) {
				t.Errorf("%s: warrant verify exited %v and did not name %s:\n%s", tc.name, err, tc.want, out)
			}
			t.Logf("%s: refused, failed checks %v", tc.name, failed)
		}
	})
}

// putBlobAs uploads data under a name of the caller's choosing.
func putBlobAs(t *testing.T, url, token, hash string, data []byte) error {
	t.Helper()
	c := newClient(t, url, token)
	_, err := c.PutBlobs(bg(t), []client.BlobUpload{{Hash: hash, Size: int64(len(data)), Open: func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(data)), nil
	}}})
	return err
}

// rawSnapshotManifest uploads a warrant.snapshot.v1 made of the given
// entry lines verbatim (no validation on this side) and returns a manifest
// naming it.
func rawSnapshotManifest(t *testing.T, c *client.Client, entries string) protocol.Manifest {
	t.Helper()
	h, err := c.PutBlob(context.Background(), []byte(protocol.SnapshotVersion+"\n"+entries))
	if err != nil {
		t.Fatal(err)
	}
	return protocol.Manifest{
		Version: protocol.VersionManifest, BaseRef: strings.Repeat("0", 40), BundleHash: h,
		UntrackedFiles: []protocol.ManifestFile{}, DeniedPatterns: []string{}, DeniedPaths: []string{}, Format: protocol.SnapshotVersion,
	}
}
