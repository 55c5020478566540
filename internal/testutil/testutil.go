// Package testutil gives tests a real Warrant plane: StartPlane runs the
// plane (SQLite and blob files in t.TempDir()) behind httptest on
// loopback, with an admin client, helpers to create principals, enroll
// runners and upload workspaces, an optional fake clock and short leases,
// and logs routed to t.Log. CheckGoroutines fails a test that leaks
// goroutines. Runner drives the runner side of the API by hand (claim,
// events, receipt) for tests that need runs to end without the real
// runner.
package testutil

import (
	"context"
	"crypto/rand"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"

	"warrant.dev/warrant/client"
	"warrant.dev/warrant/internal/plane"
	"warrant.dev/warrant/internal/store"
	"warrant.dev/warrant/internal/store/blobfs"
	"warrant.dev/warrant/internal/store/sqlite"
	"warrant.dev/warrant/protocol"
)

// FakeClock is a Clock that moves only when told.
type FakeClock struct {
	mu  sync.Mutex
	now time.Time
}

// NewFakeClock returns a clock set to start.
func NewFakeClock(start time.Time) *FakeClock { return &FakeClock{now: start} }

// Now returns the clock's time.
func (c *FakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock forward.
func (c *FakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

type options struct {
	clock     *FakeClock
	config    []func(*plane.Config)
	transport http.RoundTripper
}

// Option configures StartPlane.
type Option func(*options)

// WithClock runs the plane on a fake clock. The background reaper is then
// left to the test: call TestPlane.Reap after advancing the clock.
func WithClock(c *FakeClock) Option { return func(o *options) { o.clock = c } }

// WithLeases sets the lease TTL and heartbeat interval.
func WithLeases(ttl, heartbeat time.Duration) Option {
	return WithConfig(func(c *plane.Config) { c.LeaseTTL, c.HeartbeatInterval = ttl, heartbeat })
}

// WithTransport makes every client of the TestPlane (admin, principals,
// runners, claims) send its requests through rt.
func WithTransport(rt http.RoundTripper) Option { return func(o *options) { o.transport = rt } }

// WithConfig edits the plane's configuration before it starts.
func WithConfig(f func(*plane.Config)) Option {
	return func(o *options) { o.config = append(o.config, f) }
}

// TestPlane is a running plane.
type TestPlane struct {
	URL        string
	Plane      *plane.Plane
	Store      store.Store
	Blobs      store.BlobStore
	DataDir    string
	Admin      *client.Client // an admin principal's client
	AdminToken string
	Clock      *FakeClock // nil unless WithClock
	Key        *protocol.PrivateKey

	t         testing.TB
	transport *http.Transport
	rt        http.RoundTripper // WithTransport, else transport
}

// StartPlane starts a plane for the test and stops it at cleanup.
func StartPlane(t testing.TB, opts ...Option) *TestPlane {
	t.Helper()
	var o options
	for _, f := range opts {
		f(&o)
	}
	ctx := context.Background()
	dir := t.TempDir()
	st, err := sqlite.Open(ctx, filepath.Join(dir, plane.DatabaseFile))
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	blobs, err := blobfs.Open(filepath.Join(dir, plane.BlobDir))
	if err != nil {
		t.Fatalf("open blobs: %v", err)
	}
	key, err := protocol.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	master := make([]byte, 32)
	_, _ = rand.Read(master)
	cfg := plane.Config{
		Store: st, Blobs: blobs, Key: key, MasterKey: master, Logger: NewLogger(t), Version: "test",
		LeaseTTL: 10 * time.Second, HeartbeatInterval: 2 * time.Second, ReapInterval: 50 * time.Millisecond,
		SSEKeepAlive: time.Second,
	}
	if o.clock != nil {
		cfg.Clock = o.clock
		cfg.ReapInterval = time.Hour // the test reaps after moving the clock
	}
	for _, f := range o.config {
		f(&cfg)
	}
	p, err := plane.New(ctx, cfg)
	if err != nil {
		t.Fatalf("start plane: %v", err)
	}
	p.Start()
	srv := httptest.NewServer(p.Handler())
	tr := &http.Transport{MaxIdleConnsPerHost: 64}
	tp := &TestPlane{URL: srv.URL, Plane: p, Store: st, Blobs: blobs, DataDir: dir, Clock: o.clock, Key: key, t: t, transport: tr, rt: o.transport}
	t.Cleanup(func() {
		p.Drain()
		tr.CloseIdleConnections()
		srv.Close()
		p.Close()
		st.Close()
	})
	admin, err := p.CreatePrincipal(ctx, client.CreatePrincipalRequest{Name: "admin@test", Role: client.RoleAdmin})
	if err != nil {
		t.Fatalf("create admin: %v", err)
	}
	tp.AdminToken = admin.Token.Secret
	tp.Admin = tp.Client(admin.Token.Secret)
	return tp
}

// Client returns a client of the plane with token ("" for none).
func (tp *TestPlane) Client(token string) *client.Client {
	var rt http.RoundTripper = tp.transport
	if tp.rt != nil {
		rt = tp.rt
	}
	c, err := client.New(tp.URL, client.WithToken(token), client.WithHTTPClient(&http.Client{Transport: rt}))
	if err != nil {
		tp.t.Fatal(err)
	}
	return c
}

// NewPrincipal creates a principal with role and returns its client.
func (tp *TestPlane) NewPrincipal(role string) (*client.Client, client.Principal) {
	tp.t.Helper()
	resp, err := tp.Admin.CreatePrincipal(context.Background(), client.CreatePrincipalRequest{Name: role + "-" + randomSuffix() + "@test", Role: role})
	if err != nil {
		tp.t.Fatalf("create %s: %v", role, err)
	}
	return tp.Client(resp.Token.Secret), resp.Principal
}

// EnrollToken returns a fresh enroll token for pool.
func (tp *TestPlane) EnrollToken(pool string) string {
	tp.t.Helper()
	et, err := tp.Admin.CreateEnrollToken(context.Background(), client.EnrollTokenRequest{Pool: pool})
	if err != nil {
		tp.t.Fatalf("enroll token: %v", err)
	}
	return et.Token
}

// PlaneKey is the plane's public key.
func (tp *TestPlane) PlaneKey() *protocol.PublicKey { return tp.Key.Public() }

// Trust is a trust store pinning the plane key, as `warrant verify` uses.
func (tp *TestPlane) Trust() *protocol.TrustStore {
	ts := protocol.NewTrustStore()
	ts.Add(protocol.SignerPlane, tp.PlaneKey())
	return ts
}

// Reap runs one pass of the plane's lease, contract and consent expiry.
func (tp *TestPlane) Reap() {
	tp.t.Helper()
	if err := tp.Plane.Reap(context.Background()); err != nil {
		tp.t.Fatalf("reap: %v", err)
	}
}

// Advance moves the fake clock and reaps.
func (tp *TestPlane) Advance(d time.Duration) {
	tp.t.Helper()
	if tp.Clock == nil {
		tp.t.Fatal("Advance needs WithClock")
	}
	tp.Clock.Advance(d)
	tp.Reap()
}

// UploadWorkspace uploads files (path → content) as a warrant.snapshot.v1
// workspace with c and returns its manifest.
func UploadWorkspace(t testing.TB, c *client.Client, files map[string]string) protocol.Manifest {
	t.Helper()
	ctx := context.Background()
	paths := make([]string, 0, len(files))
	for p := range files {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	snap := protocol.Snapshot{}
	for _, p := range paths {
		h, err := c.PutBlob(ctx, []byte(files[p]))
		if err != nil {
			t.Fatalf("upload %s: %v", p, err)
		}
		snap.Entries = append(snap.Entries, protocol.SnapshotEntry{Path: p, Mode: "100644", Hash: h, Size: int64(len(files[p]))})
	}
	data, err := snap.Encode()
	if err != nil {
		t.Fatalf("encode snapshot: %v", err)
	}
	h, err := c.PutBlob(ctx, data)
	if err != nil {
		t.Fatalf("upload snapshot: %v", err)
	}
	return protocol.Manifest{
		Version: protocol.VersionManifest, BaseRef: "0000000000000000000000000000000000000000", BundleHash: h,
		UntrackedFiles: []protocol.ManifestFile{}, DeniedPatterns: []string{".env"}, DeniedPaths: []string{}, Format: protocol.SnapshotVersion,
	}
}

func randomSuffix() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	const hex = "0123456789abcdef"
	out := make([]byte, 8)
	for i, c := range b {
		out[2*i], out[2*i+1] = hex[c>>4], hex[c&15]
	}
	return string(out)
}

// NewLogger returns a JSON slog logger writing to t.Log (silently dropping
// lines logged after the test ended).
func NewLogger(t testing.TB) *slog.Logger {
	w := &tWriter{t: t}
	t.Cleanup(w.close)
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct {
	mu     sync.Mutex
	t      testing.TB
	closed bool
}

func (w *tWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.closed {
		w.t.Log(string(b[:len(b)-min(1, len(b))]))
	}
	return len(b), nil
}

func (w *tWriter) close() {
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
}

// FreeAddr returns a loopback address ("127.0.0.1:port") whose port
// nothing listens on now.
func FreeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}
