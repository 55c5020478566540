package sqlite

import (
	"context"
	"database/sql"
	"sync"
)

// maxCachedStatements bounds a statement cache. The store's queries are
// fixed strings (a few dozen); the queries built with a variable number
// of placeholders bypass the cache, and past the bound a query simply runs
// unprepared.
const maxCachedStatements = 256

// stmtCache keeps the prepared statements of one connection pool by query
// text, so SQLite parses and plans each query once per connection instead
// of on every call (parsing was a sixth of the plane's CPU per run).
// database/sql prepares a cached statement again on each connection it
// runs on, and closes it with the pool. Statements are never evicted.
type stmtCache struct {
	db *sql.DB

	mu      sync.Mutex
	stmts   map[string]*sql.Stmt
	pending []string // queries first seen in a write transaction, prepared after it
}

func newStmtCache(db *sql.DB) *stmtCache {
	return &stmtCache{db: db, stmts: map[string]*sql.Stmt{}}
}

func (c *stmtCache) lookup(query string) *sql.Stmt {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stmts[query]
}

// prepared returns the statement for query, preparing it on the pool if
// it is new. It returns nil (run the query unprepared) when the cache is
// full or the query does not prepare; running it then reports the error.
// It must not be called while the caller holds the pool's last free
// connection (in a transaction of the single-connection writer): see note.
func (c *stmtCache) prepared(ctx context.Context, query string) *sql.Stmt {
	if st := c.lookup(query); st != nil {
		return st
	}
	c.mu.Lock()
	full := len(c.stmts) >= maxCachedStatements
	c.mu.Unlock()
	if full {
		return nil
	}
	st, err := c.db.PrepareContext(ctx, query)
	if err != nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if old, ok := c.stmts[query]; ok { // prepared meanwhile by another caller
		st.Close()
		return old
	}
	if len(c.stmts) >= maxCachedStatements {
		st.Close()
		return nil
	}
	c.stmts[query] = st
	return st
}

// note remembers a query seen inside a write transaction, where the
// writer's only connection is taken and preparing on the pool would wait
// for it forever; preparePending prepares it once the transaction ended.
func (c *stmtCache) note(query string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.stmts[query]; ok || len(c.pending) >= maxCachedStatements {
		return
	}
	c.pending = append(c.pending, query)
}

// preparePending prepares the queries note remembered.
func (c *stmtCache) preparePending(ctx context.Context) {
	c.mu.Lock()
	pending := c.pending
	c.pending = nil
	c.mu.Unlock()
	for _, q := range pending {
		c.prepared(ctx, q)
	}
}

func (c *stmtCache) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for q, st := range c.stmts {
		st.Close()
		delete(c.stmts, q)
	}
}

// poolQueryer runs queries on a connection pool (the readers) through its
// statement cache.
type poolQueryer struct{ c *stmtCache }

func (p poolQueryer) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	if st := p.c.prepared(ctx, query); st != nil {
		return st.QueryContext(ctx, args...)
	}
	return p.c.db.QueryContext(ctx, query, args...)
}

func (p poolQueryer) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	if st := p.c.prepared(ctx, query); st != nil {
		return st.QueryRowContext(ctx, args...)
	}
	return p.c.db.QueryRowContext(ctx, query, args...)
}

func (p poolQueryer) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	if st := p.c.prepared(ctx, query); st != nil {
		return st.ExecContext(ctx, args...)
	}
	return p.c.db.ExecContext(ctx, query, args...)
}

// txQueryer runs queries in a write transaction, with the writer's
// statements prepared so far; a query not prepared yet runs unprepared and
// is prepared after the transaction.
type txQueryer struct {
	tx *sql.Tx
	c  *stmtCache
}

func (t txQueryer) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	if st := t.c.lookup(query); st != nil {
		return t.tx.StmtContext(ctx, st).QueryContext(ctx, args...)
	}
	t.c.note(query)
	return t.tx.QueryContext(ctx, query, args...)
}

func (t txQueryer) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	if st := t.c.lookup(query); st != nil {
		return t.tx.StmtContext(ctx, st).QueryRowContext(ctx, args...)
	}
	t.c.note(query)
	return t.tx.QueryRowContext(ctx, query, args...)
}

func (t txQueryer) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	if st := t.c.lookup(query); st != nil {
		return t.tx.StmtContext(ctx, st).ExecContext(ctx, args...)
	}
	t.c.note(query)
	return t.tx.ExecContext(ctx, query, args...)
}
