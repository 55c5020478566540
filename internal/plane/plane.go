// Package plane is Warrant's control plane: the service that evaluates run
// requests against the policy and issues signed contracts, hands queued
// runs to runners with atomic claims and leases, verifies appended event
// chains and completed receipts and countersigns them, brokers secrets
// (AES-256-GCM at rest, released only to the claim holder), streams
// events, enforces retention, and serves all of it as the HTTP/JSON API
// in docs/api.md (wire types in package client).
//
// State lives behind store.Store and store.BlobStore; time comes from a
// Clock; wakeups for long polls and event streams go through a Notifier,
// so several plane replicas can later share one PostgreSQL database.
package plane

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"warrant.dev/warrant/internal/store"
	"warrant.dev/warrant/protocol"
)

// Clock tells the time. Tests use a fake one.
type Clock interface{ Now() time.Time }

// SystemClock is the real clock.
type SystemClock struct{}

// Now returns time.Now().
func (SystemClock) Now() time.Time { return time.Now() }

// Defaults of Config.
const (
	DefaultLeaseTTL          = 30 * time.Second
	DefaultHeartbeatInterval = 10 * time.Second
	DefaultContractTTL       = time.Hour
	DefaultConsentTimeout    = 24 * time.Hour
	DefaultMaxClaimWait      = 60 * time.Second
	DefaultReapInterval      = time.Second
	DefaultRetentionInterval = time.Hour
	DefaultMaxBodyBytes      = 16 << 20
	DefaultMaxBlobBytes      = 256 << 20
	DefaultMaxFetchBytes     = 1 << 30
	DefaultRateLimit         = 500  // requests per second per principal
	DefaultRateBurst         = 2000 // bucket size
	DefaultSSEKeepAlive      = 15 * time.Second
)

// snapshotCacheHashes bounds the parsed snapshots kept in memory (about
// 150 bytes per file hash).
const snapshotCacheHashes = 1_000_000

// Config configures a Plane. Store, Blobs, Key and MasterKey are required;
// zero durations and limits take the defaults above.
type Config struct {
	Store     store.Store
	Blobs     store.BlobStore
	Key       *protocol.PrivateKey // the plane's signing key
	MasterKey []byte               // 32 bytes: seals secrets at rest
	Logger    *slog.Logger
	Clock     Clock
	Notifier  Notifier
	Version   string // reported by /v1/info

	LeaseTTL          time.Duration
	HeartbeatInterval time.Duration
	ContractTTL       time.Duration
	ConsentTimeout    time.Duration
	MaxClaimWait      time.Duration
	ReapInterval      time.Duration
	RetentionInterval time.Duration
	MaxBodyBytes      int64
	MaxBlobBytes      int64
	MaxFetchBytes     int64   // the blobs one POST /v1/blobs/fetch may return, in total
	RateLimit         float64 // per principal, requests per second
	RateBurst         int
	SSEKeepAlive      time.Duration

	// SecureCookies marks the web UI's cookies Secure on every request,
	// for a plane that users reach over HTTPS through a TLS-terminating
	// proxy (over the plane's own TLS they are Secure anyway).
	SecureCookies bool
}

func (c *Config) fill() error {
	if c.Store == nil || c.Blobs == nil || c.Key == nil {
		return errors.New("plane config: Store, Blobs and Key are required")
	}
	if len(c.MasterKey) != 32 {
		return fmt.Errorf("plane config: master key must be 32 bytes, got %d", len(c.MasterKey))
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Clock == nil {
		c.Clock = SystemClock{}
	}
	if c.Notifier == nil {
		c.Notifier = NewLocalNotifier()
	}
	if c.Version == "" {
		c.Version = "dev"
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.LeaseTTL, DefaultLeaseTTL)
	def(&c.HeartbeatInterval, DefaultHeartbeatInterval)
	def(&c.ContractTTL, DefaultContractTTL)
	def(&c.ConsentTimeout, DefaultConsentTimeout)
	def(&c.MaxClaimWait, DefaultMaxClaimWait)
	def(&c.ReapInterval, DefaultReapInterval)
	def(&c.RetentionInterval, DefaultRetentionInterval)
	def(&c.SSEKeepAlive, DefaultSSEKeepAlive)
	if c.HeartbeatInterval >= c.LeaseTTL {
		c.HeartbeatInterval = c.LeaseTTL / 3
	}
	if c.MaxBodyBytes <= 0 {
		c.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if c.MaxBlobBytes <= 0 {
		c.MaxBlobBytes = DefaultMaxBlobBytes
	}
	if c.MaxFetchBytes <= 0 {
		c.MaxFetchBytes = DefaultMaxFetchBytes
	}
	if c.RateLimit <= 0 {
		c.RateLimit = DefaultRateLimit
	}
	if c.RateBurst <= 0 {
		c.RateBurst = DefaultRateBurst
	}
	return nil
}

// Plane is the control plane service. Create it with New, serve
// Handler(), run its background loops with Start, and stop with Drain and
// Close (or use Server, which does all of that).
type Plane struct {
	cfg       Config
	store     store.Store
	blobs     store.BlobStore
	log       *slog.Logger
	clock     Clock
	notify    Notifier
	key       *protocol.PrivateKey
	sealer    *sealer
	metrics   *metrics
	limiter   *rateLimiter
	snaps     *snapshotCache
	contracts *contractCache

	draining atomic.Bool
	drainCh  chan struct{}
	drainMu  sync.Once

	loopCancel context.CancelFunc
	loops      sync.WaitGroup
}

// New checks the configuration, records the plane key and makes sure a
// policy exists (the default policy on first start).
func New(ctx context.Context, cfg Config) (*Plane, error) {
	if err := cfg.fill(); err != nil {
		return nil, err
	}
	s, err := newSealer(cfg.MasterKey)
	if err != nil {
		return nil, err
	}
	p := &Plane{
		cfg: cfg, store: cfg.Store, blobs: cfg.Blobs, log: cfg.Logger, clock: cfg.Clock, notify: runsNotifier{cfg.Notifier},
		key: cfg.Key, sealer: s, limiter: newRateLimiter(cfg.RateLimit, cfg.RateBurst), snaps: newSnapshotCache(snapshotCacheHashes),
		contracts: newContractCache(),
		drainCh:   make(chan struct{}),
	}
	p.metrics = newMetrics(p)
	pub := cfg.Key.Public()
	if err := p.store.PutPlaneKey(ctx, store.PlaneKey{KeyID: pub.ID(), PublicKeyPEM: pub.PEM(), AddedAt: p.now()}); err != nil {
		return nil, fmt.Errorf("record plane key: %w", err)
	}
	if _, err := p.store.CurrentPolicy(ctx); errors.Is(err, store.ErrNotFound) {
		if _, err := p.putPolicy(ctx, DefaultPolicy()); err != nil {
			return nil, fmt.Errorf("install default policy: %w", err)
		}
		p.log.Info("installed the default policy")
	} else if err != nil {
		return nil, fmt.Errorf("read policy: %w", err)
	}
	return p, nil
}

// Registry returns the plane's private Prometheus registry.
func (p *Plane) Registry() *prometheus.Registry { return p.metrics.reg }

// PublicKey returns the plane's signing public key.
func (p *Plane) PublicKey() *protocol.PublicKey { return p.key.Public() }

// now is the plane's clock, at the protocol's millisecond precision.
func (p *Plane) now() time.Time { return p.clock.Now().UTC().Truncate(time.Millisecond) }

// Start runs the background loops (lease and consent reaper, retention)
// until Close.
func (p *Plane) Start() {
	ctx, cancel := context.WithCancel(context.Background())
	p.loopCancel = cancel
	p.loops.Add(2)
	go func() {
		defer p.loops.Done()
		p.every(ctx, p.cfg.ReapInterval, "reaper", p.Reap)
	}()
	go func() {
		defer p.loops.Done()
		p.every(ctx, p.cfg.RetentionInterval, "retention", func(ctx context.Context) error {
			_, err := p.RunRetention(ctx)
			return err
		})
	}()
}

func (p *Plane) every(ctx context.Context, d time.Duration, name string, fn func(context.Context) error) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		if err := fn(ctx); err != nil && ctx.Err() == nil {
			p.log.Error(name+" pass failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Drain marks the plane as shutting down: /readyz answers 503 and long
// polls and event streams return promptly. Requests keep being served.
func (p *Plane) Drain() {
	p.drainMu.Do(func() {
		p.draining.Store(true)
		close(p.drainCh)
	})
}

// Close stops the background loops. It does not close the store.
func (p *Plane) Close() {
	p.Drain()
	if p.loopCancel != nil {
		p.loopCancel()
	}
	p.loops.Wait()
}
