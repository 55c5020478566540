package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"warrant.dev/warrant/internal/store"
)

// later returns the later of two times.
func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func (s *Store) PutBlobMeta(ctx context.Context, m store.BlobMeta) (bool, error) {
	ref := ts(later(m.LastRefAt, m.CreatedAt))
	tag, err := s.pool.Exec(ctx, "INSERT INTO blobs (hash, size, created_at, last_ref_at) VALUES ($1,$2,$3,$4) ON CONFLICT (hash) DO NOTHING",
		m.Hash, m.Size, ts(m.CreatedAt), ref)
	if err != nil {
		return false, fmt.Errorf("index blob: %w", err)
	}
	if tag.RowsAffected() > 0 {
		return true, nil
	}
	if _, err := s.pool.Exec(ctx, "UPDATE blobs SET last_ref_at = $1 WHERE hash = $2 AND last_ref_at < $1", ref, m.Hash); err != nil {
		return false, fmt.Errorf("index blob: %w", err)
	}
	return false, nil
}

func (s *Store) GetBlobMeta(ctx context.Context, hash string) (store.BlobMeta, error) {
	var m store.BlobMeta
	err := s.pool.QueryRow(ctx, "SELECT hash, size, created_at, last_ref_at FROM blobs WHERE hash = $1", hash).Scan(&m.Hash, &m.Size, tsp(&m.CreatedAt), tsp(&m.LastRefAt))
	if err != nil {
		return m, notFound(err, "blob "+hash)
	}
	return m, nil
}

func (s *Store) MissingBlobs(ctx context.Context, hashes []string) ([]string, error) {
	missing := []string{}
	if len(hashes) == 0 {
		return missing, nil
	}
	rows, err := s.pool.Query(ctx, "SELECT hash FROM blobs WHERE hash = ANY($1)", hashes)
	have, err := collect(rows, err, "missing blobs", func(r pgx.Row) (string, error) {
		var h string
		err := r.Scan(&h)
		return h, err
	})
	if err != nil {
		return nil, err
	}
	seen := make(map[string]bool, len(have)+len(hashes))
	for _, h := range have {
		seen[h] = true
	}
	for _, h := range hashes {
		if !seen[h] {
			seen[h] = true
			missing = append(missing, h)
		}
	}
	return missing, nil
}

func (s *Store) RefBlobs(ctx context.Context, principalID string, hashes []string, at time.Time) error {
	if len(hashes) == 0 {
		return nil
	}
	sorted := sortedUnique(hashes) // one lock order for every caller
	return s.tx(ctx, func(tx pgx.Tx) error {
		if principalID != "" {
			_, err := tx.Exec(ctx, "INSERT INTO blob_refs (hash, principal_id) SELECT h, $2 FROM unnest($1::text[]) AS h ORDER BY h ON CONFLICT DO NOTHING", sorted, principalID)
			if err != nil {
				return fmt.Errorf("reference blobs: %w", err)
			}
		}
		// Rows already at or past at are not rewritten (nor locked for
		// long): every run submission references its whole workspace.
		_, err := tx.Exec(ctx, `UPDATE blobs SET last_ref_at = $1 FROM (SELECT hash FROM blobs WHERE hash = ANY($2) AND last_ref_at < $1 ORDER BY hash FOR UPDATE) AS l
			WHERE blobs.hash = l.hash AND blobs.last_ref_at < $1`, ts(at), sorted)
		if err != nil {
			return fmt.Errorf("reference blobs: %w", err)
		}
		return nil
	})
}

func (s *Store) AddRunOutput(ctx context.Context, runID, hash string, at time.Time) error {
	return s.tx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "INSERT INTO run_outputs (run_id, hash, created_at) VALUES ($1,$2,$3) ON CONFLICT DO NOTHING", runID, hash, ts(at)); err != nil {
			if isForeignKey(err) {
				return fmt.Errorf("record output of run %s: %w", runID, store.ErrNotFound)
			}
			return fmt.Errorf("record output of run %s: %w", runID, err)
		}
		if _, err := tx.Exec(ctx, "UPDATE blobs SET last_ref_at = $1 WHERE hash = $2 AND last_ref_at < $1", ts(at), hash); err != nil {
			return fmt.Errorf("record output of run %s: %w", runID, err)
		}
		return nil
	})
}

func (s *Store) RunHasOutput(ctx context.Context, runID, hash string) (bool, error) {
	var ok bool
	err := s.pool.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM run_outputs WHERE run_id = $1 AND hash = $2)", runID, hash).Scan(&ok)
	if err != nil {
		return false, fmt.Errorf("run output: %w", err)
	}
	return ok, nil
}

func (s *Store) BlobReadableBy(ctx context.Context, hash, principalID string) (bool, error) {
	var ok bool
	err := s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM blob_refs WHERE hash = $1 AND principal_id = $2)
		OR EXISTS (SELECT 1 FROM run_outputs o JOIN runs r ON r.id = o.run_id WHERE o.hash = $1 AND r.requester_id = $2)`, hash, principalID).Scan(&ok)
	if err != nil {
		return false, fmt.Errorf("blob access: %w", err)
	}
	return ok, nil
}

// --- retention ---

// The deletions take their rows FOR UPDATE SKIP LOCKED and record only
// what they deleted: replicas applying retention at the same time split
// the rows, and each deletion is logged once.

func (s *Store) DeleteRunsEndedBefore(ctx context.Context, cutoff, now time.Time, reason string, limit int) ([]store.RetentionRecord, error) {
	if limit <= 0 {
		limit = 500
	}
	var out []store.RetentionRecord
	err := s.tx(ctx, func(tx pgx.Tx) error {
		out = nil
		rows, err := tx.Query(ctx, `SELECT id, octet_length(coalesce(contract, ''::bytea)) + octet_length(coalesce(receipt, ''::bytea)) + octet_length(coalesce(details, ''::bytea)) +
			coalesce((SELECT sum(octet_length(data)) FROM events WHERE run_id = runs.id), 0)
			FROM runs WHERE state IN ('completed', 'failed', 'cancelled') AND updated_at < $1 ORDER BY updated_at, id LIMIT $2 FOR UPDATE OF runs SKIP LOCKED`,
			ts(cutoff), limit)
		recs, err := collect(rows, err, "retention", func(r pgx.Row) (store.RetentionRecord, error) {
			rec := store.RetentionRecord{At: now, Kind: "run", Reason: reason}
			err := r.Scan(&rec.ID, &rec.Bytes)
			return rec, err
		})
		if err != nil {
			return err
		}
		for _, rec := range recs {
			tag, err := tx.Exec(ctx, "DELETE FROM runs WHERE id = $1", rec.ID)
			if err != nil {
				return fmt.Errorf("retention: delete run %s: %w", rec.ID, err)
			}
			if tag.RowsAffected() == 0 {
				continue
			}
			if err := logRetention(ctx, tx, rec); err != nil {
				return err
			}
			out = append(out, rec)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func logRetention(ctx context.Context, q queryer, rec store.RetentionRecord) error {
	_, err := q.Exec(ctx, "INSERT INTO retention_log (at, kind, ref, reason, bytes) VALUES ($1,$2,$3,$4,$5)", ts(rec.At), rec.Kind, rec.ID, rec.Reason, rec.Bytes)
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
	err := s.tx(ctx, func(tx pgx.Tx) error {
		out = nil
		rows, err := tx.Query(ctx, "SELECT hash, size FROM blobs WHERE last_ref_at < $1 ORDER BY last_ref_at, hash LIMIT $2 FOR UPDATE SKIP LOCKED", ts(cutoff), limit)
		recs, err := collect(rows, err, "retention", func(r pgx.Row) (store.RetentionRecord, error) {
			rec := store.RetentionRecord{At: now, Kind: "blob", Reason: reason}
			err := r.Scan(&rec.ID, &rec.Bytes)
			return rec, err
		})
		if err != nil {
			return err
		}
		for _, rec := range recs {
			tag, err := tx.Exec(ctx, "DELETE FROM blobs WHERE hash = $1", rec.ID)
			if err != nil {
				return fmt.Errorf("retention: delete blob %s: %w", rec.ID, err)
			}
			if tag.RowsAffected() == 0 {
				continue
			}
			for _, q := range []string{"DELETE FROM blob_refs WHERE hash = $1", "DELETE FROM run_outputs WHERE hash = $1"} {
				if _, err := tx.Exec(ctx, q, rec.ID); err != nil {
					return fmt.Errorf("retention: delete blob %s: %w", rec.ID, err)
				}
			}
			if err := logRetention(ctx, tx, rec); err != nil {
				return err
			}
			out = append(out, rec)
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
	rows, err := s.pool.Query(ctx, "SELECT at, kind, ref, reason, bytes FROM retention_log ORDER BY id DESC LIMIT $1", limit)
	return collect(rows, err, "retention log", func(r pgx.Row) (store.RetentionRecord, error) {
		var rec store.RetentionRecord
		err := r.Scan(tsp(&rec.At), &rec.Kind, &rec.ID, &rec.Reason, &rec.Bytes)
		return rec, err
	})
}
