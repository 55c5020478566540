// Package sqlite is the embedded Store: one SQLite database file in WAL
// mode (pure-Go driver modernc.org/sqlite), with foreign keys, a busy
// timeout and versioned migrations embedded in the binary. All writes go
// through one connection that begins IMMEDIATE transactions, so every
// multi-step operation (a claim, an append) is atomic and serialised;
// reads use a separate pool of read-only connections.
package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"warrant.dev/warrant/internal/store"
)

//go:embed migrations/*.sql
var migrationFS embed.FS

// Store is the SQLite implementation of store.Store.
type Store struct {
	w  *sql.DB // the single writer connection
	r  *sql.DB // read-only connections
	wc *stmtCache
	rc *stmtCache
	rq poolQueryer // s.r through its statement cache
}

var _ store.Store = (*Store)(nil)

// Open opens (creating if needed) the database at path and migrates it to
// the current schema. A database written by a newer binary is refused
// with store.ErrSchemaTooNew.
func Open(ctx context.Context, path string) (*Store, error) {
	// The database holds sealed secrets and token hashes: owner-only. SQLite
	// gives its -wal and -shm files the database file's mode.
	if f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE, 0o600); err == nil {
		f.Close()
	} else {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	base := "file:" + (&url.URL{Path: path}).EscapedPath()
	common := "_busy_timeout=10000&_foreign_keys=1&_synchronous=FULL"
	w, err := sql.Open("sqlite", base+"?_txlock=immediate&_journal_mode=WAL&"+common)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	w.SetConnMaxIdleTime(0)
	if err := migrate(ctx, w); err != nil {
		w.Close()
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	r, err := sql.Open("sqlite", base+"?_query_only=1&"+common)
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	r.SetMaxOpenConns(4)
	r.SetMaxIdleConns(4)
	rc := newStmtCache(r)
	return &Store{w: w, r: r, wc: newStmtCache(w), rc: rc, rq: poolQueryer{rc}}, nil
}

// migrations returns the embedded migration scripts in version order.
func migrations() ([]string, error) {
	names, err := fs.Glob(migrationFS, "migrations/*.sql")
	if err != nil {
		return nil, err
	}
	sort.Strings(names)
	out := make([]string, 0, len(names))
	for i, n := range names {
		want := fmt.Sprintf("migrations/%04d_", i+1)
		if !strings.HasPrefix(n, want) {
			return nil, fmt.Errorf("migration %s out of sequence (want %s…)", n, want)
		}
		b, err := migrationFS.ReadFile(n)
		if err != nil {
			return nil, err
		}
		out = append(out, string(b))
	}
	return out, nil
}

// SchemaVersion is the schema version this binary writes.
func SchemaVersion() int {
	m, _ := migrations()
	return len(m)
}

func migrate(ctx context.Context, db *sql.DB) error {
	scripts, err := migrations()
	if err != nil {
		return fmt.Errorf("read migrations: %w", err)
	}
	var version int
	if err := db.QueryRowContext(ctx, "PRAGMA user_version").Scan(&version); err != nil {
		return fmt.Errorf("read schema version: %w", err)
	}
	if version > len(scripts) {
		return fmt.Errorf("%w: database has schema %d, this binary knows up to %d", store.ErrSchemaTooNew, version, len(scripts))
	}
	for v := version; v < len(scripts); v++ {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return fmt.Errorf("migrate to %d: %w", v+1, err)
		}
		if _, err := tx.ExecContext(ctx, scripts[v]); err != nil {
			tx.Rollback()
			return fmt.Errorf("migrate to %d: %w", v+1, err)
		}
		if _, err := tx.ExecContext(ctx, "PRAGMA user_version = "+strconv.Itoa(v+1)); err != nil {
			tx.Rollback()
			return fmt.Errorf("migrate to %d: %w", v+1, err)
		}
		if err := tx.Commit(); err != nil {
			return fmt.Errorf("migrate to %d: %w", v+1, err)
		}
	}
	return nil
}

// Ping reports whether both connection pools answer.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.w.PingContext(ctx); err != nil {
		return err
	}
	return s.r.PingContext(ctx)
}

// Close closes the database. It checkpoints the WAL so the main file is
// complete on its own.
func (s *Store) Close() error {
	s.rc.close()
	s.wc.close()
	_, _ = s.w.Exec("PRAGMA wal_checkpoint(TRUNCATE)")
	return errors.Join(s.r.Close(), s.w.Close())
}

// --- helpers ---

type queryer interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// tx runs fn in one write transaction: committed when fn returns nil,
// rolled back otherwise. A write refused because the disk is full is
// marked store.ErrStorageFull. Queries run through the writer's
// statement cache; the ones it met for the first time are prepared after
// the transaction.
func (s *Store) tx(ctx context.Context, fn func(tx txQueryer) error) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return markFull(fmt.Errorf("begin: %w", err))
	}
	defer s.wc.preparePending(context.WithoutCancel(ctx))
	if err := fn(txQueryer{tx: tx, c: s.wc}); err != nil {
		_ = tx.Rollback()
		return markFull(err)
	}
	if err := tx.Commit(); err != nil {
		return markFull(fmt.Errorf("commit: %w", err))
	}
	return nil
}

// markFull adds store.ErrStorageFull to an error SQLite raised because the
// database could not grow (SQLITE_FULL: the disk is full, or
// max_page_count was reached).
func markFull(err error) error {
	var se *sqlite.Error
	if errors.As(err, &se) && se.Code()&0xff == sqlite3.SQLITE_FULL && !errors.Is(err, store.ErrStorageFull) {
		return fmt.Errorf("%w: %w", store.ErrStorageFull, err)
	}
	return err
}

func ms(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

func fromMS(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.UnixMilli(n).UTC()
}

func isUnique(err error) bool {
	var se *sqlite.Error
	if errors.As(err, &se) {
		return se.Code() == sqlite3.SQLITE_CONSTRAINT_UNIQUE || se.Code() == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY
	}
	return false
}

func isForeignKey(err error) bool {
	var se *sqlite.Error
	return errors.As(err, &se) && se.Code() == sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY
}

func notFound(err error, what string) error {
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("%s: %w", what, store.ErrNotFound)
	}
	return fmt.Errorf("%s: %w", what, err)
}

func mustAffect(res sql.Result, err error, what string) error {
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if n == 0 {
		return fmt.Errorf("%s: %w", what, store.ErrNotFound)
	}
	return nil
}

func jsonList(l []string) string {
	if l == nil {
		l = []string{}
	}
	b, _ := json.Marshal(l)
	return string(b)
}

func parseList(s string) []string {
	var l []string
	_ = json.Unmarshal([]byte(s), &l)
	if l == nil {
		l = []string{}
	}
	return l
}

func placeholders(n int) string {
	return strings.TrimSuffix(strings.Repeat("?,", n), ",")
}

// --- principals and tokens ---

const principalCols = "id, name, kind, role, created_at, disabled_at"

func scanPrincipal(sc interface{ Scan(...any) error }) (store.Principal, error) {
	var p store.Principal
	var created, disabled int64
	err := sc.Scan(&p.ID, &p.Name, &p.Kind, &p.Role, &created, &disabled)
	p.CreatedAt, p.DisabledAt = fromMS(created), fromMS(disabled)
	return p, err
}

const tokenCols = "id, principal_id, hash, created_at, last_used_at, revoked_at"

func scanToken(sc interface{ Scan(...any) error }) (store.Token, error) {
	var t store.Token
	var created, used, revoked int64
	err := sc.Scan(&t.ID, &t.PrincipalID, &t.Hash, &created, &used, &revoked)
	t.CreatedAt, t.LastUsedAt, t.RevokedAt = fromMS(created), fromMS(used), fromMS(revoked)
	return t, err
}

func (s *Store) CreatePrincipal(ctx context.Context, p store.Principal, first store.Token) error {
	return s.tx(ctx, func(tx txQueryer) error {
		_, err := tx.ExecContext(ctx, "INSERT INTO principals ("+principalCols+") VALUES (?,?,?,?,?,?)",
			p.ID, p.Name, p.Kind, p.Role, ms(p.CreatedAt), ms(p.DisabledAt))
		if isUnique(err) {
			return fmt.Errorf("create principal %q: %w", p.Name, store.ErrConflict)
		}
		if err != nil {
			return fmt.Errorf("create principal: %w", err)
		}
		first.PrincipalID = p.ID
		return insertToken(ctx, tx, first)
	})
}

func insertToken(ctx context.Context, q queryer, t store.Token) error {
	_, err := q.ExecContext(ctx, "INSERT INTO tokens ("+tokenCols+") VALUES (?,?,?,?,?,?)",
		t.ID, t.PrincipalID, t.Hash, ms(t.CreatedAt), ms(t.LastUsedAt), ms(t.RevokedAt))
	if isUnique(err) {
		return fmt.Errorf("create token: %w", store.ErrConflict)
	}
	if err != nil {
		return fmt.Errorf("create token: %w", err)
	}
	return nil
}

func (s *Store) GetPrincipal(ctx context.Context, id string) (store.Principal, error) {
	p, err := scanPrincipal(s.rq.QueryRowContext(ctx, "SELECT "+principalCols+" FROM principals WHERE id = ?", id))
	if err != nil {
		return p, notFound(err, "principal "+id)
	}
	return p, nil
}

func (s *Store) ListPrincipals(ctx context.Context) ([]store.Principal, error) {
	rows, err := s.rq.QueryContext(ctx, "SELECT "+principalCols+" FROM principals ORDER BY created_at, id")
	if err != nil {
		return nil, fmt.Errorf("list principals: %w", err)
	}
	defer rows.Close()
	var out []store.Principal
	for rows.Next() {
		p, err := scanPrincipal(rows)
		if err != nil {
			return nil, fmt.Errorf("list principals: %w", err)
		}
		out = append(out, p)
	}
	return out, rows.Err()
}

func (s *Store) DisablePrincipal(ctx context.Context, id string, at time.Time) error {
	return s.tx(ctx, func(tx txQueryer) error {
		res, err := tx.ExecContext(ctx, "UPDATE principals SET disabled_at = CASE WHEN disabled_at = 0 THEN ? ELSE disabled_at END WHERE id = ?", ms(at), id)
		if err := mustAffect(res, err, "disable principal "+id); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, "UPDATE tokens SET revoked_at = ? WHERE principal_id = ? AND revoked_at = 0", ms(at), id)
		if err != nil {
			return fmt.Errorf("revoke tokens of %s: %w", id, err)
		}
		return nil
	})
}

func (s *Store) CreateToken(ctx context.Context, t store.Token) error {
	return s.tx(ctx, func(tx txQueryer) error {
		var disabled int64
		err := tx.QueryRowContext(ctx, "SELECT disabled_at FROM principals WHERE id = ?", t.PrincipalID).Scan(&disabled)
		if err != nil {
			return notFound(err, "principal "+t.PrincipalID)
		}
		if disabled != 0 {
			return fmt.Errorf("principal %s is disabled: %w", t.PrincipalID, store.ErrRevoked)
		}
		return insertToken(ctx, tx, t)
	})
}

func (s *Store) ListTokens(ctx context.Context, principalID string) ([]store.Token, error) {
	q, args := "SELECT "+tokenCols+" FROM tokens ORDER BY created_at, id", []any{}
	if principalID != "" {
		q, args = "SELECT "+tokenCols+" FROM tokens WHERE principal_id = ? ORDER BY created_at, id", []any{principalID}
	}
	rows, err := s.rq.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list tokens: %w", err)
	}
	defer rows.Close()
	var out []store.Token
	for rows.Next() {
		t, err := scanToken(rows)
		if err != nil {
			return nil, fmt.Errorf("list tokens: %w", err)
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

func (s *Store) RevokeToken(ctx context.Context, id string, at time.Time) error {
	return s.tx(ctx, func(tx txQueryer) error {
		res, err := tx.ExecContext(ctx, "UPDATE tokens SET revoked_at = CASE WHEN revoked_at = 0 THEN ? ELSE revoked_at END WHERE id = ?", ms(at), id)
		return mustAffect(res, err, "revoke token "+id)
	})
}

func (s *Store) LookupToken(ctx context.Context, hash string) (store.Token, store.Principal, error) {
	row := s.rq.QueryRowContext(ctx, `SELECT t.id, t.principal_id, t.hash, t.created_at, t.last_used_at, t.revoked_at,
		p.id, p.name, p.kind, p.role, p.created_at, p.disabled_at
		FROM tokens t JOIN principals p ON p.id = t.principal_id WHERE t.hash = ?`, hash)
	var t store.Token
	var p store.Principal
	var tc, tu, tr, pc, pd int64
	err := row.Scan(&t.ID, &t.PrincipalID, &t.Hash, &tc, &tu, &tr, &p.ID, &p.Name, &p.Kind, &p.Role, &pc, &pd)
	if err != nil {
		return t, p, notFound(err, "token")
	}
	t.CreatedAt, t.LastUsedAt, t.RevokedAt = fromMS(tc), fromMS(tu), fromMS(tr)
	p.CreatedAt, p.DisabledAt = fromMS(pc), fromMS(pd)
	return t, p, nil
}

func (s *Store) TouchToken(ctx context.Context, id string, at time.Time) error {
	return s.tx(ctx, func(tx txQueryer) error {
		res, err := tx.ExecContext(ctx, "UPDATE tokens SET last_used_at = ? WHERE id = ?", ms(at), id)
		return mustAffect(res, err, "touch token "+id)
	})
}

// --- runners ---

func (s *Store) CreateEnrollToken(ctx context.Context, t store.EnrollToken) error {
	return s.tx(ctx, func(tx txQueryer) error {
		_, err := tx.ExecContext(ctx, "INSERT INTO enroll_tokens (hash, pool, created_by, created_at, expires_at, used_at, runner_id) VALUES (?,?,?,?,?,?,?)",
			t.Hash, t.Pool, t.CreatedBy, ms(t.CreatedAt), ms(t.ExpiresAt), ms(t.UsedAt), t.RunnerID)
		if isUnique(err) {
			return fmt.Errorf("create enroll token: %w", store.ErrConflict)
		}
		if err != nil {
			return fmt.Errorf("create enroll token: %w", err)
		}
		return nil
	})
}

func (s *Store) EnrollRunner(ctx context.Context, enrollTokenHash string, r store.Runner, now time.Time) error {
	return s.tx(ctx, func(tx txQueryer) error {
		var pool string
		var expires, used int64
		err := tx.QueryRowContext(ctx, "SELECT pool, expires_at, used_at FROM enroll_tokens WHERE hash = ?", enrollTokenHash).Scan(&pool, &expires, &used)
		if err != nil {
			return notFound(err, "enroll token")
		}
		switch {
		case used != 0:
			return fmt.Errorf("enroll token: %w", store.ErrTokenUsed)
		case ms(now) >= expires:
			return fmt.Errorf("enroll token: %w", store.ErrTokenExpired)
		case r.Pool != pool:
			return fmt.Errorf("enroll token is for pool %q, not %q: %w", pool, r.Pool, store.ErrInvalidState)
		}
		if _, err := tx.ExecContext(ctx, "UPDATE enroll_tokens SET used_at = ?, runner_id = ? WHERE hash = ?", ms(now), r.ID, enrollTokenHash); err != nil {
			return fmt.Errorf("use enroll token: %w", err)
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO runners (id, name, pool, key_id, public_key_pem, tiers, token_hash, enrolled_at, last_seen_at, revoked_at)
			VALUES (?,?,?,?,?,?,?,?,?,?)`, r.ID, r.Name, r.Pool, r.KeyID, r.PublicKeyPEM, jsonList(r.Tiers), r.TokenHash, ms(r.EnrolledAt), ms(r.LastSeenAt), ms(r.RevokedAt))
		if isUnique(err) {
			return fmt.Errorf("enroll runner %s: %w", r.ID, store.ErrConflict)
		}
		if err != nil {
			return fmt.Errorf("enroll runner: %w", err)
		}
		return nil
	})
}

const runnerCols = `r.id, r.name, r.pool, r.key_id, r.public_key_pem, r.tiers, r.token_hash, r.enrolled_at, r.last_seen_at, r.revoked_at,
	(SELECT count(*) FROM runs WHERE runs.runner_id = r.id AND runs.claim_state = 'active')`

func scanRunner(sc interface{ Scan(...any) error }) (store.Runner, error) {
	var r store.Runner
	var tiers string
	var enrolled, seen, revoked int64
	err := sc.Scan(&r.ID, &r.Name, &r.Pool, &r.KeyID, &r.PublicKeyPEM, &tiers, &r.TokenHash, &enrolled, &seen, &revoked, &r.InFlight)
	r.Tiers = parseList(tiers)
	r.EnrolledAt, r.LastSeenAt, r.RevokedAt = fromMS(enrolled), fromMS(seen), fromMS(revoked)
	return r, err
}

func (s *Store) GetRunner(ctx context.Context, id string) (store.Runner, error) {
	r, err := scanRunner(s.rq.QueryRowContext(ctx, "SELECT "+runnerCols+" FROM runners r WHERE r.id = ?", id))
	if err != nil {
		return r, notFound(err, "runner "+id)
	}
	return r, nil
}

func (s *Store) LookupRunner(ctx context.Context, tokenHash string) (store.Runner, error) {
	r, err := scanRunner(s.rq.QueryRowContext(ctx, "SELECT "+runnerCols+" FROM runners r WHERE r.token_hash = ?", tokenHash))
	if err != nil {
		return r, notFound(err, "runner token")
	}
	return r, nil
}

func (s *Store) ListRunners(ctx context.Context) ([]store.Runner, error) {
	rows, err := s.rq.QueryContext(ctx, "SELECT "+runnerCols+" FROM runners r ORDER BY r.enrolled_at, r.id")
	if err != nil {
		return nil, fmt.Errorf("list runners: %w", err)
	}
	defer rows.Close()
	var out []store.Runner
	for rows.Next() {
		r, err := scanRunner(rows)
		if err != nil {
			return nil, fmt.Errorf("list runners: %w", err)
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

func (s *Store) RevokeRunner(ctx context.Context, id string, at time.Time) error {
	return s.tx(ctx, func(tx txQueryer) error {
		res, err := tx.ExecContext(ctx, "UPDATE runners SET revoked_at = CASE WHEN revoked_at = 0 THEN ? ELSE revoked_at END WHERE id = ?", ms(at), id)
		if err := mustAffect(res, err, "revoke runner "+id); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, "UPDATE runs SET lease_until = ? WHERE runner_id = ? AND claim_state = 'active' AND lease_until > ?", ms(at), id, ms(at))
		if err != nil {
			return fmt.Errorf("end leases of runner %s: %w", id, err)
		}
		return nil
	})
}

func (s *Store) TouchRunner(ctx context.Context, id string, at time.Time) error {
	return s.tx(ctx, func(tx txQueryer) error {
		res, err := tx.ExecContext(ctx, "UPDATE runners SET last_seen_at = ? WHERE id = ?", ms(at), id)
		return mustAffect(res, err, "touch runner "+id)
	})
}

// --- policy, keys, secrets ---

func (s *Store) PutPolicy(ctx context.Context, p store.PolicyRecord) error {
	return s.tx(ctx, func(tx txQueryer) error {
		if _, err := tx.ExecContext(ctx, "INSERT INTO policies (hash, document, created_at) VALUES (?,?,?) ON CONFLICT(hash) DO NOTHING", p.Hash, p.Document, ms(p.CreatedAt)); err != nil {
			return fmt.Errorf("store policy: %w", err)
		}
		if _, err := tx.ExecContext(ctx, "INSERT INTO settings (key, value) VALUES ('current_policy', ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value", p.Hash); err != nil {
			return fmt.Errorf("set current policy: %w", err)
		}
		return nil
	})
}

func (s *Store) CurrentPolicy(ctx context.Context) (store.PolicyRecord, error) {
	var p store.PolicyRecord
	var created int64
	err := s.rq.QueryRowContext(ctx, `SELECT p.hash, p.document, p.created_at FROM settings s JOIN policies p ON p.hash = s.value WHERE s.key = 'current_policy'`).Scan(&p.Hash, &p.Document, &created)
	if err != nil {
		return p, notFound(err, "current policy")
	}
	p.CreatedAt = fromMS(created)
	return p, nil
}

func (s *Store) PutPlaneKey(ctx context.Context, k store.PlaneKey) error {
	return s.tx(ctx, func(tx txQueryer) error {
		_, err := tx.ExecContext(ctx, "INSERT INTO plane_keys (key_id, public_key_pem, added_at) VALUES (?,?,?) ON CONFLICT(key_id) DO NOTHING", k.KeyID, k.PublicKeyPEM, ms(k.AddedAt))
		if err != nil {
			return fmt.Errorf("store plane key: %w", err)
		}
		return nil
	})
}

func (s *Store) GetPlaneKey(ctx context.Context, keyID string) (store.PlaneKey, error) {
	var k store.PlaneKey
	var added int64
	err := s.rq.QueryRowContext(ctx, "SELECT key_id, public_key_pem, added_at FROM plane_keys WHERE key_id = ?", keyID).Scan(&k.KeyID, &k.PublicKeyPEM, &added)
	if err != nil {
		return k, notFound(err, "plane key "+keyID)
	}
	k.AddedAt = fromMS(added)
	return k, nil
}

func (s *Store) PutSecret(ctx context.Context, sec store.Secret) (store.Secret, error) {
	var out store.Secret
	err := s.tx(ctx, func(tx txQueryer) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO secrets (name, ciphertext, created_at, updated_at) VALUES (?,?,?,?)
			ON CONFLICT(name) DO UPDATE SET ciphertext = excluded.ciphertext, updated_at = excluded.updated_at`,
			sec.Name, sec.Ciphertext, ms(sec.CreatedAt), ms(sec.UpdatedAt))
		if err != nil {
			return fmt.Errorf("store secret: %w", err)
		}
		out, err = getSecret(ctx, tx, sec.Name)
		return err
	})
	return out, err
}

func getSecret(ctx context.Context, q queryer, name string) (store.Secret, error) {
	var sec store.Secret
	var created, updated int64
	err := q.QueryRowContext(ctx, "SELECT name, ciphertext, created_at, updated_at FROM secrets WHERE name = ?", name).Scan(&sec.Name, &sec.Ciphertext, &created, &updated)
	if err != nil {
		return sec, notFound(err, "secret "+name)
	}
	sec.CreatedAt, sec.UpdatedAt = fromMS(created), fromMS(updated)
	return sec, nil
}

func (s *Store) GetSecret(ctx context.Context, name string) (store.Secret, error) {
	return getSecret(ctx, s.r, name)
}

func (s *Store) ListSecrets(ctx context.Context) ([]store.Secret, error) {
	rows, err := s.rq.QueryContext(ctx, "SELECT name, created_at, updated_at FROM secrets ORDER BY name")
	if err != nil {
		return nil, fmt.Errorf("list secrets: %w", err)
	}
	defer rows.Close()
	var out []store.Secret
	for rows.Next() {
		var sec store.Secret
		var created, updated int64
		if err := rows.Scan(&sec.Name, &created, &updated); err != nil {
			return nil, fmt.Errorf("list secrets: %w", err)
		}
		sec.CreatedAt, sec.UpdatedAt = fromMS(created), fromMS(updated)
		out = append(out, sec)
	}
	return out, rows.Err()
}

func (s *Store) DeleteSecret(ctx context.Context, name string) error {
	return s.tx(ctx, func(tx txQueryer) error {
		res, err := tx.ExecContext(ctx, "DELETE FROM secrets WHERE name = ?", name)
		return mustAffect(res, err, "delete secret "+name)
	})
}
