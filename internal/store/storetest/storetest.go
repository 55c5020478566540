// Package storetest is the conformance suite every store.Store and
// store.BlobStore implementation must pass. It pins behaviour, not
// storage details: what each method returns, which sentinel errors it
// reports, that multi-step operations are atomic (a failed transaction
// writes nothing), and that claims and chain appends stay correct under
// concurrency.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"warrant.dev/warrant/internal/store"
)

// t0 is the suite's fixed "now"; times are whole milliseconds, as stores
// keep them.
var t0 = time.UnixMilli(1_800_000_000_000).UTC()

func at(sec int) time.Time { return t0.Add(time.Duration(sec) * time.Second) }

// Run runs the conformance suite. open returns a fresh, empty store for
// each subtest; the suite closes it.
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s store.Store)
	}{
		{"Principals", testPrincipals},
		{"Tokens", testTokens},
		{"Enrollment", testEnrollment},
		{"Runners", testRunners},
		{"PolicyAndKeys", testPolicyAndKeys},
		{"Secrets", testSecrets},
		{"CreateAndGetRun", testCreateAndGetRun},
		{"CreateRunFailedWritesNothing", testCreateRunAtomic},
		{"ListRuns", testListRuns},
		{"RunsUpdatedSince", testRunsUpdatedSince},
		{"ApproveAndEndPending", testApprove},
		{"Cancel", testCancel},
		{"Claim", testClaim},
		{"ClaimSkipsAndFails", testClaimFail},
		{"ClaimFailedDecisionWritesNothing", testClaimAtomic},
		{"ClaimConcurrent", testClaimConcurrent},
		{"ClaimTokenLifecycle", testClaimToken},
		{"Heartbeat", testHeartbeat},
		{"AppendEvents", testAppend},
		{"AppendConcurrent", testAppendConcurrent},
		{"Complete", testComplete},
		{"ExpireLeases", testExpireLeases},
		{"ExpireContractsAndApprovals", testExpireContracts},
		{"BlobIndex", testBlobIndex},
		{"Retention", testRetention},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := open(t)
			t.Cleanup(func() { s.Close() })
			tc.fn(t, s)
		})
	}
}

// --- fixtures ---

func hashOf(parts ...any) string {
	s := fmt.Sprint(parts...)
	h := make([]byte, 0, 64)
	for i := 0; len(h) < 64; i++ {
		h = fmt.Appendf(h, "%x", fnv(s+fmt.Sprint(i)))
	}
	return string(h[:64])
}

func fnv(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
}

// chain builds n synthetic events of a run starting at seq from, linked to
// prev. The store checks linkage (seq, prev), not hashes.
func chain(runID, prev string, from int64, types ...string) []store.Event {
	var out []store.Event
	for i, typ := range types {
		seq := from + int64(i)
		h := hashOf(runID, seq, typ, prev)
		out = append(out, store.Event{RunID: runID, Seq: seq, Hash: h, Prev: prev, Type: typ, Data: []byte(fmt.Sprintf(`{"seq":%d,"type":%q}`, seq, typ))})
		prev = h
	}
	return out
}

func mustNil(t *testing.T, err error, what string) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func mustIs(t *testing.T, err, target error, what string) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("%s: got error %v, want %v", what, err, target)
	}
}

var ctx = context.Background()

func newRun(id, pool string, created time.Time) store.Run {
	return store.Run{
		ID: id, State: store.StateCreated, Pool: pool, AgentKind: "mock", Isolation: "process", Prompt: "do " + id,
		RequesterID: "prn_req", RequesterName: "req@example.com", CreatedAt: created, UpdatedAt: created,
		Details: []byte(`{"k":"` + id + `"}`), Contract: []byte(`{"contract":"` + id + `"}`), ContractHash: hashOf("contract", id),
		ExpiresAt: created.Add(time.Hour), SecretNames: []string{},
	}
}

// queue creates a queued run with the plane's first two events.
func queue(t *testing.T, s store.Store, id, pool string, created time.Time) store.Run {
	t.Helper()
	r := newRun(id, pool, created)
	mustNil(t, s.CreateRun(ctx, r, chain(id, r.ContractHash, 0, "run.created", "policy.evaluated")), "create run "+id)
	got, err := s.GetRun(ctx, id)
	mustNil(t, err, "get run")
	return got
}

func claimAll(ev []store.Event) store.ClaimFunc {
	return func(run store.Run, head store.Event, secrets []store.Secret) (store.ClaimDecision, error) {
		return store.ClaimDecision{Events: chain(run.ID, head.Hash, head.Seq+1, "run.claimed")}, nil
	}
}

func claim(t *testing.T, s store.Store, pool, runner, token string, now time.Time) (store.Run, []store.Event) {
	t.Helper()
	r, ev, err := s.ClaimNext(ctx, store.ClaimRequest{Pool: pool, Tiers: []string{"process"}, RunnerID: runner, TokenHash: token, Now: now, LeaseUntil: now.Add(30 * time.Second)}, claimAll(nil))
	mustNil(t, err, "claim")
	return r, ev
}

func endWith(failure string) store.EndFunc {
	return func(run store.Run, head *store.Event) (store.End, error) {
		var ev []store.Event
		if head != nil && !store.IsTerminalEvent(head.Type) {
			ev = chain(run.ID, head.Hash, head.Seq+1, "run.failed")
		}
		return store.End{Events: ev, Failure: &store.Failure{Class: failure, Message: failure + " message"}}, nil
	}
}

// --- identity ---

func testPrincipals(t *testing.T, s store.Store) {
	p := store.Principal{ID: "prn_1", Name: "alice", Kind: "human", Role: "admin", CreatedAt: at(0)}
	mustNil(t, s.CreatePrincipal(ctx, p, store.Token{ID: "tok_1", Hash: hashOf("t1"), CreatedAt: at(0)}), "create")
	got, err := s.GetPrincipal(ctx, "prn_1")
	mustNil(t, err, "get")
	if got != p {
		t.Fatalf("get principal = %+v, want %+v", got, p)
	}
	// Same name: conflict. Same token hash under a new name: conflict, and
	// the failed transaction leaves no principal behind.
	mustIs(t, s.CreatePrincipal(ctx, store.Principal{ID: "prn_2", Name: "alice", Kind: "human", Role: "auditor", CreatedAt: at(1)}, store.Token{ID: "tok_2", Hash: hashOf("t2"), CreatedAt: at(1)}), store.ErrConflict, "duplicate name")
	mustIs(t, s.CreatePrincipal(ctx, store.Principal{ID: "prn_3", Name: "bob", Kind: "service", Role: "auditor", CreatedAt: at(1)}, store.Token{ID: "tok_3", Hash: hashOf("t1"), CreatedAt: at(1)}), store.ErrConflict, "duplicate token hash")
	_, err = s.GetPrincipal(ctx, "prn_3")
	mustIs(t, err, store.ErrNotFound, "principal of a failed create")
	_, _, err = s.LookupToken(ctx, hashOf("t2"))
	mustIs(t, err, store.ErrNotFound, "token of a failed create")
	mustNil(t, s.CreatePrincipal(ctx, store.Principal{ID: "prn_4", Name: "carol", Kind: "human", Role: "requester", CreatedAt: at(2)}, store.Token{ID: "tok_4", Hash: hashOf("t4"), CreatedAt: at(2)}), "create carol")
	list, err := s.ListPrincipals(ctx)
	mustNil(t, err, "list")
	if len(list) != 2 || list[0].ID != "prn_1" || list[1].ID != "prn_4" {
		t.Fatalf("list = %+v, want alice then carol", list)
	}
	_, err = s.GetPrincipal(ctx, "prn_missing")
	mustIs(t, err, store.ErrNotFound, "get missing")
	mustNil(t, s.DisablePrincipal(ctx, "prn_4", at(5)), "disable")
	tok, pr, err := s.LookupToken(ctx, hashOf("t4"))
	mustNil(t, err, "lookup after disable")
	if !pr.DisabledAt.Equal(at(5)) || !tok.RevokedAt.Equal(at(5)) {
		t.Fatalf("after disable: principal disabled %v, token revoked %v; want both %v", pr.DisabledAt, tok.RevokedAt, at(5))
	}
	mustIs(t, s.DisablePrincipal(ctx, "prn_missing", at(5)), store.ErrNotFound, "disable missing")
	mustIs(t, s.CreateToken(ctx, store.Token{ID: "tok_5", PrincipalID: "prn_4", Hash: hashOf("t5"), CreatedAt: at(6)}), store.ErrRevoked, "token for disabled principal")
}

func testTokens(t *testing.T, s store.Store) {
	mustNil(t, s.CreatePrincipal(ctx, store.Principal{ID: "prn_1", Name: "alice", Kind: "human", Role: "admin", CreatedAt: at(0)}, store.Token{ID: "tok_1", Hash: hashOf("t1"), CreatedAt: at(0)}), "create")
	mustNil(t, s.CreateToken(ctx, store.Token{ID: "tok_2", PrincipalID: "prn_1", Hash: hashOf("t2"), CreatedAt: at(1)}), "second token")
	mustIs(t, s.CreateToken(ctx, store.Token{ID: "tok_3", PrincipalID: "prn_nobody", Hash: hashOf("t3"), CreatedAt: at(1)}), store.ErrNotFound, "token for unknown principal")
	mustIs(t, s.CreateToken(ctx, store.Token{ID: "tok_4", PrincipalID: "prn_1", Hash: hashOf("t2"), CreatedAt: at(1)}), store.ErrConflict, "duplicate hash")
	tok, p, err := s.LookupToken(ctx, hashOf("t2"))
	mustNil(t, err, "lookup")
	if tok.ID != "tok_2" || p.ID != "prn_1" || !tok.RevokedAt.IsZero() {
		t.Fatalf("lookup = %+v %+v", tok, p)
	}
	_, _, err = s.LookupToken(ctx, hashOf("nope"))
	mustIs(t, err, store.ErrNotFound, "lookup unknown")
	mustNil(t, s.TouchToken(ctx, "tok_2", at(9)), "touch")
	mustNil(t, s.RevokeToken(ctx, "tok_2", at(10)), "revoke")
	mustNil(t, s.RevokeToken(ctx, "tok_2", at(11)), "revoke again")
	mustIs(t, s.RevokeToken(ctx, "tok_missing", at(10)), store.ErrNotFound, "revoke missing")
	tok, _, err = s.LookupToken(ctx, hashOf("t2"))
	mustNil(t, err, "lookup revoked")
	if !tok.RevokedAt.Equal(at(10)) || !tok.LastUsedAt.Equal(at(9)) {
		t.Fatalf("revoked token = %+v, want revokedAt %v (first revocation kept), lastUsed %v", tok, at(10), at(9))
	}
	all, err := s.ListTokens(ctx, "")
	mustNil(t, err, "list all")
	mine, err := s.ListTokens(ctx, "prn_1")
	mustNil(t, err, "list mine")
	if len(all) != 2 || len(mine) != 2 || mine[0].ID != "tok_1" {
		t.Fatalf("tokens: all %d mine %+v", len(all), mine)
	}
}

func testEnrollment(t *testing.T, s store.Store) {
	mustNil(t, s.CreateEnrollToken(ctx, store.EnrollToken{Hash: hashOf("e1"), Pool: "gpu", CreatedBy: "prn_1", CreatedAt: at(0), ExpiresAt: at(60)}), "enroll token")
	mustIs(t, s.CreateEnrollToken(ctx, store.EnrollToken{Hash: hashOf("e1"), Pool: "gpu", CreatedBy: "prn_1", CreatedAt: at(0), ExpiresAt: at(60)}), store.ErrConflict, "duplicate")
	r := store.Runner{ID: "rnr_1", Name: "box", Pool: "gpu", KeyID: "ed25519:0011223344556677", PublicKeyPEM: "PEM", Tiers: []string{"process", "namespace"}, TokenHash: hashOf("r1"), EnrolledAt: at(1)}
	// Wrong pool: refused, token not used up.
	bad := r
	bad.Pool = "cpu"
	mustIs(t, s.EnrollRunner(ctx, hashOf("e1"), bad, at(1)), store.ErrInvalidState, "wrong pool")
	mustNil(t, s.EnrollRunner(ctx, hashOf("e1"), r, at(1)), "enroll")
	r2 := r
	r2.ID, r2.TokenHash = "rnr_2", hashOf("r2")
	mustIs(t, s.EnrollRunner(ctx, hashOf("e1"), r2, at(2)), store.ErrTokenUsed, "reuse")
	mustIs(t, s.EnrollRunner(ctx, hashOf("unknown"), r2, at(2)), store.ErrNotFound, "unknown")
	mustNil(t, s.CreateEnrollToken(ctx, store.EnrollToken{Hash: hashOf("e2"), Pool: "gpu", CreatedBy: "prn_1", CreatedAt: at(0), ExpiresAt: at(60)}), "enroll token 2")
	mustIs(t, s.EnrollRunner(ctx, hashOf("e2"), r2, at(60)), store.ErrTokenExpired, "expired")
	// Duplicate runner token hash: conflict, and the enroll token stays usable.
	dup := r2
	dup.TokenHash = hashOf("r1")
	mustIs(t, s.EnrollRunner(ctx, hashOf("e3x"), dup, at(2)), store.ErrNotFound, "unknown token")
	mustNil(t, s.CreateEnrollToken(ctx, store.EnrollToken{Hash: hashOf("e3"), Pool: "gpu", CreatedBy: "prn_1", CreatedAt: at(0), ExpiresAt: at(60)}), "enroll token 3")
	mustIs(t, s.EnrollRunner(ctx, hashOf("e3"), dup, at(2)), store.ErrConflict, "duplicate runner token")
	mustNil(t, s.EnrollRunner(ctx, hashOf("e3"), r2, at(3)), "enroll token 3 still usable after a failed enroll")
	got, err := s.LookupRunner(ctx, hashOf("r1"))
	mustNil(t, err, "lookup")
	if got.ID != "rnr_1" || got.Pool != "gpu" || !slices.Equal(got.Tiers, []string{"process", "namespace"}) || !got.EnrolledAt.Equal(at(1)) || got.PublicKeyPEM != "PEM" {
		t.Fatalf("runner = %+v", got)
	}
	_, err = s.LookupRunner(ctx, hashOf("none"))
	mustIs(t, err, store.ErrNotFound, "lookup unknown")
}

func testRunners(t *testing.T, s store.Store) {
	mustNil(t, s.CreateEnrollToken(ctx, store.EnrollToken{Hash: hashOf("e1"), Pool: "p", CreatedBy: "x", CreatedAt: at(0), ExpiresAt: at(600)}), "token")
	mustNil(t, s.EnrollRunner(ctx, hashOf("e1"), store.Runner{ID: "rnr_1", Pool: "p", KeyID: "k", PublicKeyPEM: "PEM", Tiers: []string{"process"}, TokenHash: hashOf("r1"), EnrolledAt: at(1)}, at(1)), "enroll")
	queue(t, s, "run_a", "p", at(2))
	claimed, _ := claim(t, s, "p", "rnr_1", hashOf("c1"), at(3))
	mustNil(t, s.TouchRunner(ctx, "rnr_1", at(4)), "touch")
	mustIs(t, s.TouchRunner(ctx, "rnr_none", at(4)), store.ErrNotFound, "touch missing")
	list, err := s.ListRunners(ctx)
	mustNil(t, err, "list")
	if len(list) != 1 || list[0].InFlight != 1 || !list[0].LastSeenAt.Equal(at(4)) {
		t.Fatalf("runners = %+v, want one with one run in flight", list)
	}
	// Revoking ends the runner's leases now.
	mustNil(t, s.RevokeRunner(ctx, "rnr_1", at(5)), "revoke")
	mustIs(t, s.RevokeRunner(ctx, "rnr_none", at(5)), store.ErrNotFound, "revoke missing")
	r, err := s.GetRunner(ctx, "rnr_1")
	mustNil(t, err, "get")
	if !r.RevokedAt.Equal(at(5)) {
		t.Fatalf("revokedAt = %v", r.RevokedAt)
	}
	_, err = s.GetClaim(ctx, hashOf("c1"), at(5))
	mustIs(t, err, store.ErrLeaseExpired, "claim of a revoked runner")
	expired, err := s.ExpireLeases(ctx, at(5), endWith("session_failed"))
	mustNil(t, err, "expire")
	if len(expired) != 1 || expired[0].ID != claimed.ID {
		t.Fatalf("expired %+v", expired)
	}
	_, err = s.GetRunner(ctx, "rnr_none")
	mustIs(t, err, store.ErrNotFound, "get missing")
}

func testPolicyAndKeys(t *testing.T, s store.Store) {
	_, err := s.CurrentPolicy(ctx)
	mustIs(t, err, store.ErrNotFound, "no policy yet")
	p1 := store.PolicyRecord{Hash: hashOf("p1"), Document: []byte(`{"p":1}`), CreatedAt: at(0)}
	p2 := store.PolicyRecord{Hash: hashOf("p2"), Document: []byte(`{"p":2}`), CreatedAt: at(1)}
	mustNil(t, s.PutPolicy(ctx, p1), "put 1")
	mustNil(t, s.PutPolicy(ctx, p2), "put 2")
	got, err := s.CurrentPolicy(ctx)
	mustNil(t, err, "current")
	if got.Hash != p2.Hash || string(got.Document) != `{"p":2}` || !got.CreatedAt.Equal(at(1)) {
		t.Fatalf("current = %+v", got)
	}
	mustNil(t, s.PutPolicy(ctx, p1), "back to 1")
	got, _ = s.CurrentPolicy(ctx)
	if got.Hash != p1.Hash {
		t.Fatalf("current = %s, want p1", got.Hash)
	}
	k := store.PlaneKey{KeyID: "ed25519:aa", PublicKeyPEM: "PEM", AddedAt: at(0)}
	mustNil(t, s.PutPlaneKey(ctx, k), "put key")
	mustNil(t, s.PutPlaneKey(ctx, k), "put key twice")
	gk, err := s.GetPlaneKey(ctx, "ed25519:aa")
	mustNil(t, err, "get key")
	if gk != k {
		t.Fatalf("key = %+v", gk)
	}
	_, err = s.GetPlaneKey(ctx, "ed25519:bb")
	mustIs(t, err, store.ErrNotFound, "unknown key")
}

func testSecrets(t *testing.T, s store.Store) {
	sec, err := s.PutSecret(ctx, store.Secret{Name: "API", Ciphertext: []byte{1, 2, 3}, CreatedAt: at(0), UpdatedAt: at(0)})
	mustNil(t, err, "put")
	if !sec.CreatedAt.Equal(at(0)) {
		t.Fatalf("put = %+v", sec)
	}
	sec, err = s.PutSecret(ctx, store.Secret{Name: "API", Ciphertext: []byte{4, 5}, CreatedAt: at(9), UpdatedAt: at(9)})
	mustNil(t, err, "replace")
	if !sec.CreatedAt.Equal(at(0)) || !sec.UpdatedAt.Equal(at(9)) {
		t.Fatalf("replace kept %+v, want createdAt %v updatedAt %v", sec, at(0), at(9))
	}
	got, err := s.GetSecret(ctx, "API")
	mustNil(t, err, "get")
	if !slices.Equal(got.Ciphertext, []byte{4, 5}) {
		t.Fatalf("ciphertext = %v", got.Ciphertext)
	}
	_, err = s.PutSecret(ctx, store.Secret{Name: "B", Ciphertext: []byte{9}, CreatedAt: at(1), UpdatedAt: at(1)})
	mustNil(t, err, "put B")
	list, err := s.ListSecrets(ctx)
	mustNil(t, err, "list")
	if len(list) != 2 || list[0].Name != "API" || list[1].Name != "B" || list[0].Ciphertext != nil {
		t.Fatalf("list = %+v (names sorted, no ciphertext)", list)
	}
	mustNil(t, s.DeleteSecret(ctx, "API"), "delete")
	mustIs(t, s.DeleteSecret(ctx, "API"), store.ErrNotFound, "delete twice")
	_, err = s.GetSecret(ctx, "API")
	mustIs(t, err, store.ErrNotFound, "get deleted")
}

// --- runs ---

func testCreateAndGetRun(t *testing.T, s store.Store) {
	r := newRun("run_1", "default", at(0))
	r.SecretNames = []string{"A", "B"}
	ev := chain("run_1", r.ContractHash, 0, "run.created", "policy.evaluated")
	mustNil(t, s.CreateRun(ctx, r, ev), "create")
	mustIs(t, s.CreateRun(ctx, r, chain("run_1", r.ContractHash, 0, "run.created")), store.ErrConflict, "duplicate id")
	got, err := s.GetRun(ctx, "run_1")
	mustNil(t, err, "get")
	want := r
	want.EventCount, want.HeadHash, want.HeadType = 2, ev[1].Hash, "policy.evaluated"
	if !runEqual(got, want) {
		t.Fatalf("get run =\n%+v\nwant\n%+v", got, want)
	}
	events, err := s.ListEvents(ctx, "run_1", -1, 0)
	mustNil(t, err, "events")
	if len(events) != 2 || events[0].Seq != 0 || events[1].Hash != ev[1].Hash || string(events[1].Data) != string(ev[1].Data) || events[1].Type != "policy.evaluated" {
		t.Fatalf("events = %+v", events)
	}
	events, _ = s.ListEvents(ctx, "run_1", 0, 0)
	if len(events) != 1 || events[0].Seq != 1 {
		t.Fatalf("events after 0 = %+v", events)
	}
	events, _ = s.ListEvents(ctx, "run_1", -1, 1)
	if len(events) != 1 || events[0].Seq != 0 {
		t.Fatalf("events limit 1 = %+v", events)
	}
	_, err = s.GetRun(ctx, "run_none")
	mustIs(t, err, store.ErrNotFound, "get missing")
	// A run awaiting approval has no contract and no chain.
	a := newRun("run_2", "default", at(1))
	a.State, a.Contract, a.ContractHash, a.ExpiresAt = store.StateAwaitingApproval, nil, "", time.Time{}
	mustNil(t, s.CreateRun(ctx, a, nil), "create awaiting")
	got, _ = s.GetRun(ctx, "run_2")
	if got.Contract != nil || got.EventCount != 0 || got.State != store.StateAwaitingApproval {
		t.Fatalf("awaiting run = %+v", got)
	}
}

func runEqual(a, b store.Run) bool {
	return a.ID == b.ID && a.State == b.State && a.Pool == b.Pool && a.AgentKind == b.AgentKind && a.Isolation == b.Isolation &&
		a.Prompt == b.Prompt && a.RequesterID == b.RequesterID && a.RequesterName == b.RequesterName &&
		a.CreatedAt.Equal(b.CreatedAt) && a.UpdatedAt.Equal(b.UpdatedAt) && string(a.Details) == string(b.Details) &&
		string(a.Contract) == string(b.Contract) && a.ContractHash == b.ContractHash && a.ExpiresAt.Equal(b.ExpiresAt) &&
		slices.Equal(a.SecretNames, b.SecretNames) && a.RunnerID == b.RunnerID && a.ClaimTokenHash == b.ClaimTokenHash &&
		a.ClaimState == b.ClaimState && a.ClaimedAt.Equal(b.ClaimedAt) && a.LeaseUntil.Equal(b.LeaseUntil) &&
		(a.Cancel == nil) == (b.Cancel == nil) && (a.Failure == nil) == (b.Failure == nil) && string(a.Receipt) == string(b.Receipt) && a.HasReceipt == b.HasReceipt &&
		a.EventCount == b.EventCount && a.HeadHash == b.HeadHash && a.HeadType == b.HeadType
}

func testCreateRunAtomic(t *testing.T, s store.Store) {
	r := newRun("run_1", "default", at(0))
	// The second event does not link: the whole create fails.
	ev := chain("run_1", r.ContractHash, 0, "run.created", "policy.evaluated")
	ev[1].Prev = hashOf("wrong")
	err := s.CreateRun(ctx, r, ev)
	var ce *store.ChainError
	if !errors.As(err, &ce) || ce.Seq != 1 || !errors.Is(err, store.ErrChainConflict) {
		t.Fatalf("create with broken chain: %v, want *ChainError at seq 1", err)
	}
	_, err = s.GetRun(ctx, "run_1")
	mustIs(t, err, store.ErrNotFound, "run of a failed create")
	// The genesis must be the contract hash.
	err = s.CreateRun(ctx, r, chain("run_1", hashOf("not the contract"), 0, "run.created"))
	mustIs(t, err, store.ErrChainConflict, "wrong genesis")
	list, _ := s.ListRuns(ctx, store.RunFilter{})
	if len(list) != 0 {
		t.Fatalf("runs after failed creates: %d", len(list))
	}
}

func testListRuns(t *testing.T, s store.Store) {
	for i := range 7 {
		r := newRun(fmt.Sprintf("run_%d", i), []string{"a", "b"}[i%2], at(i/2)) // pairs share a creation time
		if i == 3 {
			r.AgentKind, r.RequesterID, r.RequesterName = "codex", "prn_other", "other"
		}
		mustNil(t, s.CreateRun(ctx, r, chain(r.ID, r.ContractHash, 0, "run.created")), "create")
	}
	all, err := s.ListRuns(ctx, store.RunFilter{})
	mustNil(t, err, "list")
	var ids []string
	for _, r := range all {
		ids = append(ids, r.ID)
		if r.Contract != nil || r.Receipt != nil || r.HasReceipt {
			t.Fatalf("list rows carry contract/receipt")
		}
	}
	want := []string{"run_6", "run_5", "run_4", "run_3", "run_2", "run_1", "run_0"}
	if !slices.Equal(ids, want) {
		t.Fatalf("order = %v, want %v (newest first, then id descending)", ids, want)
	}
	// Paging with a cursor visits every run once.
	var paged []string
	var cur *store.RunCursor
	for {
		page, err := s.ListRuns(ctx, store.RunFilter{Limit: 3, Before: cur})
		mustNil(t, err, "page")
		for _, r := range page {
			paged = append(paged, r.ID)
		}
		if len(page) < 3 {
			break
		}
		last := page[len(page)-1]
		cur = &store.RunCursor{At: last.CreatedAt, ID: last.ID}
	}
	if !slices.Equal(paged, want) {
		t.Fatalf("paged = %v, want %v", paged, want)
	}
	for _, tc := range []struct {
		f    store.RunFilter
		want int
	}{
		{store.RunFilter{Pool: "a"}, 4},
		{store.RunFilter{Pool: "b"}, 3},
		{store.RunFilter{AgentKind: "codex"}, 1},
		{store.RunFilter{RequesterID: "prn_other"}, 1},
		{store.RunFilter{RequesterName: "req@example.com"}, 6},
		{store.RunFilter{State: store.StateCreated, Pool: "b"}, 3},
		{store.RunFilter{State: store.StateFailed}, 0},
	} {
		got, err := s.ListRuns(ctx, tc.f)
		mustNil(t, err, "filter")
		if len(got) != tc.want {
			t.Errorf("filter %+v: %d runs, want %d", tc.f, len(got), tc.want)
		}
	}
	counts, err := s.CountRunsByState(ctx)
	mustNil(t, err, "count")
	if counts[store.StateCreated] != 7 || len(counts) != 1 {
		t.Fatalf("counts = %v", counts)
	}
}

func testRunsUpdatedSince(t *testing.T, s store.Store) {
	for i := range 5 {
		queue(t, s, fmt.Sprintf("run_%d", i), "p", at(i))
	}
	// Cancelling run_0 moves its UpdatedAt to at(10).
	_, err := s.CancelRun(ctx, "run_0", store.Cancellation{ActorKind: "human", ActorID: "x", At: at(10)}, at(10), endWith("x"))
	mustNil(t, err, "cancel")
	var got []string
	var cur *store.RunCursor
	for {
		page, err := s.RunsUpdatedSince(ctx, at(2), cur, 2)
		mustNil(t, err, "since")
		for _, r := range page {
			got = append(got, r.ID)
			if r.Contract == nil {
				t.Fatalf("export rows need the contract")
			}
		}
		if len(page) < 2 {
			break
		}
		cur = &store.RunCursor{At: page[len(page)-1].UpdatedAt, ID: page[len(page)-1].ID}
	}
	if want := []string{"run_2", "run_3", "run_4", "run_0"}; !slices.Equal(got, want) {
		t.Fatalf("updated since = %v, want %v", got, want)
	}
}

func testApprove(t *testing.T, s store.Store) {
	a := newRun("run_1", "p", at(0))
	a.State, a.Contract, a.ContractHash, a.ExpiresAt = store.StateAwaitingApproval, nil, "", time.Time{}
	mustNil(t, s.CreateRun(ctx, a, nil), "create")
	ch := hashOf("issued")
	// A bad chain fails the approval and writes nothing.
	_, err := s.ApproveRun(ctx, "run_1", store.Issue{Contract: []byte("c"), ContractHash: ch, ExpiresAt: at(3600), Events: chain("run_1", hashOf("other"), 0, "run.created")}, at(5))
	mustIs(t, err, store.ErrChainConflict, "approve with bad chain")
	got, _ := s.GetRun(ctx, "run_1")
	if got.State != store.StateAwaitingApproval || got.Contract != nil {
		t.Fatalf("failed approval changed the run: %+v", got)
	}
	ev := chain("run_1", ch, 0, "run.created", "policy.evaluated", "consent.requested", "consent.granted")
	r, err := s.ApproveRun(ctx, "run_1", store.Issue{Details: []byte(`{"approved":true}`), Contract: []byte("c"), ContractHash: ch, ExpiresAt: at(3600), SecretNames: []string{"S"}, Events: ev}, at(5))
	mustNil(t, err, "approve")
	if r.State != store.StateCreated || r.EventCount != 4 || r.ContractHash != ch || string(r.Details) != `{"approved":true}` || !slices.Equal(r.SecretNames, []string{"S"}) || !r.UpdatedAt.Equal(at(5)) {
		t.Fatalf("approved run = %+v", r)
	}
	_, err = s.ApproveRun(ctx, "run_1", store.Issue{Contract: []byte("c"), ContractHash: ch}, at(6))
	mustIs(t, err, store.ErrInvalidState, "approve twice")
	_, err = s.EndPending(ctx, "run_1", store.PendingEnd{State: store.StateFailed, Failure: &store.Failure{Class: "policy_denied"}}, at(6))
	mustIs(t, err, store.ErrInvalidState, "deny after approval")
	_, err = s.ApproveRun(ctx, "run_none", store.Issue{}, at(6))
	mustIs(t, err, store.ErrNotFound, "approve missing")

	b := newRun("run_2", "p", at(0))
	b.State, b.Contract, b.ContractHash = store.StateAwaitingApproval, nil, ""
	mustNil(t, s.CreateRun(ctx, b, nil), "create 2")
	_, err = s.EndPending(ctx, "run_2", store.PendingEnd{State: store.StateRunning}, at(7))
	mustIs(t, err, store.ErrInvalidState, "end pending in a live state")
	r, err = s.EndPending(ctx, "run_2", store.PendingEnd{State: store.StateFailed, Failure: &store.Failure{Class: "policy_denied", Message: "no"}, Details: []byte(`{"denied":true}`)}, at(7))
	mustNil(t, err, "deny")
	if r.State != store.StateFailed || r.Failure == nil || r.Failure.Class != "policy_denied" || r.Failure.Message != "no" || string(r.Details) != `{"denied":true}` {
		t.Fatalf("denied run = %+v", r)
	}
	got, _ = s.GetRun(ctx, "run_2")
	if got.State != store.StateFailed || got.Failure == nil || got.Failure.Message != "no" {
		t.Fatalf("stored denied run = %+v", got)
	}
}

func testCancel(t *testing.T, s store.Store) {
	c := store.Cancellation{ActorKind: "human", ActorID: "alice", Reason: "stop", At: at(9)}
	// Awaiting approval: cancelled at once, no chain.
	a := newRun("run_a", "p", at(0))
	a.State, a.Contract, a.ContractHash = store.StateAwaitingApproval, nil, ""
	mustNil(t, s.CreateRun(ctx, a, nil), "create")
	r, err := s.CancelRun(ctx, "run_a", c, at(9), func(store.Run, *store.Event) (store.End, error) {
		t.Fatalf("end called for a run with no chain")
		return store.End{}, nil
	})
	mustNil(t, err, "cancel awaiting")
	if r.State != store.StateCancelled || r.Cancel == nil || r.Cancel.ActorID != "alice" || r.EventCount != 0 {
		t.Fatalf("cancelled awaiting run = %+v", r)
	}
	// Queued: the end's events are appended.
	queue(t, s, "run_q", "p", at(1))
	cancelEnd := func(run store.Run, head *store.Event) (store.End, error) {
		return store.End{Events: chain(run.ID, head.Hash, head.Seq+1, "run.cancelled")}, nil
	}
	// A failing end writes nothing.
	_, err = s.CancelRun(ctx, "run_q", c, at(9), func(store.Run, *store.Event) (store.End, error) { return store.End{}, errors.New("boom") })
	if err == nil {
		t.Fatalf("cancel with failing end succeeded")
	}
	if got, _ := s.GetRun(ctx, "run_q"); got.State != store.StateCreated || got.Cancel != nil {
		t.Fatalf("failed cancel changed the run: %+v", got)
	}
	r, err = s.CancelRun(ctx, "run_q", c, at(9), cancelEnd)
	mustNil(t, err, "cancel queued")
	if r.State != store.StateCancelled || r.EventCount != 3 || r.HeadType != "run.cancelled" || !r.Cancel.At.Equal(at(9)) || r.Cancel.Reason != "stop" {
		t.Fatalf("cancelled queued run = %+v", r)
	}
	// Idempotent on an ended run.
	r2, err := s.CancelRun(ctx, "run_q", store.Cancellation{ActorKind: "human", ActorID: "bob", At: at(10)}, at(10), cancelEnd)
	mustNil(t, err, "cancel again")
	if r2.EventCount != 3 || r2.Cancel.ActorID != "alice" {
		t.Fatalf("second cancel changed an ended run: %+v", r2)
	}
	// Claimed: recorded for the runner, state unchanged, first kept.
	queue(t, s, "run_c", "p", at(2))
	claim(t, s, "p", "rnr_1", hashOf("ct"), at(3))
	r, err = s.CancelRun(ctx, "run_c", c, at(9), cancelEnd)
	mustNil(t, err, "cancel claimed")
	if r.State != store.StateClaimed || r.Cancel == nil || r.EventCount != 3 {
		t.Fatalf("cancelled claimed run = %+v", r)
	}
	r, _ = s.CancelRun(ctx, "run_c", store.Cancellation{ActorKind: "human", ActorID: "bob", At: at(11)}, at(11), cancelEnd)
	if r.Cancel.ActorID != "alice" {
		t.Fatalf("second cancel replaced the first: %+v", r.Cancel)
	}
	_, err = s.CancelRun(ctx, "run_none", c, at(9), cancelEnd)
	mustIs(t, err, store.ErrNotFound, "cancel missing")
}

// --- claims ---

func testClaim(t *testing.T, s store.Store) {
	_, _, err := s.ClaimNext(ctx, store.ClaimRequest{Pool: "p", Tiers: []string{"process"}, RunnerID: "r", TokenHash: hashOf("x"), Now: at(0), LeaseUntil: at(30)}, claimAll(nil))
	mustIs(t, err, store.ErrNotFound, "claim from an empty queue")
	queue(t, s, "run_new", "p", at(5))
	queue(t, s, "run_old", "p", at(1))
	queue(t, s, "run_other_pool", "q", at(0))
	ns := newRun("run_ns", "p", at(0))
	ns.Isolation = "namespace"
	mustNil(t, s.CreateRun(ctx, ns, chain(ns.ID, ns.ContractHash, 0, "run.created")), "create ns")
	mustNil(t, s.CreateRun(ctx, func() store.Run {
		r := newRun("run_ns2", "p", at(0))
		r.Isolation = "namespace"
		r.SecretNames = []string{"S1", "S2"}
		return r
	}(), chain("run_ns2", hashOf("contract", "run_ns2"), 0, "run.created")), "create ns2")
	_, err = s.PutSecret(ctx, store.Secret{Name: "S1", Ciphertext: []byte("c1"), CreatedAt: at(0), UpdatedAt: at(0)})
	mustNil(t, err, "secret")

	r, ev := claim(t, s, "p", "rnr_1", hashOf("t1"), at(10))
	if r.ID != "run_old" {
		t.Fatalf("claimed %s, want the oldest process run run_old", r.ID)
	}
	if r.State != store.StateClaimed || r.RunnerID != "rnr_1" || r.ClaimState != store.ClaimActive || !r.LeaseUntil.Equal(at(40)) || !r.ClaimedAt.Equal(at(10)) || r.EventCount != 3 {
		t.Fatalf("claimed run = %+v", r)
	}
	if len(ev) != 3 || ev[2].Type != "run.claimed" || ev[0].Seq != 0 {
		t.Fatalf("claim chain = %+v", ev)
	}
	r, _ = claim(t, s, "p", "rnr_1", hashOf("t2"), at(11))
	if r.ID != "run_new" {
		t.Fatalf("second claim got %s, want run_new", r.ID)
	}
	_, _, err = s.ClaimNext(ctx, store.ClaimRequest{Pool: "p", Tiers: []string{"process"}, RunnerID: "r", TokenHash: hashOf("t3"), Now: at(12), LeaseUntil: at(40)}, claimAll(nil))
	mustIs(t, err, store.ErrNotFound, "no process runs left")
	// A namespace runner gets the namespace runs, with their secrets.
	var gotSecrets []store.Secret
	r, _, err = s.ClaimNext(ctx, store.ClaimRequest{Pool: "p", Tiers: []string{"namespace", "process"}, RunnerID: "rnr_2", TokenHash: hashOf("t4"), Now: at(13), LeaseUntil: at(43)},
		func(run store.Run, head store.Event, secrets []store.Secret) (store.ClaimDecision, error) {
			if run.ID == "run_ns2" {
				gotSecrets = secrets
			}
			return store.ClaimDecision{Events: chain(run.ID, head.Hash, head.Seq+1, "run.claimed")}, nil
		})
	mustNil(t, err, "claim ns")
	if r.Isolation != "namespace" {
		t.Fatalf("claimed %+v", r)
	}
	_, _, err = s.ClaimNext(ctx, store.ClaimRequest{Pool: "p", Tiers: []string{"namespace"}, RunnerID: "rnr_2", TokenHash: hashOf("t5"), Now: at(14), LeaseUntil: at(44)},
		func(run store.Run, head store.Event, secrets []store.Secret) (store.ClaimDecision, error) {
			gotSecrets = secrets
			return store.ClaimDecision{Events: chain(run.ID, head.Hash, head.Seq+1, "run.claimed")}, nil
		})
	mustNil(t, err, "claim ns2")
	if len(gotSecrets) != 1 || gotSecrets[0].Name != "S1" || string(gotSecrets[0].Ciphertext) != "c1" {
		t.Fatalf("secrets offered = %+v, want only the stored S1", gotSecrets)
	}
	// Token hashes are unique across claims.
	queue(t, s, "run_dup", "p", at(20))
	_, _, err = s.ClaimNext(ctx, store.ClaimRequest{Pool: "p", Tiers: []string{"process"}, RunnerID: "r", TokenHash: hashOf("t1"), Now: at(21), LeaseUntil: at(50)}, claimAll(nil))
	mustIs(t, err, store.ErrConflict, "reused claim token hash")
	if got, _ := s.GetRun(ctx, "run_dup"); got.State != store.StateCreated || got.EventCount != 2 {
		t.Fatalf("failed claim changed the run: %+v", got)
	}
}

func testClaimFail(t *testing.T, s store.Store) {
	queue(t, s, "run_1", "p", at(0))
	queue(t, s, "run_2", "p", at(1))
	var offered []string
	r, _, err := s.ClaimNext(ctx, store.ClaimRequest{Pool: "p", Tiers: []string{"process"}, RunnerID: "r", TokenHash: hashOf("t"), Now: at(5), LeaseUntil: at(35)},
		func(run store.Run, head store.Event, secrets []store.Secret) (store.ClaimDecision, error) {
			offered = append(offered, run.ID)
			if run.ID == "run_1" {
				return store.ClaimDecision{Events: chain(run.ID, head.Hash, head.Seq+1, "run.failed"), Fail: &store.Failure{Class: "secret_release_denied", Message: "gone"}}, nil
			}
			return store.ClaimDecision{Events: chain(run.ID, head.Hash, head.Seq+1, "run.claimed")}, nil
		})
	mustNil(t, err, "claim")
	if r.ID != "run_2" || !slices.Equal(offered, []string{"run_1", "run_2"}) {
		t.Fatalf("claimed %s after offers %v", r.ID, offered)
	}
	f, _ := s.GetRun(ctx, "run_1")
	if f.State != store.StateFailed || f.Failure == nil || f.Failure.Class != "secret_release_denied" || f.HeadType != "run.failed" || f.ClaimState != store.ClaimNone {
		t.Fatalf("failed candidate = %+v", f)
	}
}

func testClaimAtomic(t *testing.T, s store.Store) {
	queue(t, s, "run_1", "p", at(0))
	_, _, err := s.ClaimNext(ctx, store.ClaimRequest{Pool: "p", Tiers: []string{"process"}, RunnerID: "r", TokenHash: hashOf("t"), Now: at(5), LeaseUntil: at(35)},
		func(run store.Run, head store.Event, secrets []store.Secret) (store.ClaimDecision, error) {
			return store.ClaimDecision{}, errors.New("decider failed")
		})
	if err == nil {
		t.Fatal("claim with failing decider succeeded")
	}
	// Events that do not link also abort the claim.
	_, _, err = s.ClaimNext(ctx, store.ClaimRequest{Pool: "p", Tiers: []string{"process"}, RunnerID: "r", TokenHash: hashOf("t"), Now: at(5), LeaseUntil: at(35)},
		func(run store.Run, head store.Event, secrets []store.Secret) (store.ClaimDecision, error) {
			return store.ClaimDecision{Events: chain(run.ID, hashOf("bad"), head.Seq+1, "run.claimed")}, nil
		})
	mustIs(t, err, store.ErrChainConflict, "claim with unlinked events")
	r, _ := s.GetRun(ctx, "run_1")
	if r.State != store.StateCreated || r.EventCount != 2 || r.ClaimTokenHash != "" {
		t.Fatalf("failed claims changed the run: %+v", r)
	}
	claim(t, s, "p", "r", hashOf("t"), at(6))
}

func testClaimConcurrent(t *testing.T, s store.Store) {
	const runs, runners = 60, 8
	for i := range runs {
		queue(t, s, fmt.Sprintf("run_%03d", i), "p", at(i))
	}
	var mu sync.Mutex
	claimedBy := map[string]string{}
	var wg sync.WaitGroup
	errs := make(chan error, runners)
	for w := range runners {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; ; n++ {
				r, _, err := s.ClaimNext(ctx, store.ClaimRequest{Pool: "p", Tiers: []string{"process"}, RunnerID: fmt.Sprint("rnr_", w), TokenHash: hashOf("tok", w, n), Now: at(100), LeaseUntil: at(130)}, claimAll(nil))
				if errors.Is(err, store.ErrNotFound) {
					return
				}
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				if prev, dup := claimedBy[r.ID]; dup {
					errs <- fmt.Errorf("run %s claimed by %s and rnr_%d", r.ID, prev, w)
				}
				claimedBy[r.ID] = r.RunnerID
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if len(claimedBy) != runs {
		t.Fatalf("%d runs claimed, want %d", len(claimedBy), runs)
	}
	list, _ := s.ListRuns(ctx, store.RunFilter{Limit: 500})
	for _, r := range list {
		if r.State != store.StateClaimed || r.EventCount != 3 || r.RunnerID != claimedBy[r.ID] {
			t.Fatalf("run after concurrent claims: %+v", r)
		}
	}
}

func testClaimToken(t *testing.T, s store.Store) {
	queue(t, s, "run_1", "p", at(0))
	claim(t, s, "p", "rnr_1", hashOf("t1"), at(10)) // lease until at(40)
	r, err := s.GetClaim(ctx, hashOf("t1"), at(39))
	mustNil(t, err, "claim within lease")
	if r.ID != "run_1" {
		t.Fatalf("claim run = %s", r.ID)
	}
	_, err = s.GetClaim(ctx, hashOf("t1"), at(40))
	mustIs(t, err, store.ErrLeaseExpired, "claim at lease end")
	_, err = s.GetClaim(ctx, hashOf("unknown"), at(10))
	mustIs(t, err, store.ErrNotFound, "unknown claim token")
	_, err = s.GetClaim(ctx, "", at(10))
	mustIs(t, err, store.ErrNotFound, "empty claim token")
	// After completion the token is used up.
	_, err = s.Heartbeat(ctx, "run_1", hashOf("t1"), "", at(20), at(50))
	mustNil(t, err, "heartbeat")
	r, _ = s.GetRun(ctx, "run_1")
	done := chain("run_1", r.HeadHash, r.EventCount, "run.completed")
	r, err = s.AppendEvents(ctx, "run_1", hashOf("t1"), done, at(21))
	mustNil(t, err, "append")
	_, err = s.CompleteRun(ctx, "run_1", hashOf("t1"), store.Completion{Receipt: []byte("rcpt"), State: store.StateCompleted, EventsHead: r.HeadHash, EventCount: r.EventCount}, at(22))
	mustNil(t, err, "complete")
	used, err := s.GetClaim(ctx, hashOf("t1"), at(23))
	mustIs(t, err, store.ErrClaimUsed, "claim after completion")
	if used.ID != "run_1" || !used.HasReceipt {
		t.Fatalf("a used claim still names its run: got %+v", used)
	}
	_, err = s.Heartbeat(ctx, "run_1", hashOf("t1"), "", at(23), at(53))
	mustIs(t, err, store.ErrClaimUsed, "heartbeat after completion")
}

func testHeartbeat(t *testing.T, s store.Store) {
	queue(t, s, "run_1", "p", at(0))
	claim(t, s, "p", "rnr_1", hashOf("t1"), at(10))
	r, err := s.Heartbeat(ctx, "run_1", hashOf("t1"), store.StateProvisioning, at(20), at(50))
	mustNil(t, err, "heartbeat")
	if r.State != store.StateProvisioning || !r.LeaseUntil.Equal(at(50)) {
		t.Fatalf("after heartbeat: %+v", r)
	}
	r, _ = s.Heartbeat(ctx, "run_1", hashOf("t1"), store.StateRunning, at(30), at(60))
	if r.State != store.StateRunning {
		t.Fatalf("state = %s, want running", r.State)
	}
	r, _ = s.Heartbeat(ctx, "run_1", hashOf("t1"), store.StateProvisioning, at(31), at(45))
	if r.State != store.StateRunning || !r.LeaseUntil.Equal(at(60)) {
		t.Fatalf("heartbeat moved backwards or shortened the lease: %+v", r)
	}
	r, _ = s.Heartbeat(ctx, "run_1", hashOf("t1"), store.StateCompleted, at(32), at(62))
	if r.State != store.StateRunning {
		t.Fatalf("heartbeat ended the run: %+v", r)
	}
	got, _ := s.GetRun(ctx, "run_1")
	if got.State != store.StateRunning || !got.LeaseUntil.Equal(at(62)) {
		t.Fatalf("stored after heartbeats: %+v", got)
	}
	_, err = s.Heartbeat(ctx, "run_1", hashOf("other"), "", at(33), at(63))
	mustIs(t, err, store.ErrNotFound, "wrong token")
	_, err = s.Heartbeat(ctx, "run_1", hashOf("t1"), "", at(62), at(92))
	mustIs(t, err, store.ErrLeaseExpired, "heartbeat after the lease")
}

func testAppend(t *testing.T, s store.Store) {
	queue(t, s, "run_1", "p", at(0))
	r, _ := claim(t, s, "p", "rnr_1", hashOf("t1"), at(10))
	batch := chain("run_1", r.HeadHash, r.EventCount, "workspace.materialized", "command.executed")
	r, err := s.AppendEvents(ctx, "run_1", hashOf("t1"), batch, at(11))
	mustNil(t, err, "append")
	if r.EventCount != 5 || r.HeadHash != batch[1].Hash || r.HeadType != "command.executed" {
		t.Fatalf("after append: %+v", r)
	}
	// Replaying stored events (alone or followed by new ones) is accepted.
	r, err = s.AppendEvents(ctx, "run_1", hashOf("t1"), batch, at(12))
	mustNil(t, err, "replay")
	if r.EventCount != 5 {
		t.Fatalf("replay changed the count to %d", r.EventCount)
	}
	next := chain("run_1", r.HeadHash, 5, "file.changed")
	r, err = s.AppendEvents(ctx, "run_1", hashOf("t1"), append(batch[1:], next...), at(12))
	mustNil(t, err, "replay then extend")
	if r.EventCount != 6 {
		t.Fatalf("count = %d, want 6", r.EventCount)
	}
	var ce *store.ChainError
	// Fork: a different event at a stored seq.
	fork := chain("run_1", batch[0].Hash, 4, "network.connected")
	_, err = s.AppendEvents(ctx, "run_1", hashOf("t1"), fork, at(13))
	if !errors.As(err, &ce) || ce.Seq != 4 {
		t.Fatalf("fork: %v, want ChainError at seq 4", err)
	}
	// Gap.
	gap := chain("run_1", r.HeadHash, 7, "file.changed")
	_, err = s.AppendEvents(ctx, "run_1", hashOf("t1"), gap, at(13))
	if !errors.As(err, &ce) || ce.Seq != 6 {
		t.Fatalf("gap: %v, want ChainError at seq 6", err)
	}
	// Wrong prev.
	bad := chain("run_1", hashOf("nope"), 6, "file.changed")
	_, err = s.AppendEvents(ctx, "run_1", hashOf("t1"), bad, at(13))
	mustIs(t, err, store.ErrChainConflict, "wrong prev")
	// A batch that breaks half way writes nothing.
	half := chain("run_1", r.HeadHash, 6, "file.changed", "artifact.created")
	half[1].Prev = hashOf("broken")
	_, err = s.AppendEvents(ctx, "run_1", hashOf("t1"), half, at(13))
	mustIs(t, err, store.ErrChainConflict, "broken batch")
	if got, _ := s.GetRun(ctx, "run_1"); got.EventCount != 6 {
		t.Fatalf("broken batch wrote %d events", got.EventCount-6)
	}
	// Nothing after a terminal event.
	end := chain("run_1", r.HeadHash, 6, "run.completed")
	r, err = s.AppendEvents(ctx, "run_1", hashOf("t1"), end, at(14))
	mustNil(t, err, "terminal")
	after := chain("run_1", r.HeadHash, 7, "file.changed")
	_, err = s.AppendEvents(ctx, "run_1", hashOf("t1"), after, at(15))
	if !errors.As(err, &ce) || ce.Seq != 7 {
		t.Fatalf("after terminal: %v", err)
	}
	// Claim checks.
	_, err = s.AppendEvents(ctx, "run_1", hashOf("other"), after, at(15))
	mustIs(t, err, store.ErrNotFound, "wrong token")
	_, err = s.AppendEvents(ctx, "run_1", hashOf("t1"), after, at(40))
	mustIs(t, err, store.ErrLeaseExpired, "after the lease")
	events, _ := s.ListEvents(ctx, "run_1", -1, 0)
	if len(events) != 7 {
		t.Fatalf("stored %d events, want 7", len(events))
	}
	for i, e := range events {
		if e.Seq != int64(i) {
			t.Fatalf("event %d has seq %d", i, e.Seq)
		}
	}
}

func testAppendConcurrent(t *testing.T, s store.Store) {
	queue(t, s, "run_1", "p", at(0))
	r, _ := claim(t, s, "p", "rnr_1", hashOf("t1"), at(10))
	// Eight writers race to append different events at the same seq:
	// exactly one wins, the rest get chain conflicts, the chain never forks.
	const writers = 8
	var wg sync.WaitGroup
	var mu sync.Mutex
	wins, conflicts := 0, 0
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ev := chain("run_1", r.HeadHash, r.EventCount, fmt.Sprint("file.changed.", w))
			_, err := s.AppendEvents(ctx, "run_1", hashOf("t1"), ev, at(11))
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				wins++
			case errors.Is(err, store.ErrChainConflict):
				conflicts++
			default:
				t.Errorf("append: %v", err)
			}
		}()
	}
	wg.Wait()
	if wins != 1 || conflicts != writers-1 {
		t.Fatalf("wins %d conflicts %d, want 1 and %d", wins, conflicts, writers-1)
	}
	events, _ := s.ListEvents(ctx, "run_1", -1, 0)
	if len(events) != 4 {
		t.Fatalf("chain has %d events, want 4", len(events))
	}
}

func testComplete(t *testing.T, s store.Store) {
	queue(t, s, "run_1", "p", at(0))
	r, _ := claim(t, s, "p", "rnr_1", hashOf("t1"), at(10))
	r, err := s.AppendEvents(ctx, "run_1", hashOf("t1"), chain("run_1", r.HeadHash, r.EventCount, "run.failed"), at(11))
	mustNil(t, err, "append")
	var ce *store.ChainError
	_, err = s.CompleteRun(ctx, "run_1", hashOf("t1"), store.Completion{Receipt: []byte("r"), State: store.StateFailed, EventsHead: hashOf("stale"), EventCount: r.EventCount}, at(12))
	if !errors.As(err, &ce) {
		t.Fatalf("complete with a stale head: %v", err)
	}
	_, err = s.CompleteRun(ctx, "run_1", hashOf("t1"), store.Completion{Receipt: []byte("r"), State: store.StateRunning, EventsHead: r.HeadHash, EventCount: r.EventCount}, at(12))
	mustIs(t, err, store.ErrInvalidState, "complete into a live state")
	_, err = s.CompleteRun(ctx, "run_1", hashOf("t1"), store.Completion{Receipt: []byte("r"), State: store.StateFailed, EventsHead: r.HeadHash, EventCount: r.EventCount}, at(40))
	mustIs(t, err, store.ErrLeaseExpired, "complete after the lease")
	got, _ := s.GetRun(ctx, "run_1")
	if got.State != store.StateClaimed || got.Receipt != nil {
		t.Fatalf("failed completions changed the run: %+v", got)
	}
	done, err := s.CompleteRun(ctx, "run_1", hashOf("t1"), store.Completion{Receipt: []byte("receipt"), State: store.StateFailed, Failure: &store.Failure{Class: "session_failed", Message: "exit 1"}, EventsHead: r.HeadHash, EventCount: r.EventCount}, at(12))
	mustNil(t, err, "complete")
	if done.State != store.StateFailed || string(done.Receipt) != "receipt" || !done.HasReceipt || done.Failure.Message != "exit 1" || done.ClaimState != store.ClaimEnded {
		t.Fatalf("completed run = %+v", done)
	}
	got, _ = s.GetRun(ctx, "run_1")
	if !runEqual(got, done) {
		t.Fatalf("stored %+v\nreturned %+v", got, done)
	}
	_, err = s.CompleteRun(ctx, "run_1", hashOf("t1"), store.Completion{Receipt: []byte("again"), State: store.StateFailed, EventsHead: r.HeadHash, EventCount: r.EventCount}, at(13))
	mustIs(t, err, store.ErrClaimUsed, "complete twice")
}

func testExpireLeases(t *testing.T, s store.Store) {
	queue(t, s, "run_1", "p", at(0))
	queue(t, s, "run_2", "p", at(1))
	queue(t, s, "run_3", "p", at(2))
	claim(t, s, "p", "rnr_1", hashOf("t1"), at(10)) // run_1 lease until 40
	claim(t, s, "p", "rnr_1", hashOf("t2"), at(20)) // run_2 lease until 50
	none, err := s.ExpireLeases(ctx, at(39), endWith("session_failed"))
	mustNil(t, err, "expire early")
	if len(none) != 0 {
		t.Fatalf("expired %d runs before any lease ended", len(none))
	}
	// A failing end writes nothing.
	_, err = s.ExpireLeases(ctx, at(40), func(store.Run, *store.Event) (store.End, error) { return store.End{}, errors.New("boom") })
	if err == nil {
		t.Fatal("expire with failing end succeeded")
	}
	if got, _ := s.GetRun(ctx, "run_1"); got.State != store.StateClaimed {
		t.Fatalf("failed expiry changed the run: %+v", got)
	}
	ended, err := s.ExpireLeases(ctx, at(40), endWith("session_failed"))
	mustNil(t, err, "expire")
	if len(ended) != 1 || ended[0].ID != "run_1" {
		t.Fatalf("expired %+v, want run_1", ended)
	}
	r, _ := s.GetRun(ctx, "run_1")
	if r.State != store.StateFailed || r.ClaimState != store.ClaimExpired || r.Failure.Class != "session_failed" || r.HeadType != "run.failed" || r.EventCount != 4 {
		t.Fatalf("expired run = %+v", r)
	}
	_, err = s.GetClaim(ctx, hashOf("t1"), at(41))
	mustIs(t, err, store.ErrLeaseExpired, "claim after expiry")
	_, err = s.ExpireLeases(ctx, at(41), endWith("session_failed"))
	mustNil(t, err, "expire again")
	if r2, _ := s.GetRun(ctx, "run_1"); r2.EventCount != 4 {
		t.Fatalf("second expiry appended again")
	}
	if r3, _ := s.GetRun(ctx, "run_3"); r3.State != store.StateCreated {
		t.Fatalf("queued run touched by lease expiry: %+v", r3)
	}
	// A runner that ended the chain but never completed: the lease still
	// lapses, the run fails, and nothing is appended after the terminal
	// event (the end function sees the terminal head).
	r2, _ := s.GetRun(ctx, "run_2")
	r2, err = s.AppendEvents(ctx, "run_2", hashOf("t2"), chain("run_2", r2.HeadHash, r2.EventCount, "run.completed"), at(30))
	mustNil(t, err, "append terminal")
	ended, err = s.ExpireLeases(ctx, at(50), endWith("session_failed"))
	mustNil(t, err, "expire run_2")
	if len(ended) != 1 || ended[0].ID != "run_2" || ended[0].State != store.StateFailed || ended[0].EventCount != r2.EventCount || ended[0].HeadType != "run.completed" {
		t.Fatalf("expired run with a terminal head = %+v", ended)
	}
}

func testExpireContracts(t *testing.T, s store.Store) {
	queue(t, s, "run_1", "p", at(0))    // contract expires at(3600)
	queue(t, s, "run_2", "p", at(1000)) // at(4600)
	ended, err := s.ExpireContracts(ctx, at(3600), endWith("capability_mismatch"))
	mustNil(t, err, "expire contracts")
	if len(ended) != 1 || ended[0].ID != "run_1" || ended[0].State != store.StateFailed || ended[0].HeadType != "run.failed" {
		t.Fatalf("expired contracts = %+v", ended)
	}
	a := newRun("run_a", "p", at(0))
	a.State, a.Contract, a.ContractHash, a.ExpiresAt = store.StateAwaitingApproval, nil, "", time.Time{}
	mustNil(t, s.CreateRun(ctx, a, nil), "awaiting")
	b := newRun("run_b", "p", at(100))
	b.State, b.Contract, b.ContractHash, b.ExpiresAt = store.StateAwaitingApproval, nil, "", time.Time{}
	mustNil(t, s.CreateRun(ctx, b, nil), "awaiting 2")
	ended, err = s.ExpireApprovals(ctx, at(50), at(200), endWith("consent_timeout"))
	mustNil(t, err, "expire approvals")
	if len(ended) != 1 || ended[0].ID != "run_a" || ended[0].Failure.Class != "consent_timeout" || ended[0].EventCount != 0 {
		t.Fatalf("expired approvals = %+v", ended)
	}
	if r, _ := s.GetRun(ctx, "run_b"); r.State != store.StateAwaitingApproval {
		t.Fatalf("young approval expired: %+v", r)
	}
}

// --- blobs ---

func testBlobIndex(t *testing.T, s store.Store) {
	h1, h2, h3 := hashOf("b1"), hashOf("b2"), hashOf("b3")
	created, err := s.PutBlobMeta(ctx, store.BlobMeta{Hash: h1, Size: 10, CreatedAt: at(0), LastRefAt: at(0)})
	mustNil(t, err, "put")
	if !created {
		t.Fatal("first put not created")
	}
	created, err = s.PutBlobMeta(ctx, store.BlobMeta{Hash: h1, Size: 10, CreatedAt: at(5), LastRefAt: at(5)})
	mustNil(t, err, "put again")
	if created {
		t.Fatal("second put reported created")
	}
	m, err := s.GetBlobMeta(ctx, h1)
	mustNil(t, err, "get")
	if m.Size != 10 || !m.CreatedAt.Equal(at(0)) || !m.LastRefAt.Equal(at(5)) {
		t.Fatalf("meta = %+v", m)
	}
	_, err = s.GetBlobMeta(ctx, h2)
	mustIs(t, err, store.ErrNotFound, "get missing")
	missing, err := s.MissingBlobs(ctx, []string{h3, h1, h2, h3})
	mustNil(t, err, "missing")
	if !slices.Equal(missing, []string{h3, h2}) {
		t.Fatalf("missing = %v, want [h3 h2] (input order, no duplicates)", missing)
	}
	missing, _ = s.MissingBlobs(ctx, nil)
	if len(missing) != 0 {
		t.Fatalf("missing of nothing = %v", missing)
	}
	// Many hashes in one call.
	var many []string
	for i := range 1200 {
		many = append(many, hashOf("many", i))
	}
	missing, err = s.MissingBlobs(ctx, append(many, h1))
	mustNil(t, err, "missing many")
	if len(missing) != 1200 {
		t.Fatalf("missing many = %d", len(missing))
	}
	_, err = s.PutBlobMeta(ctx, store.BlobMeta{Hash: h2, Size: 3, CreatedAt: at(1), LastRefAt: at(1)})
	mustNil(t, err, "put h2")

	// Access: a principal reads what it referenced and the outputs of its runs.
	mustNil(t, s.RefBlobs(ctx, "prn_a", []string{h1}, at(7)), "ref")
	if m, _ := s.GetBlobMeta(ctx, h1); !m.LastRefAt.Equal(at(7)) {
		t.Fatalf("ref did not bump lastRefAt: %+v", m)
	}
	ok, err := s.BlobReadableBy(ctx, h1, "prn_a")
	mustNil(t, err, "readable")
	if !ok {
		t.Fatal("referencing principal cannot read")
	}
	if ok, _ := s.BlobReadableBy(ctx, h1, "prn_b"); ok {
		t.Fatal("other principal can read")
	}
	r := newRun("run_1", "p", at(0))
	r.RequesterID = "prn_b"
	mustNil(t, s.CreateRun(ctx, r, chain("run_1", r.ContractHash, 0, "run.created")), "run")
	mustNil(t, s.AddRunOutput(ctx, "run_1", h2, at(8)), "output")
	mustNil(t, s.AddRunOutput(ctx, "run_1", h2, at(8)), "output twice")
	mustIs(t, s.AddRunOutput(ctx, "run_none", h2, at(8)), store.ErrNotFound, "output of missing run")
	if ok, _ := s.RunHasOutput(ctx, "run_1", h2); !ok {
		t.Fatal("output not recorded")
	}
	if ok, _ := s.RunHasOutput(ctx, "run_1", h1); ok {
		t.Fatal("non-output reported")
	}
	if ok, _ := s.BlobReadableBy(ctx, h2, "prn_b"); !ok {
		t.Fatal("requester cannot read its run's output")
	}
	if ok, _ := s.BlobReadableBy(ctx, h2, "prn_a"); ok {
		t.Fatal("stranger can read a run's output")
	}
}

func testRetention(t *testing.T, s store.Store) {
	queue(t, s, "run_live", "p", at(0))
	queue(t, s, "run_old", "p", at(0))
	queue(t, s, "run_new", "p", at(0))
	cancelEnd := func(run store.Run, head *store.Event) (store.End, error) {
		return store.End{Events: chain(run.ID, head.Hash, head.Seq+1, "run.cancelled")}, nil
	}
	_, err := s.CancelRun(ctx, "run_old", store.Cancellation{ActorKind: "human", ActorID: "a", At: at(10)}, at(10), cancelEnd)
	mustNil(t, err, "end old")
	_, err = s.CancelRun(ctx, "run_new", store.Cancellation{ActorKind: "human", ActorID: "a", At: at(100)}, at(100), cancelEnd)
	mustNil(t, err, "end new")
	mustNil(t, s.AddRunOutput(ctx, "run_old", hashOf("o"), at(10)), "output")
	recs, err := s.DeleteRunsEndedBefore(ctx, at(50), at(200), "receipts older than 365 days", 0)
	mustNil(t, err, "delete runs")
	if len(recs) != 1 || recs[0].ID != "run_old" || recs[0].Kind != "run" || recs[0].Bytes <= 0 || !recs[0].At.Equal(at(200)) {
		t.Fatalf("deleted = %+v", recs)
	}
	_, err = s.GetRun(ctx, "run_old")
	mustIs(t, err, store.ErrNotFound, "deleted run")
	if ev, _ := s.ListEvents(ctx, "run_old", -1, 0); len(ev) != 0 {
		t.Fatalf("events of a deleted run remain: %d", len(ev))
	}
	if ok, _ := s.RunHasOutput(ctx, "run_old", hashOf("o")); ok {
		t.Fatal("outputs of a deleted run remain")
	}
	for _, id := range []string{"run_live", "run_new"} {
		if _, err := s.GetRun(ctx, id); err != nil {
			t.Fatalf("%s: %v", id, err)
		}
	}
	_, err = s.PutBlobMeta(ctx, store.BlobMeta{Hash: hashOf("old"), Size: 5, CreatedAt: at(0), LastRefAt: at(0)})
	mustNil(t, err, "old blob")
	_, err = s.PutBlobMeta(ctx, store.BlobMeta{Hash: hashOf("young"), Size: 6, CreatedAt: at(0), LastRefAt: at(0)})
	mustNil(t, err, "young blob")
	mustNil(t, s.RefBlobs(ctx, "prn", []string{hashOf("young")}, at(100)), "ref young")
	recs, err = s.DeleteBlobsBefore(ctx, at(50), at(201), "artifacts older than 90 days", 0)
	mustNil(t, err, "delete blobs")
	if len(recs) != 1 || recs[0].ID != hashOf("old") || recs[0].Bytes != 5 || recs[0].Kind != "blob" {
		t.Fatalf("deleted blobs = %+v", recs)
	}
	if missing, _ := s.MissingBlobs(ctx, []string{hashOf("old"), hashOf("young")}); !slices.Equal(missing, []string{hashOf("old")}) {
		t.Fatalf("missing after retention = %v", missing)
	}
	log, err := s.ListRetention(ctx, 0)
	mustNil(t, err, "log")
	if len(log) != 2 || log[0].Kind != "blob" || log[1].Kind != "run" || log[1].Reason != "receipts older than 365 days" {
		t.Fatalf("retention log = %+v (newest first)", log)
	}
}
