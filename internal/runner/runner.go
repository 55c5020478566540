// Package runner is the runner kernel: it enrolls with the plane (an
// Ed25519 key made and kept on the host), long-polls for claims of its
// pool, and for each claimed run verifies the contract, keeps the lease
// alive with heartbeats (which also deliver cancellation), materializes
// the workspace, hands the prepared execution to the session backend of
// the contract's isolation tier, streams the run's events to the plane
// while it runs, collects and redacts the output, uploads it, and signs
// and posts the receipt.
//
// Backends are passed in (Options.Backends), so the kernel depends on none
// of them. Stop is not cancel: Stop ends claiming and lets every claimed
// run finish with a posted receipt; a cancel from the plane kills one
// session; cancelling Run's context aborts everything.
package runner

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"warrant.dev/warrant/client"
	"warrant.dev/warrant/internal/fsutil"
	"warrant.dev/warrant/internal/runner/session"
	"warrant.dev/warrant/protocol"
)

// Defaults of zero Options fields.
const (
	DefaultEnrollRetry  = time.Minute
	DefaultClaimWait    = 10 * time.Second
	DefaultKillGrace    = 10 * time.Second
	DefaultMaxLogBytes  = 64 << 20
	DefaultReceiptRetry = 10 * time.Minute
	DefaultUploadRetry  = 2 * time.Minute
)

// Options configures a Runner.
type Options struct {
	// PlaneURL is the plane's base URL, e.g. http://127.0.0.1:7070.
	PlaneURL string
	// Pool is the pool to enroll into (the identity's pool wins later).
	Pool string
	// DataDir holds the runner's key, identity and (unless WorkDir is
	// set) session directories.
	DataDir string
	// WorkDir, when set, is where session directories (workspace, log,
	// scratch home) are made instead of DataDir: for example a fast disk or
	// a tmpfs. The runner uses its own subdirectory, warrant-<runner id>.
	WorkDir string
	// EnrollToken enrolls the runner when DataDir has no identity yet.
	EnrollToken string
	// Name is an optional human name shown in the runner list.
	Name string
	// Concurrency is how many runs execute at once (default 1).
	Concurrency int
	// Backends are the session backends, exactly one per isolation tier.
	// The runner advertises their tiers when it claims.
	Backends []session.Backend
	// WarrantPath is the warrant executable, which runs the mock agent as
	// `warrant agent mock PROMPT`. Empty disables the mock agent.
	WarrantPath string
	// Logger receives the runner's logs; nil discards them.
	Logger *slog.Logger
	// HTTPClient talks to the plane; nil uses the client package default.
	HTTPClient *http.Client

	// EnrollRetry bounds how long enrollment is retried while the plane
	// is unreachable.
	EnrollRetry time.Duration
	// ClaimWait is the long-poll wait of one claim request. Stop waits
	// for the claim in flight, so this also bounds how long Stop takes to
	// stop claiming.
	ClaimWait time.Duration
	// KillGrace is the time a session's processes have between SIGTERM
	// and SIGKILL.
	KillGrace time.Duration
	// MaxLogBytes caps a session's log when its contract sets no smaller
	// cap; over it the session is stopped (budget_exceeded).
	MaxLogBytes int64
	// UploadRetry and ReceiptRetry bound the retries of output uploads and
	// of the final receipt, which gets the longest budget.
	UploadRetry  time.Duration
	ReceiptRetry time.Duration

	// Hooks observe the runner, for benchmarks and tests.
	Hooks Hooks
}

// Hooks are called at points of a run's life. Each may be nil; they run on
// the run's goroutine and must return quickly.
type Hooks struct {
	Claimed        func(runID string)
	HarnessStarted func(runID string)
	Finished       func(runID, status string)
}

// Runner claims and executes runs. Create it with New.
type Runner struct {
	opts     Options
	log      *slog.Logger
	plane    *client.Client // no token: enrollment
	backends map[string]session.Backend
	tiers    []string

	enrollMu sync.Mutex
	id       *Identity
	key      *protocol.PrivateKey
	planeKey *protocol.PublicKey
	api      *client.Client // runner token

	stopOnce sync.Once
	stopping chan struct{}
}

// New checks opts and returns a Runner. It does not contact the plane.
func New(opts Options) (*Runner, error) {
	if opts.DataDir == "" {
		return nil, errors.New("runner: a data directory is required")
	}
	if len(opts.Backends) == 0 {
		return nil, errors.New("runner: at least one session backend is required")
	}
	backends := map[string]session.Backend{}
	for _, b := range opts.Backends {
		tier := b.Isolation()
		if _, dup := backends[tier]; dup {
			return nil, fmt.Errorf("runner: two backends for isolation %q: register exactly one per tier", tier)
		}
		backends[tier] = b
	}
	tiers := make([]string, 0, len(backends))
	for t := range backends {
		tiers = append(tiers, t)
	}
	slices.Sort(tiers)
	var copts []client.Option
	if opts.HTTPClient != nil {
		copts = append(copts, client.WithHTTPClient(opts.HTTPClient))
	}
	copts = append(copts, client.WithUserAgent("warrant-runner/"+client.Version))
	plane, err := client.New(opts.PlaneURL, copts...)
	if err != nil {
		return nil, fmt.Errorf("runner: %w", err)
	}
	opts.Concurrency = max(opts.Concurrency, 1)
	setDefault(&opts.EnrollRetry, DefaultEnrollRetry)
	setDefault(&opts.ClaimWait, DefaultClaimWait)
	setDefault(&opts.KillGrace, DefaultKillGrace)
	setDefault(&opts.MaxLogBytes, DefaultMaxLogBytes)
	setDefault(&opts.UploadRetry, DefaultUploadRetry)
	setDefault(&opts.ReceiptRetry, DefaultReceiptRetry)
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Runner{
		opts:     opts,
		log:      log,
		plane:    plane,
		backends: backends,
		tiers:    tiers,
		stopping: make(chan struct{}),
	}, nil
}

func setDefault[T time.Duration | int64](v *T, def T) {
	if *v <= 0 {
		*v = def
	}
}

// Tiers returns the isolation tiers the runner offers.
func (r *Runner) Tiers() []string { return slices.Clone(r.tiers) }

// Enroll makes sure the runner has an identity: it loads the one in the
// data directory, or enrolls with the enroll token (retrying while the
// plane is unreachable) and saves it. It is safe to call more than once.
func (r *Runner) Enroll(ctx context.Context) (Identity, error) {
	r.enrollMu.Lock()
	defer r.enrollMu.Unlock()
	if r.id != nil {
		return *r.id, nil
	}
	if err := os.MkdirAll(r.opts.DataDir, 0o700); err != nil {
		return Identity{}, fmt.Errorf("runner data directory: %w", err)
	}
	key, err := loadOrCreateKey(r.opts.DataDir)
	if err != nil {
		return Identity{}, err
	}
	id, err := loadIdentity(r.opts.DataDir)
	switch {
	case err == nil:
		if id.KeyID != "" && id.KeyID != key.Public().ID() {
			return Identity{}, fmt.Errorf("runner identity names key %s but %s holds %s: restore the key or re-enroll into an empty data directory", id.KeyID, privateKeyFile, key.Public().ID())
		}
		if r.opts.EnrollToken != "" {
			r.log.Info("runner already enrolled; the enroll token is not used", "runner", id.RunnerID)
		}
		if r.opts.Pool != "" && r.opts.Pool != id.Pool {
			r.log.Warn("the runner is enrolled in another pool; it claims for its enrolled pool (enroll into an empty data directory to change pools)", "enrolled", id.Pool, "requested", r.opts.Pool)
		}
	case errors.Is(err, fs.ErrNotExist):
		if id, err = r.enroll(ctx, key); err != nil {
			return Identity{}, err
		}
		data, err := marshalIdentity(id)
		if err != nil {
			return Identity{}, err
		}
		if err := fsutil.WriteFileAtomic(identityPath(r.opts.DataDir), data, 0o600); err != nil {
			return Identity{}, err
		}
		r.log.Info("runner enrolled", "runner", id.RunnerID, "pool", id.Pool, "key", id.KeyID)
	default:
		return Identity{}, err
	}
	if id.PlanePublicKeyPEM != "" {
		pk, err := protocol.ParsePublicKeyPEM(id.PlanePublicKeyPEM)
		if err != nil {
			return Identity{}, fmt.Errorf("plane key in the runner identity: %w", err)
		}
		r.planeKey = pk
	} else {
		r.log.Warn("the plane sent no public key at enrollment: contracts are not checked against it")
	}
	r.id, r.key = id, key
	r.api = r.plane.WithToken(id.RunnerToken)
	return *id, nil
}

// Stop ends claiming. Runs already claimed finish and post their receipts;
// Run returns when they have. It is safe to call more than once.
func (r *Runner) Stop() { r.stopOnce.Do(func() { close(r.stopping) }) }

func (r *Runner) stopped() bool {
	select {
	case <-r.stopping:
		return true
	default:
		return false
	}
}

// claimBackoff paces claim retries after errors.
var claimBackoff = client.Backoff{Initial: 200 * time.Millisecond, Max: 10 * time.Second}

// ErrRunnerRejected is returned by Run when the plane no longer accepts
// the runner's token (the runner was revoked).
var ErrRunnerRejected = errors.New("the plane rejected the runner token")

// Run enrolls if needed and executes claimed runs, up to Concurrency at
// once, until Stop is called (then it drains: every claimed run ends with
// a posted receipt) or ctx ends (then sessions are killed and nothing more
// is posted; the plane fails those runs when their leases lapse).
func (r *Runner) Run(ctx context.Context) error {
	if err := os.MkdirAll(r.opts.DataDir, 0o700); err != nil {
		return fmt.Errorf("runner data directory: %w", err)
	}
	unlock, err := lockDataDir(r.opts.DataDir)
	if err != nil {
		return err
	}
	defer unlock()
	// Stop also ends an enrollment still waiting for the plane: nothing
	// has been claimed yet, so there is nothing to drain.
	enrollCtx, cancelEnroll := context.WithCancel(ctx)
	go func() {
		select {
		case <-r.stopping:
			cancelEnroll()
		case <-enrollCtx.Done():
		}
	}()
	_, err = r.Enroll(enrollCtx)
	cancelEnroll()
	if err != nil {
		if r.stopped() && ctx.Err() == nil {
			r.log.Info("runner stopped before it was enrolled")
			return nil
		}
		return err
	}
	// Processes and session directories left by a runner that died belong
	// to runs whose leases have lapsed: nothing will use them.
	if n := session.KillStrays(r.sessionsRoot()); n > 0 {
		r.log.Warn("killed processes left by the sessions of a previous runner", "processes", n)
	}
	removeAll(r.sessionsRoot(), r.log)
	slots := make(chan struct{}, r.opts.Concurrency)
	var wg sync.WaitGroup
	defer wg.Wait()
	failures := 0
	r.log.Info("runner claiming", "pool", r.id.Pool, "tiers", r.tiers, "concurrency", r.opts.Concurrency)
	for {
		select {
		case slots <- struct{}{}:
		case <-r.stopping:
			return r.drained(ctx, &wg)
		case <-ctx.Done():
			return ctx.Err()
		}
		if r.stopped() {
			<-slots
			return r.drained(ctx, &wg)
		}
		// The claim in flight is not cancelled by Stop: a claim the plane
		// granted must be executed, never dropped.
		claim, err := r.api.Claim(ctx, client.ClaimRequest{
			Pool:        r.id.Pool,
			Tiers:       r.tiers,
			WaitSeconds: max(int(r.opts.ClaimWait/time.Second), 1),
		})
		if err != nil {
			<-slots
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if errors.Is(err, client.ErrUnauthenticated) {
				return fmt.Errorf("%w: %v (the runner may have been revoked; re-enroll with a new enroll token into an empty data directory)", ErrRunnerRejected, err)
			}
			wait := claimBackoff.Wait(failures)
			failures++
			r.log.Warn("claim failed", "err", err, "retry_in", wait.Round(time.Millisecond))
			if !sleep(ctx, r.stopping, wait) && ctx.Err() != nil {
				return ctx.Err()
			}
			continue
		}
		failures = 0
		if claim == nil {
			<-slots
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			r.execute(ctx, claim)
		}()
	}
}

func (r *Runner) drained(ctx context.Context, wg *sync.WaitGroup) error {
	r.log.Info("runner stopping: finishing claimed runs")
	wg.Wait()
	if ctx.Err() != nil {
		return ctx.Err()
	}
	r.log.Info("runner stopped")
	return nil
}

// sleep waits for d, or until ctx ends or stop closes; it reports whether
// the whole wait passed.
func sleep(ctx context.Context, stop <-chan struct{}, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	case <-stop:
		return false
	}
}

// sessionsRoot is the directory holding this runner's session directories.
func (r *Runner) sessionsRoot() string {
	if r.opts.WorkDir == "" {
		return filepath.Join(r.opts.DataDir, "sessions")
	}
	return filepath.Join(r.opts.WorkDir, "warrant-"+r.id.RunnerID)
}
