package sqlite

import (
	"context"
	"fmt"
	"strings"
	"time"

	"warrant.dev/warrant/internal/store"
)

// maxParams bounds the placeholders of one statement.
const maxParams = 500

func (s *Store) PutBlobMeta(ctx context.Context, m store.BlobMeta) (bool, error) {
	var created bool
	err := s.tx(ctx, func(tx txQueryer) error {
		res, err := tx.ExecContext(ctx, "INSERT INTO blobs (hash, size, created_at, last_ref_at) VALUES (?,?,?,?) ON CONFLICT(hash) DO NOTHING",
			m.Hash, m.Size, ms(m.CreatedAt), ms(later(m.LastRefAt, m.CreatedAt)))
		if err != nil {
			return fmt.Errorf("index blob: %w", err)
		}
		n, _ := res.RowsAffected()
		created = n > 0
		if !created {
			_, err = tx.ExecContext(ctx, "UPDATE blobs SET last_ref_at = max(last_ref_at, ?) WHERE hash = ?", ms(later(m.LastRefAt, m.CreatedAt)), m.Hash)
			if err != nil {
				return fmt.Errorf("index blob: %w", err)
			}
		}
		return nil
	})
	return created, err
}

// later returns the later of two times.
func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func (s *Store) GetBlobMeta(ctx context.Context, hash string) (store.BlobMeta, error) {
	var m store.BlobMeta
	var created, ref int64
	err := s.rq.QueryRowContext(ctx, "SELECT hash, size, created_at, last_ref_at FROM blobs WHERE hash = ?", hash).Scan(&m.Hash, &m.Size, &created, &ref)
	if err != nil {
		return m, notFound(err, "blob "+hash)
	}
	m.CreatedAt, m.LastRefAt = fromMS(created), fromMS(ref)
	return m, nil
}

func (s *Store) MissingBlobs(ctx context.Context, hashes []string) ([]string, error) {
	have := make(map[string]bool, len(hashes))
	for start := 0; start < len(hashes); start += maxParams {
		chunk := hashes[start:min(start+maxParams, len(hashes))]
		args := make([]any, len(chunk))
		for i, h := range chunk {
			args[i] = h
		}
		rows, err := s.r.QueryContext(ctx, "SELECT hash FROM blobs WHERE hash IN ("+placeholders(len(chunk))+")", args...)
		if err != nil {
			return nil, fmt.Errorf("missing blobs: %w", err)
		}
		for rows.Next() {
			var h string
			if err := rows.Scan(&h); err != nil {
				rows.Close()
				return nil, fmt.Errorf("missing blobs: %w", err)
			}
			have[h] = true
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("missing blobs: %w", err)
		}
	}
	missing := []string{}
	seen := map[string]bool{}
	for _, h := range hashes {
		if !have[h] && !seen[h] {
			seen[h] = true
			missing = append(missing, h)
		}
	}
	return missing, nil
}

func (s *Store) RefBlobs(ctx context.Context, principalID string, hashes []string, at time.Time) error {
	return s.tx(ctx, func(tx txQueryer) error {
		const chunk = maxParams / 2
		for start := 0; start < len(hashes); start += chunk {
			part := hashes[start:min(start+chunk, len(hashes))]
			if principalID != "" {
				args := make([]any, 0, 2*len(part))
				for _, h := range part {
					args = append(args, h, principalID)
				}
				q := "INSERT INTO blob_refs (hash, principal_id) VALUES " + strings.TrimSuffix(strings.Repeat("(?,?),", len(part)), ",") + " ON CONFLICT DO NOTHING"
				if _, err := tx.tx.ExecContext(ctx, q, args...); err != nil { // a variable query: not cached
					return fmt.Errorf("reference blobs: %w", err)
				}
			}
			args := make([]any, 0, len(part)+1)
			args = append(args, ms(at))
			for _, h := range part {
				args = append(args, h)
			}
			if _, err := tx.tx.ExecContext(ctx, "UPDATE blobs SET last_ref_at = max(last_ref_at, ?) WHERE hash IN ("+placeholders(len(part))+")", args...); err != nil { // a variable query: not cached
				return fmt.Errorf("reference blobs: %w", err)
			}
		}
		return nil
	})
}

func (s *Store) AddRunOutput(ctx context.Context, runID, hash string, at time.Time) error {
	return s.tx(ctx, func(tx txQueryer) error {
		if _, err := tx.ExecContext(ctx, "INSERT INTO run_outputs (run_id, hash, created_at) VALUES (?,?,?) ON CONFLICT DO NOTHING", runID, hash, ms(at)); err != nil {
			return notFoundFK(err, "record output of run "+runID)
		}
		if _, err := tx.ExecContext(ctx, "UPDATE blobs SET last_ref_at = max(last_ref_at, ?) WHERE hash = ?", ms(at), hash); err != nil {
			return fmt.Errorf("record output of run %s: %w", runID, err)
		}
		return nil
	})
}

// notFoundFK maps a foreign key failure to ErrNotFound.
func notFoundFK(err error, what string) error {
	if isForeignKey(err) {
		return fmt.Errorf("%s: %w", what, store.ErrNotFound)
	}
	return fmt.Errorf("%s: %w", what, err)
}

func (s *Store) RunHasOutput(ctx context.Context, runID, hash string) (bool, error) {
	var n int
	err := s.rq.QueryRowContext(ctx, "SELECT count(*) FROM run_outputs WHERE run_id = ? AND hash = ?", runID, hash).Scan(&n)
	if err != nil {
		return false, fmt.Errorf("run output: %w", err)
	}
	return n > 0, nil
}

func (s *Store) BlobReadableBy(ctx context.Context, hash, principalID string) (bool, error) {
	var n int
	err := s.rq.QueryRowContext(ctx, `SELECT
		(SELECT count(*) FROM blob_refs WHERE hash = ? AND principal_id = ?) +
		(SELECT count(*) FROM run_outputs o JOIN runs r ON r.id = o.run_id WHERE o.hash = ? AND r.requester_id = ?)`,
		hash, principalID, hash, principalID).Scan(&n)
	if err != nil {
		return false, fmt.Errorf("blob access: %w", err)
	}
	return n > 0, nil
}

// --- retention ---

func (s *Store) DeleteRunsEndedBefore(ctx context.Context, cutoff, now time.Time, reason string, limit int) ([]store.RetentionRecord, error) {
	if limit <= 0 {
		limit = 500
	}
	var out []store.RetentionRecord
	err := s.tx(ctx, func(tx txQueryer) error {
		rows, err := tx.QueryContext(ctx, `SELECT id, length(coalesce(contract, '')) + length(coalesce(receipt, '')) + length(coalesce(details, '')) +
			coalesce((SELECT sum(length(data)) FROM events WHERE run_id = runs.id), 0)
			FROM runs WHERE state IN (?,?,?) AND updated_at < ? ORDER BY updated_at, id LIMIT ?`,
			store.StateCompleted, store.StateFailed, store.StateCancelled, ms(cutoff), limit)
		if err != nil {
			return fmt.Errorf("retention: %w", err)
		}
		for rows.Next() {
			rec := store.RetentionRecord{At: now, Kind: "run", Reason: reason}
			if err := rows.Scan(&rec.ID, &rec.Bytes); err != nil {
				rows.Close()
				return fmt.Errorf("retention: %w", err)
			}
			out = append(out, rec)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("retention: %w", err)
		}
		for _, rec := range out {
			if _, err := tx.ExecContext(ctx, "DELETE FROM runs WHERE id = ?", rec.ID); err != nil {
				return fmt.Errorf("retention: delete run %s: %w", rec.ID, err)
			}
			if err := logRetention(ctx, tx, rec); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func logRetention(ctx context.Context, q queryer, rec store.RetentionRecord) error {
	_, err := q.ExecContext(ctx, "INSERT INTO retention_log (at, kind, ref, reason, bytes) VALUES (?,?,?,?,?)", ms(rec.At), rec.Kind, rec.ID, rec.Reason, rec.Bytes)
	if err != nil {
		return fmt.Errorf("retention log: %w", err)
	}
	return nil
}

func (s *Store) DeleteBlobsBefore(ctx context.Context, cutoff, now time.Time, reason string, limit int) ([]store.RetentionRecord, error) {
	if limit <= 0 {
		limit = 500
	}
	var out []store.RetentionRecord
	err := s.tx(ctx, func(tx txQueryer) error {
		rows, err := tx.QueryContext(ctx, "SELECT hash, size FROM blobs WHERE last_ref_at < ? ORDER BY last_ref_at, hash LIMIT ?", ms(cutoff), limit)
		if err != nil {
			return fmt.Errorf("retention: %w", err)
		}
		for rows.Next() {
			rec := store.RetentionRecord{At: now, Kind: "blob", Reason: reason}
			if err := rows.Scan(&rec.ID, &rec.Bytes); err != nil {
				rows.Close()
				return fmt.Errorf("retention: %w", err)
			}
			out = append(out, rec)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("retention: %w", err)
		}
		for _, rec := range out {
			for _, q := range []string{"DELETE FROM blobs WHERE hash = ?", "DELETE FROM blob_refs WHERE hash = ?", "DELETE FROM run_outputs WHERE hash = ?"} {
				if _, err := tx.ExecContext(ctx, q, rec.ID); err != nil {
					return fmt.Errorf("retention: delete blob %s: %w", rec.ID, err)
				}
			}
			if err := logRetention(ctx, tx, rec); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func (s *Store) ListRetention(ctx context.Context, limit int) ([]store.RetentionRecord, error) {
	if limit <= 0 {
		limit = 1000
	}
	rows, err := s.rq.QueryContext(ctx, "SELECT at, kind, ref, reason, bytes FROM retention_log ORDER BY id DESC LIMIT ?", limit)
	if err != nil {
		return nil, fmt.Errorf("retention log: %w", err)
	}
	defer rows.Close()
	var out []store.RetentionRecord
	for rows.Next() {
		var rec store.RetentionRecord
		var at int64
		if err := rows.Scan(&at, &rec.Kind, &rec.ID, &rec.Reason, &rec.Bytes); err != nil {
			return nil, fmt.Errorf("retention log: %w", err)
		}
		rec.At = fromMS(at)
		out = append(out, rec)
	}
	return out, rows.Err()
}
