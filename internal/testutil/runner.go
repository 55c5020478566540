package testutil

import (
	"context"
	"testing"
	"time"

	"warrant.dev/warrant/client"
	"warrant.dev/warrant/protocol"
)

// Runner is an enrolled runner driven by hand through the client SDK: it
// claims runs, appends chained events and posts signed receipts, so tests
// can take runs to any end without the real runner.
type Runner struct {
	ID     string
	Pool   string
	Key    *protocol.PrivateKey
	Client *client.Client // authenticated with the runner token

	tp *TestPlane
}

// EnrollRunner enrolls a new runner (fresh key) into pool with tiers
// (default "process").
func (tp *TestPlane) EnrollRunner(pool string, tiers ...string) *Runner {
	tp.t.Helper()
	key, err := protocol.GenerateKey(nil)
	if err != nil {
		tp.t.Fatal(err)
	}
	et := tp.EnrollToken(pool)
	resp, err := tp.Client("").Enroll(context.Background(), client.EnrollRequest{
		EnrollToken: et, PublicKeyPEM: key.Public().PEM(), Pool: pool, Name: "test-runner", Tiers: tiers,
		Proof: key.SignMessage(client.EnrollProofMessage(et)),
	})
	if err != nil {
		tp.t.Fatalf("enroll runner: %v", err)
	}
	return &Runner{ID: resp.RunnerID, Pool: pool, Key: key, Client: tp.Client(resp.RunnerToken), tp: tp}
}

// Claimed is a claim the Runner holds.
type Claimed struct {
	*client.Claim
	Client *client.Client // authenticated with the claim token
	Events []protocol.ChainedEvent

	r *Runner
}

// Claim long-polls for a run (nil when none arrived within wait).
func (r *Runner) Claim(t testing.TB, wait time.Duration, tiers ...string) *Claimed {
	t.Helper()
	if len(tiers) == 0 {
		tiers = []string{protocol.IsolationProcess}
	}
	c, err := r.Client.Claim(context.Background(), client.ClaimRequest{Pool: r.Pool, Tiers: tiers, WaitSeconds: int(wait / time.Second)})
	if err != nil {
		t.Fatalf("claim: %v", err)
	}
	if c == nil {
		return nil
	}
	return &Claimed{Claim: c, Client: r.tp.Client(c.ClaimToken), Events: c.Events, r: r}
}

// MustClaim claims a run or fails the test.
func (r *Runner) MustClaim(t testing.TB) *Claimed {
	t.Helper()
	c := r.Claim(t, 5*time.Second)
	if c == nil {
		t.Fatal("no run to claim")
	}
	return c
}

// Append builds and posts events after the chain's head.
func (c *Claimed) Append(t testing.TB, bodies ...protocol.EventPayload) {
	t.Helper()
	var batch []protocol.ChainedEvent
	chain := c.Events
	for _, b := range bodies {
		next, err := protocol.NextEvent(&chain[len(chain)-1], "", protocol.NewEvent(b), c.r.tp.now())
		if err != nil {
			t.Fatal(err)
		}
		batch = append(batch, next)
		chain = append(chain, next)
	}
	if _, err := c.Client.AppendEvents(context.Background(), c.RunID, batch); err != nil {
		t.Fatalf("append events: %v", err)
	}
	c.Events = chain
}

// Receipt builds the runner-signed receipt of the chain so far (its last
// event must be terminal).
func (c *Claimed) Receipt(t testing.TB, diffHash string, artifacts ...string) *protocol.Receipt {
	t.Helper()
	rc, err := protocol.BuildReceipt(protocol.ReceiptInput{
		Contract: c.Contract, Events: c.Events, DiffHash: diffHash, ArtifactHashes: artifacts,
		Runner: protocol.RunnerIdentity{RunnerID: c.r.ID, KeyID: c.r.Key.Public().ID(), Pool: c.r.Pool, AttestationTier: protocol.AttestationMock, Isolation: c.Contract.EffectiveIsolation()},
	})
	if err != nil {
		t.Fatalf("build receipt: %v", err)
	}
	if err := rc.Sign(c.r.Key, protocol.SignerRunner); err != nil {
		t.Fatal(err)
	}
	return rc
}

// Finish appends terminal (run.completed, run.failed or run.cancelled),
// posts the signed receipt and returns the countersigned one.
func (c *Claimed) Finish(t testing.TB, terminal protocol.EventPayload) *protocol.Receipt {
	t.Helper()
	c.Append(t, terminal)
	out, err := c.Client.Complete(context.Background(), c.RunID, c.Receipt(t, ""))
	if err != nil {
		t.Fatalf("complete: %v", err)
	}
	return out
}

func (tp *TestPlane) now() time.Time {
	if tp.Clock != nil {
		return tp.Clock.Now()
	}
	return time.Now()
}
