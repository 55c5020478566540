package postgres

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"warrant.dev/warrant/internal/store"
)

// runListCols are the columns of a run without its contract and receipt.
const runListCols = `id, state, pool, agent_kind, isolation, prompt, requester_id, requester_name, created_at, updated_at, details,
	contract_hash, expires_at, secret_names, runner_id, claim_token_hash, claim_state, claimed_at, lease_until,
	cancel_actor_kind, cancel_actor_id, cancel_reason, cancel_at, failure_class, failure_message,
	event_count, head_hash, head_type, receipt IS NOT NULL`

const runCols = runListCols + ", contract, receipt"

func scanRunRow(sc pgx.Row, full bool) (store.Run, error) {
	var r store.Run
	var cancelAt time.Time
	var cancelKind, cancelID, cancelReason, failClass, failMsg string
	dest := []any{&r.ID, &r.State, &r.Pool, &r.AgentKind, &r.Isolation, &r.Prompt, &r.RequesterID, &r.RequesterName, tsp(&r.CreatedAt), tsp(&r.UpdatedAt), &r.Details,
		&r.ContractHash, tsp(&r.ExpiresAt), &r.SecretNames, &r.RunnerID, &r.ClaimTokenHash, &r.ClaimState, tsp(&r.ClaimedAt), tsp(&r.LeaseUntil),
		&cancelKind, &cancelID, &cancelReason, tsp(&cancelAt), &failClass, &failMsg,
		&r.EventCount, &r.HeadHash, &r.HeadType, &r.HasReceipt}
	if full {
		dest = append(dest, &r.Contract, &r.Receipt)
	}
	if err := sc.Scan(dest...); err != nil {
		return r, err
	}
	r.SecretNames = list(r.SecretNames)
	if !cancelAt.IsZero() {
		r.Cancel = &store.Cancellation{ActorKind: cancelKind, ActorID: cancelID, Reason: cancelReason, At: cancelAt}
	}
	if failClass != "" {
		r.Failure = &store.Failure{Class: failClass, Message: failMsg}
	}
	return r, nil
}

func scanRun(sc pgx.Row) (store.Run, error)     { return scanRunRow(sc, true) }
func scanListRow(sc pgx.Row) (store.Run, error) { return scanRunRow(sc, false) }

// lockRun reads a run inside a transaction and locks its row until the
// transaction ends.
func lockRun(ctx context.Context, tx pgx.Tx, id string) (store.Run, error) {
	r, err := scanRun(tx.QueryRow(ctx, "SELECT "+runCols+" FROM runs WHERE id = $1 FOR UPDATE", id))
	if err != nil {
		return r, notFound(err, "run "+id)
	}
	return r, nil
}

// saveRun writes every mutable column of r (whose row the transaction
// holds locked).
func saveRun(ctx context.Context, q queryer, r store.Run) error {
	var ck, ci, cr string
	var ca time.Time
	if r.Cancel != nil {
		ck, ci, cr, ca = r.Cancel.ActorKind, r.Cancel.ActorID, r.Cancel.Reason, r.Cancel.At
	}
	var fc, fm string
	if r.Failure != nil {
		fc, fm = r.Failure.Class, r.Failure.Message
	}
	_, err := q.Exec(ctx, `UPDATE runs SET state = $1, updated_at = $2, details = $3, contract = $4, contract_hash = $5, expires_at = $6, secret_names = $7,
		runner_id = $8, claim_token_hash = $9, claim_state = $10, claimed_at = $11, lease_until = $12,
		cancel_actor_kind = $13, cancel_actor_id = $14, cancel_reason = $15, cancel_at = $16, failure_class = $17, failure_message = $18,
		receipt = $19, event_count = $20, head_hash = $21, head_type = $22 WHERE id = $23`,
		r.State, ts(r.UpdatedAt), r.Details, r.Contract, r.ContractHash, ts(r.ExpiresAt), list(r.SecretNames),
		r.RunnerID, r.ClaimTokenHash, r.ClaimState, ts(r.ClaimedAt), ts(r.LeaseUntil),
		ck, ci, cr, ts(ca), fc, fm, r.Receipt, r.EventCount, r.HeadHash, r.HeadType, r.ID)
	if isUnique(err) {
		return fmt.Errorf("update run %s: %w", r.ID, store.ErrConflict)
	}
	if err != nil {
		return fmt.Errorf("update run %s: %w", r.ID, err)
	}
	return nil
}

// appendChain appends events to r's chain in the transaction q (which
// holds r's row locked), checking that each extends the head; r's head
// fields are updated. The caller saves r.
func appendChain(ctx context.Context, q queryer, r *store.Run, events []store.Event) error {
	if len(events) == 0 {
		return nil
	}
	runIDs := make([]string, 0, len(events))
	seqs := make([]int64, 0, len(events))
	hashes := make([]string, 0, len(events))
	prevs := make([]string, 0, len(events))
	types := make([]string, 0, len(events))
	datas := make([][]byte, 0, len(events))
	for _, e := range events {
		if e.Seq != r.EventCount {
			return &store.ChainError{Seq: r.EventCount, Reason: fmt.Sprintf("expected seq %d, got %d", r.EventCount, e.Seq)}
		}
		prev := r.HeadHash
		if r.EventCount == 0 {
			prev = r.ContractHash
		}
		if e.Prev != prev {
			return &store.ChainError{Seq: e.Seq, Reason: "prev does not link to the chain head"}
		}
		if r.EventCount > 0 && store.IsTerminalEvent(r.HeadType) {
			return &store.ChainError{Seq: e.Seq, Reason: fmt.Sprintf("the chain already ended with %s", r.HeadType)}
		}
		runIDs, seqs, hashes, prevs, types, datas = append(runIDs, r.ID), append(seqs, e.Seq), append(hashes, e.Hash), append(prevs, e.Prev), append(types, e.Type), append(datas, e.Data)
		r.EventCount, r.HeadHash, r.HeadType = e.Seq+1, e.Hash, e.Type
	}
	_, err := q.Exec(ctx, `INSERT INTO events (run_id, seq, hash, prev, type, data)
		SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::bytea[])`,
		runIDs, seqs, hashes, prevs, types, datas)
	if isUnique(err) {
		return &store.ChainError{Seq: seqs[0], Reason: "seq already recorded"}
	}
	if err != nil {
		return fmt.Errorf("append events %d… of %s: %w", seqs[0], r.ID, err)
	}
	return nil
}

func scanEvent(sc pgx.Row) (store.Event, error) {
	var e store.Event
	err := sc.Scan(&e.RunID, &e.Seq, &e.Hash, &e.Prev, &e.Type, &e.Data)
	return e, err
}

func headEvent(ctx context.Context, q queryer, r store.Run) (*store.Event, error) {
	if r.EventCount == 0 {
		return nil, nil
	}
	e, err := scanEvent(q.QueryRow(ctx, "SELECT run_id, seq, hash, prev, type, data FROM events WHERE run_id = $1 AND seq = $2", r.ID, r.EventCount-1))
	if err != nil {
		return nil, notFound(err, "head event of "+r.ID)
	}
	return &e, nil
}

func (s *Store) CreateRun(ctx context.Context, r store.Run, events []store.Event) error {
	return s.tx(ctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO runs (id, state, pool, agent_kind, isolation, prompt, requester_id, requester_name, created_at, updated_at)
			VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10)`, r.ID, r.State, r.Pool, r.AgentKind, r.Isolation, r.Prompt, r.RequesterID, r.RequesterName, ts(r.CreatedAt), ts(r.UpdatedAt))
		if isUnique(err) {
			return fmt.Errorf("create run %s: %w", r.ID, store.ErrConflict)
		}
		if err != nil {
			return fmt.Errorf("create run: %w", err)
		}
		r.EventCount, r.HeadHash, r.HeadType = 0, "", ""
		if err := appendChain(ctx, tx, &r, events); err != nil {
			return err
		}
		return saveRun(ctx, tx, r)
	})
}

func (s *Store) GetRun(ctx context.Context, id string) (store.Run, error) {
	r, err := scanRun(s.pool.QueryRow(ctx, "SELECT "+runCols+" FROM runs WHERE id = $1", id))
	if err != nil {
		return r, notFound(err, "run "+id)
	}
	return r, nil
}

func (s *Store) ListRuns(ctx context.Context, f store.RunFilter) ([]store.Run, error) {
	var where []string
	var a args
	if f.State != "" {
		where = append(where, "state = "+a.add(f.State))
	}
	if f.Pool != "" {
		where = append(where, "pool = "+a.add(f.Pool))
	}
	if f.AgentKind != "" {
		where = append(where, "agent_kind = "+a.add(f.AgentKind))
	}
	if f.RequesterID != "" {
		where = append(where, "requester_id = "+a.add(f.RequesterID))
	}
	if f.RequesterName != "" {
		where = append(where, "requester_name = "+a.add(f.RequesterName))
	}
	if f.Before != nil {
		where = append(where, fmt.Sprintf("(created_at, id) < (%s, %s)", a.add(ts(f.Before.At)), a.add(f.Before.ID)))
	}
	limit := f.Limit
	if limit <= 0 {
		limit = 50
	}
	q := "SELECT " + runListCols + " FROM runs"
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY created_at DESC, id DESC LIMIT " + a.add(limit)
	rows, err := s.pool.Query(ctx, q, a...)
	return collect(rows, err, "list runs", scanListRow)
}

func (s *Store) RunsUpdatedSince(ctx context.Context, since time.Time, after *store.RunCursor, limit int) ([]store.Run, error) {
	if limit <= 0 {
		limit = 100
	}
	if after == nil {
		rows, err := s.pool.Query(ctx, "SELECT "+runCols+" FROM runs WHERE updated_at >= $1 ORDER BY updated_at, id LIMIT $2", ts(since), limit)
		return collect(rows, err, "runs updated since", scanRun)
	}
	rows, err := s.pool.Query(ctx, "SELECT "+runCols+" FROM runs WHERE updated_at >= $1 AND (updated_at, id) > ($2, $3) ORDER BY updated_at, id LIMIT $4",
		ts(since), ts(after.At), after.ID, limit)
	return collect(rows, err, "runs updated since", scanRun)
}

func (s *Store) CountRunsByState(ctx context.Context) (map[string]int, error) {
	rows, err := s.pool.Query(ctx, "SELECT state, count(*) FROM runs GROUP BY state")
	if err != nil {
		return nil, fmt.Errorf("count runs: %w", err)
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var st string
		var n int64
		if err := rows.Scan(&st, &n); err != nil {
			return nil, fmt.Errorf("count runs: %w", err)
		}
		out[st] = int(n)
	}
	return out, rows.Err()
}

func (s *Store) ApproveRun(ctx context.Context, id string, is store.Issue, now time.Time) (store.Run, error) {
	var out store.Run
	err := s.tx(ctx, func(tx pgx.Tx) error {
		r, err := lockRun(ctx, tx, id)
		if err != nil {
			return err
		}
		if r.State != store.StateAwaitingApproval {
			return fmt.Errorf("run %s is %s: %w", id, r.State, store.ErrInvalidState)
		}
		r.State, r.UpdatedAt = store.StateCreated, now
		if is.Details != nil {
			r.Details = is.Details
		}
		r.Contract, r.ContractHash, r.ExpiresAt, r.SecretNames = is.Contract, is.ContractHash, is.ExpiresAt, is.SecretNames
		if err := appendChain(ctx, tx, &r, is.Events); err != nil {
			return err
		}
		out = r
		return saveRun(ctx, tx, r)
	})
	return out, err
}

func (s *Store) EndPending(ctx context.Context, id string, e store.PendingEnd, now time.Time) (store.Run, error) {
	var out store.Run
	err := s.tx(ctx, func(tx pgx.Tx) error {
		r, err := lockRun(ctx, tx, id)
		if err != nil {
			return err
		}
		if r.State != store.StateAwaitingApproval {
			return fmt.Errorf("run %s is %s: %w", id, r.State, store.ErrInvalidState)
		}
		if !store.IsTerminal(e.State) {
			return fmt.Errorf("end run %s in state %q: %w", id, e.State, store.ErrInvalidState)
		}
		r.State, r.UpdatedAt, r.Failure = e.State, now, e.Failure
		if e.Cancel != nil {
			r.Cancel = e.Cancel
		}
		if e.Details != nil {
			r.Details = e.Details
		}
		out = r
		return saveRun(ctx, tx, r)
	})
	return out, err
}

func (s *Store) CancelRun(ctx context.Context, id string, c store.Cancellation, now time.Time, end store.EndFunc) (store.Run, error) {
	var out store.Run
	err := s.tx(ctx, func(tx pgx.Tx) error {
		r, err := lockRun(ctx, tx, id)
		if err != nil {
			return err
		}
		switch {
		case store.IsTerminal(r.State):
			out = r
			return nil
		case r.State == store.StateAwaitingApproval:
			r.State, r.Cancel, r.UpdatedAt = store.StateCancelled, &c, now
		case r.State == store.StateCreated:
			head, err := headEvent(ctx, tx, r)
			if err != nil {
				return err
			}
			e, err := end(r, head)
			if err != nil {
				return err
			}
			if err := appendChain(ctx, tx, &r, e.Events); err != nil {
				return err
			}
			r.State, r.Cancel, r.UpdatedAt = store.StateCancelled, &c, now
		default: // claimed, provisioning, running: the runner ends it
			if r.Cancel != nil {
				out = r
				return nil
			}
			r.Cancel, r.UpdatedAt = &c, now
		}
		out = r
		return saveRun(ctx, tx, r)
	})
	return out, err
}

// --- claims ---

func (s *Store) ClaimNext(ctx context.Context, req store.ClaimRequest, decide store.ClaimFunc) (store.Run, []store.Event, error) {
	var out store.Run
	var chain []store.Event
	if len(req.Tiers) == 0 {
		return out, nil, fmt.Errorf("claim: no isolation tiers: %w", store.ErrNotFound)
	}
	err := s.tx(ctx, func(tx pgx.Tx) error {
		// SKIP LOCKED: a run another replica is claiming right now is
		// passed over, not waited for; a run claimed and committed since
		// this statement's snapshot no longer matches state = 'created'
		// when PostgreSQL re-checks the locked row.
		const q = "SELECT " + runCols + " FROM runs WHERE state = 'created' AND pool = $1 AND isolation = ANY($2) ORDER BY created_at, id LIMIT 1 FOR UPDATE SKIP LOCKED"
		for {
			r, err := scanRun(tx.QueryRow(ctx, q, req.Pool, req.Tiers))
			if errors.Is(err, pgx.ErrNoRows) {
				return fmt.Errorf("claim in pool %s: %w", req.Pool, store.ErrNotFound)
			}
			if err != nil {
				return fmt.Errorf("claim: %w", err)
			}
			head, err := headEvent(ctx, tx, r)
			if err != nil {
				return err
			}
			if head == nil {
				return fmt.Errorf("claim: queued run %s has no chain: %w", r.ID, store.ErrInvalidState)
			}
			var secrets []store.Secret
			if len(r.SecretNames) > 0 {
				rows, err := tx.Query(ctx, "SELECT name, ciphertext, created_at, updated_at FROM secrets WHERE name = ANY($1)", r.SecretNames)
				found, err := collect(rows, err, "claim: secrets", func(row pgx.Row) (store.Secret, error) {
					var sec store.Secret
					err := row.Scan(&sec.Name, &sec.Ciphertext, tsp(&sec.CreatedAt), tsp(&sec.UpdatedAt))
					return sec, err
				})
				if err != nil {
					return err
				}
				// In the contract's order.
				for _, name := range r.SecretNames {
					for _, sec := range found {
						if sec.Name == name {
							secrets = append(secrets, sec)
							break
						}
					}
				}
			}
			d, err := decide(r, *head, secrets)
			if err != nil {
				return fmt.Errorf("claim %s: %w", r.ID, err)
			}
			if err := appendChain(ctx, tx, &r, d.Events); err != nil {
				return err
			}
			r.UpdatedAt = req.Now
			if d.Fail != nil {
				f := *d.Fail
				r.State, r.Failure = store.StateFailed, &f
				if err := saveRun(ctx, tx, r); err != nil {
					return err
				}
				continue
			}
			r.State, r.RunnerID, r.ClaimTokenHash, r.ClaimState = store.StateClaimed, req.RunnerID, req.TokenHash, store.ClaimActive
			r.ClaimedAt, r.LeaseUntil = req.Now, req.LeaseUntil
			if err := saveRun(ctx, tx, r); err != nil {
				return err
			}
			chain, err = listEvents(ctx, tx, r.ID, -1, 0)
			if err != nil {
				return err
			}
			out = r
			return nil
		}
	})
	return out, chain, err
}

// checkClaim returns the error for using r's claim at now, or nil.
func checkClaim(r store.Run, now time.Time) error {
	switch {
	case r.ClaimState == store.ClaimEnded || (store.IsTerminal(r.State) && r.ClaimState != store.ClaimExpired):
		return fmt.Errorf("claim on run %s: %w", r.ID, store.ErrClaimUsed)
	case r.ClaimState == store.ClaimExpired || !now.Before(r.LeaseUntil):
		return fmt.Errorf("claim on run %s: %w", r.ID, store.ErrLeaseExpired)
	case r.ClaimState != store.ClaimActive:
		return fmt.Errorf("claim on run %s: %w", r.ID, store.ErrNotFound)
	}
	return nil
}

// claimedRun locks the run of a claim token in a transaction and checks
// the claim.
func claimedRun(ctx context.Context, tx pgx.Tx, runID, tokenHash string, now time.Time) (store.Run, error) {
	r, err := lockRun(ctx, tx, runID)
	if err != nil {
		return r, err
	}
	if tokenHash == "" || r.ClaimTokenHash != tokenHash {
		return r, fmt.Errorf("claim on run %s: %w", runID, store.ErrNotFound)
	}
	return r, checkClaim(r, now)
}

func (s *Store) GetClaim(ctx context.Context, tokenHash string, now time.Time) (store.Run, error) {
	if tokenHash == "" {
		return store.Run{}, fmt.Errorf("claim token: %w", store.ErrNotFound)
	}
	// The repeated "<> ''" lets a generic plan use the partial index
	// runs_claim_token, whose predicate "= $1" alone does not imply.
	r, err := scanRun(s.pool.QueryRow(ctx, "SELECT "+runCols+" FROM runs WHERE claim_token_hash = $1 AND claim_token_hash <> ''", tokenHash))
	if err != nil {
		return r, notFound(err, "claim token")
	}
	return r, checkClaim(r, now)
}

func (s *Store) Heartbeat(ctx context.Context, runID, tokenHash, state string, now, leaseUntil time.Time) (store.Run, error) {
	var out store.Run
	err := s.tx(ctx, func(tx pgx.Tx) error {
		r, err := claimedRun(ctx, tx, runID, tokenHash, now)
		if err != nil {
			return err
		}
		if state != "" && store.Advances(r.State, state) {
			r.State = state
		}
		if leaseUntil.After(r.LeaseUntil) {
			r.LeaseUntil = leaseUntil
		}
		r.UpdatedAt = now
		if err := saveRun(ctx, tx, r); err != nil {
			return err
		}
		// The runner row after the run row, as RevokeRunner does.
		if _, err := tx.Exec(ctx, "UPDATE runners SET last_seen_at = $1 WHERE id = $2 AND (last_seen_at IS NULL OR last_seen_at < $1)", ts(now), r.RunnerID); err != nil {
			return fmt.Errorf("heartbeat: %w", err)
		}
		out = r
		return nil
	})
	return out, err
}

func (s *Store) AppendEvents(ctx context.Context, runID, tokenHash string, events []store.Event, now time.Time) (store.Run, error) {
	var out store.Run
	err := s.tx(ctx, func(tx pgx.Tx) error {
		r, err := claimedRun(ctx, tx, runID, tokenHash, now)
		if err != nil {
			return err
		}
		var fresh []store.Event
		for _, e := range events {
			if e.Seq >= 0 && e.Seq < r.EventCount && len(fresh) == 0 {
				var stored string
				if err := tx.QueryRow(ctx, "SELECT hash FROM events WHERE run_id = $1 AND seq = $2", runID, e.Seq).Scan(&stored); err != nil {
					return notFound(err, fmt.Sprintf("event %d of %s", e.Seq, runID))
				}
				if stored != e.Hash {
					return &store.ChainError{Seq: e.Seq, Reason: "a different event is already recorded at this seq (fork)"}
				}
				continue // a replay of a stored event
			}
			fresh = append(fresh, e)
		}
		if len(fresh) == 0 {
			out = r
			return nil
		}
		if err := appendChain(ctx, tx, &r, fresh); err != nil {
			return err
		}
		r.UpdatedAt = now
		out = r
		return saveRun(ctx, tx, r)
	})
	return out, err
}

func (s *Store) CompleteRun(ctx context.Context, runID, tokenHash string, c store.Completion, now time.Time) (store.Run, error) {
	var out store.Run
	err := s.tx(ctx, func(tx pgx.Tx) error {
		r, err := claimedRun(ctx, tx, runID, tokenHash, now)
		if err != nil {
			return err
		}
		if c.EventCount != r.EventCount || c.EventsHead != r.HeadHash {
			return &store.ChainError{Seq: r.EventCount, Reason: fmt.Sprintf("receipt covers %d events ending %s, the stored chain has %d ending %s", c.EventCount, c.EventsHead, r.EventCount, r.HeadHash)}
		}
		if !store.IsTerminal(c.State) {
			return fmt.Errorf("complete run %s in state %q: %w", runID, c.State, store.ErrInvalidState)
		}
		r.State, r.Receipt, r.HasReceipt, r.Failure, r.ClaimState, r.UpdatedAt = c.State, c.Receipt, c.Receipt != nil, c.Failure, store.ClaimEnded, now
		out = r
		return saveRun(ctx, tx, r)
	})
	return out, err
}

func listEvents(ctx context.Context, q queryer, runID string, afterSeq int64, limit int) ([]store.Event, error) {
	var lim any // NULL: no limit
	if limit > 0 {
		lim = limit
	}
	rows, err := q.Query(ctx, "SELECT run_id, seq, hash, prev, type, data FROM events WHERE run_id = $1 AND seq > $2 ORDER BY seq LIMIT $3", runID, afterSeq, lim)
	return collect(rows, err, "list events of "+runID, scanEvent)
}

func (s *Store) ListEvents(ctx context.Context, runID string, afterSeq int64, limit int) ([]store.Event, error) {
	return listEvents(ctx, s.pool, runID, afterSeq, limit)
}

// --- expiry ---

// sweepBatch bounds the runs one expiry pass ends.
const sweepBatch = 500

// endRuns fails every run the condition selects, up to sweepBatch. Rows
// are taken FOR UPDATE SKIP LOCKED, so replicas sweeping at the same time
// split the work and each run is ended once.
func (s *Store) endRuns(ctx context.Context, what, cond string, a []any, claimState string, now time.Time, end store.EndFunc) ([]store.Run, error) {
	var out []store.Run
	err := s.tx(ctx, func(tx pgx.Tx) error {
		out = nil
		rows, err := tx.Query(ctx, "SELECT "+runCols+" FROM runs WHERE "+cond+" ORDER BY created_at, id LIMIT "+fmt.Sprint(sweepBatch)+" FOR UPDATE SKIP LOCKED", a...)
		runs, err := collect(rows, err, what, scanRun)
		if err != nil {
			return err
		}
		for _, r := range runs {
			head, err := headEvent(ctx, tx, r)
			if err != nil {
				return err
			}
			e, err := end(r, head)
			if err != nil {
				return fmt.Errorf("%s %s: %w", what, r.ID, err)
			}
			if err := appendChain(ctx, tx, &r, e.Events); err != nil {
				return err
			}
			r.State, r.Failure, r.UpdatedAt = store.StateFailed, e.Failure, now
			if claimState != "" {
				r.ClaimState = claimState
			}
			if err := saveRun(ctx, tx, r); err != nil {
				return err
			}
			out = append(out, r)
		}
		return nil
	})
	return out, err
}

func (s *Store) ExpireLeases(ctx context.Context, now time.Time, end store.EndFunc) ([]store.Run, error) {
	return s.endRuns(ctx, "expire leases", "claim_state = 'active' AND lease_until <= $1", []any{ts(now)}, store.ClaimExpired, now, end)
}

func (s *Store) ExpireContracts(ctx context.Context, now time.Time, end store.EndFunc) ([]store.Run, error) {
	return s.endRuns(ctx, "expire contracts", "state = 'created' AND expires_at <= $1", []any{ts(now)}, "", now, end)
}

func (s *Store) ExpireApprovals(ctx context.Context, createdBefore, now time.Time, end store.EndFunc) ([]store.Run, error) {
	return s.endRuns(ctx, "expire approvals", "state = 'awaiting_approval' AND created_at < $1", []any{ts(createdBefore)}, "", now, end)
}
