// Package pgtest gives tests a private schema on the test PostgreSQL
// server, so PostgreSQL tests are isolated from each other and safe to run
// in parallel.
//
// The server is named by WARRANT_TEST_POSTGRES (default
// postgres://postgres@127.0.0.1:5432/test?sslmode=disable). When it cannot
// be reached, a test that asks for a schema fails under CI=true (CI starts
// the server, so a missing server is a broken build) and is skipped with
// a loud message otherwise.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// EnvURL names the variable holding the test server's connection string.
const EnvURL = "WARRANT_TEST_POSTGRES"

// DefaultURL is the test server when EnvURL is unset.
const DefaultURL = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"

// URL returns the test server's connection string.
func URL() string {
	if u := os.Getenv(EnvURL); u != "" {
		return u
	}
	return DefaultURL
}

var (
	reachOnce sync.Once
	reachErr  error
)

// Require skips or fails t (see the package doc) unless the test server
// answers.
func Require(t testing.TB) {
	t.Helper()
	reachOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, URL())
		if err != nil {
			reachErr = err
			return
		}
		defer conn.Close(ctx)
		reachErr = conn.Ping(ctx)
	})
	if reachErr == nil {
		return
	}
	msg := fmt.Sprintf("PostgreSQL test server %s is unreachable: %v", redacted(URL()), reachErr)
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s (CI=true: .ci/run starts the server; a missing server fails the build)", msg)
	}
	t.Skipf("SKIPPING: %s. Start PostgreSQL or set %s to run the PostgreSQL tests.", msg, EnvURL)
}

// redacted hides a password in a URL.
func redacted(s string) string {
	if u, err := url.Parse(s); err == nil && u.Scheme != "" {
		return u.Redacted()
	}
	return "(the " + EnvURL + " DSN)"
}

// Schema creates a uniquely named, empty schema, drops it (with
// everything in it) when t ends, and returns a connection string whose
// search_path is that schema.
func Schema(t testing.TB) string {
	t.Helper()
	Require(t)
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := "wt_" + hex.EncodeToString(b[:])
	exec(t, "CREATE SCHEMA "+pgx.Identifier{name}.Sanitize())
	t.Cleanup(func() { exec(t, "DROP SCHEMA "+pgx.Identifier{name}.Sanitize()+" CASCADE") })
	return WithSearchPath(URL(), name)
}

// WithSearchPath returns connString with its search_path set to schema.
func WithSearchPath(connString, schema string) string {
	if u, err := url.Parse(connString); err == nil && (u.Scheme == "postgres" || u.Scheme == "postgresql") {
		q := u.Query()
		q.Set("search_path", schema)
		u.RawQuery = q.Encode()
		return u.String()
	}
	return strings.TrimSpace(connString) + " search_path=" + schema
}

// Exec runs statements on the test server (outside any test schema).
func Exec(t testing.TB, sql ...string) {
	t.Helper()
	Require(t)
	for _, s := range sql {
		exec(t, s)
	}
}

func exec(t testing.TB, sql string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, URL())
	if err != nil {
		t.Fatalf("connect to the PostgreSQL test server: %v", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sql); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}
