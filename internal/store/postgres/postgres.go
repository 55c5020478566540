// Package postgres is the scale-out Store: the plane's state in one
// PostgreSQL database (pgx/v5, a pgxpool connection pool), shared by any
// number of plane replicas.
//
// It owns the PostgreSQL schema (versioned migrations embedded in the
// binary, applied at Open under an advisory lock; a database written by a
// newer binary is refused), the store.Store implementation, a
// store.BlobStore that keeps blob bytes in the database in chunks
// (BlobStore), and a LISTEN/NOTIFY Notifier that wakes long polls and
// event streams on every replica (Notifier).
//
// Concurrency: every multi-step method runs in one READ COMMITTED
// transaction. A method that changes a run locks its row (SELECT … FOR
// UPDATE) before reading it, so chain appends, heartbeats, cancellations
// and completions on one run are serialised and a chain never forks.
// Claims and the clock-driven sweeps (lease, contract and approval
// expiry, retention) select their rows FOR UPDATE SKIP LOCKED: replicas
// claim different runs without waiting on each other, and a sweep that
// runs on every replica at once still ends each run exactly once.
package postgres

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"warrant.dev/warrant/internal/store"
)

//go:embed migrations/*.sql
var migrationFS embed.FS

// DefaultMaxConns is the pool size when the connection string does not
// set pool_max_conns. Long polls and event streams hold no connection
// while they wait, so a plane needs few.
const DefaultMaxConns = 10

// Store is the PostgreSQL implementation of store.Store.
type Store struct {
	pool   *pgxpool.Pool
	schema string
}

var _ store.Store = (*Store)(nil)

// Open connects to the database named by connString (a postgres:// URL or
// key=value DSN; pgxpool parameters such as pool_max_conns are honoured,
// and search_path selects the schema), migrates it to the current schema
// and returns the store. A database migrated by a newer binary is
// refused with store.ErrSchemaTooNew.
func Open(ctx context.Context, connString string) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(connString)
	if err != nil {
		return nil, fmt.Errorf("postgres: parse connection string: %w", redactConnError(err))
	}
	if !strings.Contains(connString, "pool_max_conns") {
		cfg.MaxConns = DefaultMaxConns
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	s := &Store{pool: pool}
	if err := s.init(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	return s, nil
}

// redactConnError keeps a parse error from echoing a password.
func redactConnError(err error) error {
	var pe *pgconn.ParseConfigError
	if errors.As(err, &pe) {
		return errors.New("invalid connection string")
	}
	return err
}

func (s *Store) init(ctx context.Context) error {
	if err := s.pool.Ping(ctx); err != nil {
		return fmt.Errorf("postgres: connect: %w", err)
	}
	var schema *string
	if err := s.pool.QueryRow(ctx, "SELECT current_schema()").Scan(&schema); err != nil {
		return fmt.Errorf("postgres: current schema: %w", err)
	}
	if schema == nil {
		return errors.New("postgres: no schema of the search_path exists: create it first")
	}
	s.schema = *schema
	if err := migrate(ctx, s.pool); err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	return nil
}

// Pool returns the connection pool, for the BlobStore and Notifier of the
// same database. Close closes it.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// Schema returns the schema the store's tables live in.
func (s *Store) Schema() string { return s.schema }

// Ping reports whether the database answers.
func (s *Store) Ping(ctx context.Context) error { return s.pool.Ping(ctx) }

// Close closes the connection pool.
func (s *Store) Close() error {
	s.pool.Close()
	return nil
}

// --- migrations ---

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

// migrate brings the schema to the current version in one transaction,
// holding an advisory lock so replicas starting together migrate once.
func migrate(ctx context.Context, pool *pgxpool.Pool) error {
	scripts, err := migrations()
	if err != nil {
		return fmt.Errorf("read migrations: %w", err)
	}
	tx, err := pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock(hashtextextended('warrant.migrate.' || current_schema(), 0))"); err != nil {
		return fmt.Errorf("migrate: lock: %w", err)
	}
	if _, err := tx.Exec(ctx, "CREATE TABLE IF NOT EXISTS warrant_schema_version (version integer NOT NULL)"); err != nil {
		return fmt.Errorf("migrate: version table: %w", err)
	}
	var version int
	err = tx.QueryRow(ctx, "SELECT version FROM warrant_schema_version").Scan(&version)
	if errors.Is(err, pgx.ErrNoRows) {
		if _, err := tx.Exec(ctx, "INSERT INTO warrant_schema_version (version) VALUES (0)"); err != nil {
			return fmt.Errorf("migrate: version row: %w", err)
		}
	} else if err != nil {
		return fmt.Errorf("migrate: read schema version: %w", err)
	}
	if version > len(scripts) {
		return fmt.Errorf("%w: database has schema %d, this binary knows up to %d", store.ErrSchemaTooNew, version, len(scripts))
	}
	for v := version; v < len(scripts); v++ {
		if _, err := tx.Exec(ctx, scripts[v]); err != nil {
			return fmt.Errorf("migrate to %d: %w", v+1, err)
		}
	}
	if _, err := tx.Exec(ctx, "UPDATE warrant_schema_version SET version = $1", len(scripts)); err != nil {
		return fmt.Errorf("migrate: record version: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("migrate: commit: %w", err)
	}
	return nil
}

// --- helpers ---

// queryer is what a pool and a transaction share.
type queryer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// maxAttempts bounds the retries of a transaction PostgreSQL aborted to
// break a deadlock.
const maxAttempts = 4

// tx runs fn in one transaction: committed when fn returns nil, rolled
// back otherwise. A transaction aborted as a deadlock victim is run again
// from the start, so fn must only assign its results (not accumulate).
func (s *Store) tx(ctx context.Context, fn func(tx pgx.Tx) error) error {
	for attempt := 1; ; attempt++ {
		err := s.tx1(ctx, fn)
		if err == nil || attempt == maxAttempts || !retryable(err) || ctx.Err() != nil {
			return err
		}
		time.Sleep(time.Duration(attempt) * 5 * time.Millisecond)
	}
}

func (s *Store) tx1(ctx context.Context, fn func(tx pgx.Tx) error) error {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback(context.WithoutCancel(ctx))
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

func pgCode(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

// retryable reports a deadlock or serialization failure.
func retryable(err error) bool {
	c := pgCode(err)
	return c == "40P01" || c == "40001"
}

func isUnique(err error) bool     { return pgCode(err) == "23505" }
func isForeignKey(err error) bool { return pgCode(err) == "23503" }

func notFound(err error, what string) error {
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("%s: %w", what, store.ErrNotFound)
	}
	return fmt.Errorf("%s: %w", what, err)
}

func mustAffect(tag pgconn.CommandTag, err error, what string) error {
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("%s: %w", what, store.ErrNotFound)
	}
	return nil
}

// ts is a time as a query argument: NULL when zero, else UTC at the
// protocol's millisecond precision.
func ts(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return time.UnixMilli(t.UnixMilli()).UTC()
}

// tsScan scans a nullable timestamptz into a time.Time (zero for NULL).
type tsScan struct{ t *time.Time }

func (s tsScan) ScanTimestamptz(v pgtype.Timestamptz) error {
	if !v.Valid {
		*s.t = time.Time{}
		return nil
	}
	*s.t = time.UnixMilli(v.Time.UnixMilli()).UTC()
	return nil
}

// tsp is a scan target for a nullable time column.
func tsp(t *time.Time) *tsScan { return &tsScan{t} }

// list makes a nil slice an empty one (text[] columns are NOT NULL).
func list(l []string) []string {
	if l == nil {
		return []string{}
	}
	return l
}

// args collects positional query arguments.
type args []any

// add appends v and returns its placeholder.
func (a *args) add(v any) string {
	*a = append(*a, v)
	return "$" + strconv.Itoa(len(*a))
}

// sortedUnique returns the distinct strings of l in order, so that rows
// keyed by them are locked in one global order (no deadlocks).
func sortedUnique(l []string) []string {
	out := slices.Clone(l)
	slices.Sort(out)
	return slices.Compact(out)
}

// --- settings ---

// PinSetting records value under key the first time it is called for key
// and afterwards checks that every caller agrees: it returns an error
// wrapping store.ErrConflict when a different value is stored. Replicas
// pin their key material this way (a key id, a key's fingerprint), so a
// replica configured with other keys refuses to start rather than signing
// with a key nobody pinned or failing to open sealed secrets.
func (s *Store) PinSetting(ctx context.Context, key, value string) error {
	_, err := s.pool.Exec(ctx, "INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING", "pin:"+key, value)
	if err != nil {
		return fmt.Errorf("pin %s: %w", key, err)
	}
	var stored string
	if err := s.pool.QueryRow(ctx, "SELECT value FROM settings WHERE key = $1", "pin:"+key).Scan(&stored); err != nil {
		return fmt.Errorf("pin %s: %w", key, err)
	}
	if stored != value {
		return fmt.Errorf("%s differs from the one this database was first served with: %w", key, store.ErrConflict)
	}
	return nil
}

// --- principals and tokens ---

const principalCols = "id, name, kind, role, created_at, disabled_at"

func scanPrincipal(sc pgx.Row) (store.Principal, error) {
	var p store.Principal
	err := sc.Scan(&p.ID, &p.Name, &p.Kind, &p.Role, tsp(&p.CreatedAt), tsp(&p.DisabledAt))
	return p, err
}

const tokenCols = "id, principal_id, hash, created_at, last_used_at, revoked_at"

func scanToken(sc pgx.Row) (store.Token, error) {
	var t store.Token
	err := sc.Scan(&t.ID, &t.PrincipalID, &t.Hash, tsp(&t.CreatedAt), tsp(&t.LastUsedAt), tsp(&t.RevokedAt))
	return t, err
}

func (s *Store) CreatePrincipal(ctx context.Context, p store.Principal, first store.Token) error {
	return s.tx(ctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, "INSERT INTO principals ("+principalCols+") VALUES ($1,$2,$3,$4,$5,$6)",
			p.ID, p.Name, p.Kind, p.Role, ts(p.CreatedAt), ts(p.DisabledAt))
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
	_, err := q.Exec(ctx, "INSERT INTO tokens ("+tokenCols+") VALUES ($1,$2,$3,$4,$5,$6)",
		t.ID, t.PrincipalID, t.Hash, ts(t.CreatedAt), ts(t.LastUsedAt), ts(t.RevokedAt))
	if isUnique(err) {
		return fmt.Errorf("create token: %w", store.ErrConflict)
	}
	if err != nil {
		return fmt.Errorf("create token: %w", err)
	}
	return nil
}

func (s *Store) GetPrincipal(ctx context.Context, id string) (store.Principal, error) {
	p, err := scanPrincipal(s.pool.QueryRow(ctx, "SELECT "+principalCols+" FROM principals WHERE id = $1", id))
	if err != nil {
		return p, notFound(err, "principal "+id)
	}
	return p, nil
}

// collect reads every row with scan.
func collect[T any](rows pgx.Rows, err error, what string, scan func(pgx.Row) (T, error)) ([]T, error) {
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	defer rows.Close()
	var out []T
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return out, nil
}

func (s *Store) ListPrincipals(ctx context.Context) ([]store.Principal, error) {
	rows, err := s.pool.Query(ctx, "SELECT "+principalCols+" FROM principals ORDER BY created_at, id")
	return collect(rows, err, "list principals", scanPrincipal)
}

func (s *Store) DisablePrincipal(ctx context.Context, id string, at time.Time) error {
	return s.tx(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, "UPDATE principals SET disabled_at = coalesce(disabled_at, $1) WHERE id = $2", ts(at), id)
		if err := mustAffect(tag, err, "disable principal "+id); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "UPDATE tokens SET revoked_at = $1 WHERE principal_id = $2 AND revoked_at IS NULL", ts(at), id); err != nil {
			return fmt.Errorf("revoke tokens of %s: %w", id, err)
		}
		return nil
	})
}

func (s *Store) CreateToken(ctx context.Context, t store.Token) error {
	return s.tx(ctx, func(tx pgx.Tx) error {
		var disabled time.Time
		// FOR SHARE: a concurrent DisablePrincipal waits for this token
		// and then revokes it too.
		err := tx.QueryRow(ctx, "SELECT disabled_at FROM principals WHERE id = $1 FOR SHARE", t.PrincipalID).Scan(tsp(&disabled))
		if err != nil {
			return notFound(err, "principal "+t.PrincipalID)
		}
		if !disabled.IsZero() {
			return fmt.Errorf("principal %s is disabled: %w", t.PrincipalID, store.ErrRevoked)
		}
		return insertToken(ctx, tx, t)
	})
}

func (s *Store) ListTokens(ctx context.Context, principalID string) ([]store.Token, error) {
	if principalID == "" {
		rows, err := s.pool.Query(ctx, "SELECT "+tokenCols+" FROM tokens ORDER BY created_at, id")
		return collect(rows, err, "list tokens", scanToken)
	}
	rows, err := s.pool.Query(ctx, "SELECT "+tokenCols+" FROM tokens WHERE principal_id = $1 ORDER BY created_at, id", principalID)
	return collect(rows, err, "list tokens", scanToken)
}

func (s *Store) RevokeToken(ctx context.Context, id string, at time.Time) error {
	tag, err := s.pool.Exec(ctx, "UPDATE tokens SET revoked_at = coalesce(revoked_at, $1) WHERE id = $2", ts(at), id)
	return mustAffect(tag, err, "revoke token "+id)
}

func (s *Store) LookupToken(ctx context.Context, hash string) (store.Token, store.Principal, error) {
	var t store.Token
	var p store.Principal
	err := s.pool.QueryRow(ctx, `SELECT t.id, t.principal_id, t.hash, t.created_at, t.last_used_at, t.revoked_at,
		p.id, p.name, p.kind, p.role, p.created_at, p.disabled_at
		FROM tokens t JOIN principals p ON p.id = t.principal_id WHERE t.hash = $1`, hash).Scan(
		&t.ID, &t.PrincipalID, &t.Hash, tsp(&t.CreatedAt), tsp(&t.LastUsedAt), tsp(&t.RevokedAt),
		&p.ID, &p.Name, &p.Kind, &p.Role, tsp(&p.CreatedAt), tsp(&p.DisabledAt))
	if err != nil {
		return t, p, notFound(err, "token")
	}
	return t, p, nil
}

func (s *Store) TouchToken(ctx context.Context, id string, at time.Time) error {
	tag, err := s.pool.Exec(ctx, "UPDATE tokens SET last_used_at = $1 WHERE id = $2", ts(at), id)
	return mustAffect(tag, err, "touch token "+id)
}

// --- runners ---

func (s *Store) CreateEnrollToken(ctx context.Context, t store.EnrollToken) error {
	_, err := s.pool.Exec(ctx, "INSERT INTO enroll_tokens (hash, pool, created_by, created_at, expires_at, used_at, runner_id) VALUES ($1,$2,$3,$4,$5,$6,$7)",
		t.Hash, t.Pool, t.CreatedBy, ts(t.CreatedAt), ts(t.ExpiresAt), ts(t.UsedAt), t.RunnerID)
	if isUnique(err) {
		return fmt.Errorf("create enroll token: %w", store.ErrConflict)
	}
	if err != nil {
		return fmt.Errorf("create enroll token: %w", err)
	}
	return nil
}

func (s *Store) EnrollRunner(ctx context.Context, enrollTokenHash string, r store.Runner, now time.Time) error {
	return s.tx(ctx, func(tx pgx.Tx) error {
		var pool string
		var expires, used time.Time
		err := tx.QueryRow(ctx, "SELECT pool, expires_at, used_at FROM enroll_tokens WHERE hash = $1 FOR UPDATE", enrollTokenHash).Scan(&pool, tsp(&expires), tsp(&used))
		if err != nil {
			return notFound(err, "enroll token")
		}
		switch {
		case !used.IsZero():
			return fmt.Errorf("enroll token: %w", store.ErrTokenUsed)
		case !now.Before(expires):
			return fmt.Errorf("enroll token: %w", store.ErrTokenExpired)
		case r.Pool != pool:
			return fmt.Errorf("enroll token is for pool %q, not %q: %w", pool, r.Pool, store.ErrInvalidState)
		}
		if _, err := tx.Exec(ctx, "UPDATE enroll_tokens SET used_at = $1, runner_id = $2 WHERE hash = $3", ts(now), r.ID, enrollTokenHash); err != nil {
			return fmt.Errorf("use enroll token: %w", err)
		}
		_, err = tx.Exec(ctx, `INSERT INTO runners (id, name, pool, key_id, public_key_pem, tiers, token_hash, enrolled_at, last_seen_at, revoked_at)
			VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10)`, r.ID, r.Name, r.Pool, r.KeyID, r.PublicKeyPEM, list(r.Tiers), r.TokenHash, ts(r.EnrolledAt), ts(r.LastSeenAt), ts(r.RevokedAt))
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

func scanRunner(sc pgx.Row) (store.Runner, error) {
	var r store.Runner
	var inFlight int64
	err := sc.Scan(&r.ID, &r.Name, &r.Pool, &r.KeyID, &r.PublicKeyPEM, &r.Tiers, &r.TokenHash, tsp(&r.EnrolledAt), tsp(&r.LastSeenAt), tsp(&r.RevokedAt), &inFlight)
	r.Tiers = list(r.Tiers)
	r.InFlight = int(inFlight)
	return r, err
}

func (s *Store) GetRunner(ctx context.Context, id string) (store.Runner, error) {
	r, err := scanRunner(s.pool.QueryRow(ctx, "SELECT "+runnerCols+" FROM runners r WHERE r.id = $1", id))
	if err != nil {
		return r, notFound(err, "runner "+id)
	}
	return r, nil
}

func (s *Store) LookupRunner(ctx context.Context, tokenHash string) (store.Runner, error) {
	r, err := scanRunner(s.pool.QueryRow(ctx, "SELECT "+runnerCols+" FROM runners r WHERE r.token_hash = $1", tokenHash))
	if err != nil {
		return r, notFound(err, "runner token")
	}
	return r, nil
}

func (s *Store) ListRunners(ctx context.Context) ([]store.Runner, error) {
	rows, err := s.pool.Query(ctx, "SELECT "+runnerCols+" FROM runners r ORDER BY r.enrolled_at, r.id")
	return collect(rows, err, "list runners", scanRunner)
}

func (s *Store) RevokeRunner(ctx context.Context, id string, at time.Time) error {
	return s.tx(ctx, func(tx pgx.Tx) error {
		// Runs first, then the runner: the order Heartbeat locks them in.
		if _, err := tx.Exec(ctx, "UPDATE runs SET lease_until = $1 WHERE runner_id = $2 AND claim_state = 'active' AND lease_until > $1", ts(at), id); err != nil {
			return fmt.Errorf("end leases of runner %s: %w", id, err)
		}
		tag, err := tx.Exec(ctx, "UPDATE runners SET revoked_at = coalesce(revoked_at, $1) WHERE id = $2", ts(at), id)
		return mustAffect(tag, err, "revoke runner "+id)
	})
}

func (s *Store) TouchRunner(ctx context.Context, id string, at time.Time) error {
	tag, err := s.pool.Exec(ctx, "UPDATE runners SET last_seen_at = $1 WHERE id = $2", ts(at), id)
	return mustAffect(tag, err, "touch runner "+id)
}

// --- policy, keys, secrets ---

func (s *Store) PutPolicy(ctx context.Context, p store.PolicyRecord) error {
	return s.tx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "INSERT INTO policies (hash, document, created_at) VALUES ($1,$2,$3) ON CONFLICT (hash) DO NOTHING", p.Hash, p.Document, ts(p.CreatedAt)); err != nil {
			return fmt.Errorf("store policy: %w", err)
		}
		if _, err := tx.Exec(ctx, "INSERT INTO settings (key, value) VALUES ('current_policy', $1) ON CONFLICT (key) DO UPDATE SET value = excluded.value", p.Hash); err != nil {
			return fmt.Errorf("set current policy: %w", err)
		}
		return nil
	})
}

func (s *Store) CurrentPolicy(ctx context.Context) (store.PolicyRecord, error) {
	var p store.PolicyRecord
	err := s.pool.QueryRow(ctx, `SELECT p.hash, p.document, p.created_at FROM settings s JOIN policies p ON p.hash = s.value WHERE s.key = 'current_policy'`).Scan(&p.Hash, &p.Document, tsp(&p.CreatedAt))
	if err != nil {
		return p, notFound(err, "current policy")
	}
	return p, nil
}

func (s *Store) PutPlaneKey(ctx context.Context, k store.PlaneKey) error {
	_, err := s.pool.Exec(ctx, "INSERT INTO plane_keys (key_id, public_key_pem, added_at) VALUES ($1,$2,$3) ON CONFLICT (key_id) DO NOTHING", k.KeyID, k.PublicKeyPEM, ts(k.AddedAt))
	if err != nil {
		return fmt.Errorf("store plane key: %w", err)
	}
	return nil
}

func (s *Store) GetPlaneKey(ctx context.Context, keyID string) (store.PlaneKey, error) {
	var k store.PlaneKey
	err := s.pool.QueryRow(ctx, "SELECT key_id, public_key_pem, added_at FROM plane_keys WHERE key_id = $1", keyID).Scan(&k.KeyID, &k.PublicKeyPEM, tsp(&k.AddedAt))
	if err != nil {
		return k, notFound(err, "plane key "+keyID)
	}
	return k, nil
}

func (s *Store) PutSecret(ctx context.Context, sec store.Secret) (store.Secret, error) {
	var out store.Secret
	err := s.pool.QueryRow(ctx, `INSERT INTO secrets (name, ciphertext, created_at, updated_at) VALUES ($1,$2,$3,$4)
		ON CONFLICT (name) DO UPDATE SET ciphertext = excluded.ciphertext, updated_at = excluded.updated_at
		RETURNING name, ciphertext, created_at, updated_at`,
		sec.Name, sec.Ciphertext, ts(sec.CreatedAt), ts(sec.UpdatedAt)).Scan(&out.Name, &out.Ciphertext, tsp(&out.CreatedAt), tsp(&out.UpdatedAt))
	if err != nil {
		return out, fmt.Errorf("store secret: %w", err)
	}
	return out, nil
}

func getSecret(ctx context.Context, q queryer, name string) (store.Secret, error) {
	var sec store.Secret
	err := q.QueryRow(ctx, "SELECT name, ciphertext, created_at, updated_at FROM secrets WHERE name = $1", name).Scan(&sec.Name, &sec.Ciphertext, tsp(&sec.CreatedAt), tsp(&sec.UpdatedAt))
	if err != nil {
		return sec, notFound(err, "secret "+name)
	}
	return sec, nil
}

func (s *Store) GetSecret(ctx context.Context, name string) (store.Secret, error) {
	return getSecret(ctx, s.pool, name)
}

func (s *Store) ListSecrets(ctx context.Context) ([]store.Secret, error) {
	rows, err := s.pool.Query(ctx, "SELECT name, created_at, updated_at FROM secrets ORDER BY name")
	return collect(rows, err, "list secrets", func(r pgx.Row) (store.Secret, error) {
		var sec store.Secret
		err := r.Scan(&sec.Name, tsp(&sec.CreatedAt), tsp(&sec.UpdatedAt))
		return sec, err
	})
}

func (s *Store) DeleteSecret(ctx context.Context, name string) error {
	tag, err := s.pool.Exec(ctx, "DELETE FROM secrets WHERE name = $1", name)
	return mustAffect(tag, err, "delete secret "+name)
}
