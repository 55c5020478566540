package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"warrant.dev/warrant/internal/store"
)

// runListCols are the columns of a run without its contract and receipt.
const runListCols = `id, state, pool, agent_kind, isolation, prompt, requester_id, requester_name, created_at, updated_at, details,
	contract_hash, expires_at, secret_names, runner_id, claim_token_hash, claim_state, claimed_at, lease_until,
	cancel_actor_kind, cancel_actor_id, cancel_reason, cancel_at, failure_class, failure_message,
	event_count, head_hash, head_type, receipt IS NOT NULL`

const runCols = runListCols + ", contract, receipt"

func scanRunRow(sc interface{ Scan(...any) error }, full bool) (store.Run, error) {
	var r store.Run
	var created, updated, expires, claimed, lease, cancelAt int64
	var secretNames, cancelKind, cancelID, cancelReason, failClass, failMsg string
	dest := []any{&r.ID, &r.State, &r.Pool, &r.AgentKind, &r.Isolation, &r.Prompt, &r.RequesterID, &r.RequesterName, &created, &updated, &r.Details,
		&r.ContractHash, &expires, &secretNames, &r.RunnerID, &r.ClaimTokenHash, &r.ClaimState, &claimed, &lease,
		&cancelKind, &cancelID, &cancelReason, &cancelAt, &failClass, &failMsg,
		&r.EventCount, &r.HeadHash, &r.HeadType, &r.HasReceipt}
	if full {
		dest = append(dest, &r.Contract, &r.Receipt)
	}
	if err := sc.Scan(dest...); err != nil {
		return r, err
	}
	r.CreatedAt, r.UpdatedAt, r.ExpiresAt, r.ClaimedAt, r.LeaseUntil = fromMS(created), fromMS(updated), fromMS(expires), fromMS(claimed), fromMS(lease)
	r.SecretNames = parseList(secretNames)
	if cancelAt != 0 {
		r.Cancel = &store.Cancellation{ActorKind: cancelKind, ActorID: cancelID, Reason: cancelReason, At: fromMS(cancelAt)}
	}
	if failClass != "" {
		r.Failure = &store.Failure{Class: failClass, Message: failMsg}
	}
	return r, nil
}

func getRun(ctx context.Context, q queryer, id string) (store.Run, error) {
	r, err := scanRunRow(q.QueryRowContext(ctx, "SELECT "+runCols+" FROM runs WHERE id = ?", id), true)
	if err != nil {
		return r, notFound(err, "run "+id)
	}
	return r, nil
}

// saveRun writes every mutable column of r.
func saveRun(ctx context.Context, q queryer, r store.Run) error {
	var ck, ci, cr string
	var ca int64
	if r.Cancel != nil {
		ck, ci, cr, ca = r.Cancel.ActorKind, r.Cancel.ActorID, r.Cancel.Reason, ms(r.Cancel.At)
	}
	var fc, fm string
	if r.Failure != nil {
		fc, fm = r.Failure.Class, r.Failure.Message
	}
	_, err := q.ExecContext(ctx, `UPDATE runs SET state = ?, updated_at = ?, details = ?, contract = ?, contract_hash = ?, expires_at = ?, secret_names = ?,
		runner_id = ?, claim_token_hash = ?, claim_state = ?, claimed_at = ?, lease_until = ?,
		cancel_actor_kind = ?, cancel_actor_id = ?, cancel_reason = ?, cancel_at = ?, failure_class = ?, failure_message = ?,
		receipt = ?, event_count = ?, head_hash = ?, head_type = ? WHERE id = ?`,
		r.State, ms(r.UpdatedAt), r.Details, r.Contract, r.ContractHash, ms(r.ExpiresAt), jsonList(r.SecretNames),
		r.RunnerID, r.ClaimTokenHash, r.ClaimState, ms(r.ClaimedAt), ms(r.LeaseUntil),
		ck, ci, cr, ca, fc, fm, r.Receipt, r.EventCount, r.HeadHash, r.HeadType, r.ID)
	if isUnique(err) {
		return fmt.Errorf("update run %s: %w", r.ID, store.ErrConflict)
	}
	if err != nil {
		return fmt.Errorf("update run %s: %w", r.ID, err)
	}
	return nil
}

// appendChain appends events to r's chain (in the transaction q), checking
// that each extends the head; r's head fields are updated. The caller
// saves r.
func appendChain(ctx context.Context, q queryer, r *store.Run, events []store.Event) error {
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
		if _, err := q.ExecContext(ctx, "INSERT INTO events (run_id, seq, hash, prev, type, data) VALUES (?,?,?,?,?,?)", r.ID, e.Seq, e.Hash, e.Prev, e.Type, e.Data); err != nil {
			if isUnique(err) {
				return &store.ChainError{Seq: e.Seq, Reason: "seq already recorded"}
			}
			return fmt.Errorf("append event %d of %s: %w", e.Seq, r.ID, err)
		}
		r.EventCount, r.HeadHash, r.HeadType = e.Seq+1, e.Hash, e.Type
	}
	return nil
}

func headEvent(ctx context.Context, q queryer, r store.Run) (*store.Event, error) {
	if r.EventCount == 0 {
		return nil, nil
	}
	e, err := scanEvent(q.QueryRowContext(ctx, "SELECT run_id, seq, hash, prev, type, data FROM events WHERE run_id = ? AND seq = ?", r.ID, r.EventCount-1))
	if err != nil {
		return nil, notFound(err, "head event of "+r.ID)
	}
	return &e, nil
}

func scanEvent(sc interface{ Scan(...any) error }) (store.Event, error) {
	var e store.Event
	err := sc.Scan(&e.RunID, &e.Seq, &e.Hash, &e.Prev, &e.Type, &e.Data)
	return e, err
}

func (s *Store) CreateRun(ctx context.Context, r store.Run, events []store.Event) error {
	return s.tx(ctx, func(tx txQueryer) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO runs (id, state, pool, agent_kind, isolation, prompt, requester_id, requester_name, created_at, updated_at)
			VALUES (?,?,?,?,?,?,?,?,?,?)`, r.ID, r.State, r.Pool, r.AgentKind, r.Isolation, r.Prompt, r.RequesterID, r.RequesterName, ms(r.CreatedAt), ms(r.UpdatedAt))
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
	return getRun(ctx, s.r, id)
}

func (s *Store) ListRuns(ctx context.Context, f store.RunFilter) ([]store.Run, error) {
	var where []string
	var args []any
	add := func(cond string, v any) { where = append(where, cond); args = append(args, v) }
	if f.State != "" {
		add("state = ?", f.State)
	}
	if f.Pool != "" {
		add("pool = ?", f.Pool)
	}
	if f.AgentKind != "" {
		add("agent_kind = ?", f.AgentKind)
	}
	if f.RequesterID != "" {
		add("requester_id = ?", f.RequesterID)
	}
	if f.RequesterName != "" {
		add("requester_name = ?", f.RequesterName)
	}
	if f.Before != nil {
		where = append(where, "(created_at < ? OR (created_at = ? AND id < ?))")
		args = append(args, ms(f.Before.At), ms(f.Before.At), f.Before.ID)
	}
	limit := f.Limit
	if limit <= 0 {
		limit = 50
	}
	q := "SELECT " + runListCols + " FROM runs"
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY created_at DESC, id DESC LIMIT ?"
	args = append(args, limit)
	return s.queryRuns(ctx, q, false, args...)
}

func (s *Store) queryRuns(ctx context.Context, q string, full bool, args ...any) ([]store.Run, error) {
	rows, err := s.rq.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list runs: %w", err)
	}
	defer rows.Close()
	var out []store.Run
	for rows.Next() {
		r, err := scanRunRow(rows, full)
		if err != nil {
			return nil, fmt.Errorf("list runs: %w", err)
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

func (s *Store) RunsUpdatedSince(ctx context.Context, since time.Time, after *store.RunCursor, limit int) ([]store.Run, error) {
	if limit <= 0 {
		limit = 100
	}
	if after == nil {
		return s.queryRuns(ctx, "SELECT "+runCols+" FROM runs WHERE updated_at >= ? ORDER BY updated_at, id LIMIT ?", true, ms(since), limit)
	}
	return s.queryRuns(ctx, "SELECT "+runCols+" FROM runs WHERE updated_at >= ? AND (updated_at > ? OR (updated_at = ? AND id > ?)) ORDER BY updated_at, id LIMIT ?", true,
		ms(since), ms(after.At), ms(after.At), after.ID, limit)
}

func (s *Store) CountRunsByState(ctx context.Context) (map[string]int, error) {
	rows, err := s.rq.QueryContext(ctx, "SELECT state, count(*) FROM runs GROUP BY state")
	if err != nil {
		return nil, fmt.Errorf("count runs: %w", err)
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var st string
		var n int
		if err := rows.Scan(&st, &n); err != nil {
			return nil, fmt.Errorf("count runs: %w", err)
		}
		out[st] = n
	}
	return out, rows.Err()
}

func (s *Store) ApproveRun(ctx context.Context, id string, is store.Issue, now time.Time) (store.Run, error) {
	var out store.Run
	err := s.tx(ctx, func(tx txQueryer) error {
		r, err := getRun(ctx, tx, id)
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
	err := s.tx(ctx, func(tx txQueryer) error {
		r, err := getRun(ctx, tx, id)
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
	err := s.tx(ctx, func(tx txQueryer) error {
		r, err := getRun(ctx, tx, id)
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
	err := s.tx(ctx, func(tx txQueryer) error {
		args := []any{store.StateCreated, req.Pool}
		for _, t := range req.Tiers {
			args = append(args, t)
		}
		q := "SELECT " + runCols + " FROM runs WHERE state = ? AND pool = ? AND isolation IN (" + placeholders(len(req.Tiers)) + ") ORDER BY created_at, id LIMIT 1"
		for {
			r, err := scanRunRow(tx.QueryRowContext(ctx, q, args...), true)
			if errors.Is(err, sql.ErrNoRows) {
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
			for _, name := range r.SecretNames {
				sec, err := getSecret(ctx, tx, name)
				if errors.Is(err, store.ErrNotFound) {
					continue
				}
				if err != nil {
					return err
				}
				secrets = append(secrets, sec)
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

// claimedRun loads the run for a claim token in a transaction and checks
// the claim.
func claimedRun(ctx context.Context, q queryer, runID, tokenHash string, now time.Time) (store.Run, error) {
	r, err := getRun(ctx, q, runID)
	if err != nil {
		return r, err
	}
	if tokenHash == "" || r.ClaimTokenHash != tokenHash {
		return r, fmt.Errorf("claim on run %s: %w", runID, store.ErrNotFound)
	}
	return r, checkClaim(r, now)
}

// claimByTokenQuery finds a run by its claim token. Repeating the
// predicate of the partial index runs_claim_token (not the empty string)
// lets SQLite use it, as it cannot prove that "= ?" implies it: without it
// every request made with a claim token scanned the whole runs table.
const claimByTokenQuery = "SELECT " + runCols + " FROM runs WHERE claim_token_hash = ? AND claim_token_hash != ''"

func (s *Store) GetClaim(ctx context.Context, tokenHash string, now time.Time) (store.Run, error) {
	if tokenHash == "" {
		return store.Run{}, fmt.Errorf("claim token: %w", store.ErrNotFound)
	}
	r, err := scanRunRow(s.rq.QueryRowContext(ctx, claimByTokenQuery, tokenHash), true)
	if err != nil {
		return r, notFound(err, "claim token")
	}
	return r, checkClaim(r, now)
}

func (s *Store) Heartbeat(ctx context.Context, runID, tokenHash, state string, now, leaseUntil time.Time) (store.Run, error) {
	var out store.Run
	err := s.tx(ctx, func(tx txQueryer) error {
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
		if _, err := tx.ExecContext(ctx, "UPDATE runners SET last_seen_at = ? WHERE id = ?", ms(now), r.RunnerID); err != nil {
			return fmt.Errorf("heartbeat: %w", err)
		}
		out = r
		return saveRun(ctx, tx, r)
	})
	return out, err
}

func (s *Store) AppendEvents(ctx context.Context, runID, tokenHash string, events []store.Event, now time.Time) (store.Run, error) {
	var out store.Run
	err := s.tx(ctx, func(tx txQueryer) error {
		r, err := claimedRun(ctx, tx, runID, tokenHash, now)
		if err != nil {
			return err
		}
		var fresh []store.Event
		for _, e := range events {
			if e.Seq >= 0 && e.Seq < r.EventCount && len(fresh) == 0 {
				var stored string
				if err := tx.QueryRowContext(ctx, "SELECT hash FROM events WHERE run_id = ? AND seq = ?", runID, e.Seq).Scan(&stored); err != nil {
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
	err := s.tx(ctx, func(tx txQueryer) error {
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
	query := "SELECT run_id, seq, hash, prev, type, data FROM events WHERE run_id = ? AND seq > ? ORDER BY seq"
	args := []any{runID, afterSeq}
	if limit > 0 {
		query += " LIMIT ?"
		args = append(args, limit)
	}
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("list events of %s: %w", runID, err)
	}
	defer rows.Close()
	var out []store.Event
	for rows.Next() {
		e, err := scanEvent(rows)
		if err != nil {
			return nil, fmt.Errorf("list events of %s: %w", runID, err)
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

func (s *Store) ListEvents(ctx context.Context, runID string, afterSeq int64, limit int) ([]store.Event, error) {
	return listEvents(ctx, s.r, runID, afterSeq, limit)
}

// --- expiry ---

// endRuns applies end to every run the query selects, failing each.
func (s *Store) endRuns(ctx context.Context, what, query string, args []any, claimState string, now time.Time, end store.EndFunc) ([]store.Run, error) {
	var out []store.Run
	err := s.tx(ctx, func(tx txQueryer) error {
		rows, err := tx.QueryContext(ctx, "SELECT "+runCols+" FROM runs WHERE "+query+" ORDER BY created_at, id LIMIT 500", args...)
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		var runs []store.Run
		for rows.Next() {
			r, err := scanRunRow(rows, true)
			if err != nil {
				rows.Close()
				return fmt.Errorf("%s: %w", what, err)
			}
			runs = append(runs, r)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("%s: %w", what, err)
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
	return s.endRuns(ctx, "expire leases", "claim_state = 'active' AND lease_until <= ?", []any{ms(now)}, store.ClaimExpired, now, end)
}

func (s *Store) ExpireContracts(ctx context.Context, now time.Time, end store.EndFunc) ([]store.Run, error) {
	return s.endRuns(ctx, "expire contracts", "state = ? AND expires_at != 0 AND expires_at <= ?", []any{store.StateCreated, ms(now)}, "", now, end)
}

func (s *Store) ExpireApprovals(ctx context.Context, createdBefore, now time.Time, end store.EndFunc) ([]store.Run, error) {
	return s.endRuns(ctx, "expire approvals", "state = ? AND created_at < ?", []any{store.StateAwaitingApproval, ms(createdBefore)}, "", now, end)
}
