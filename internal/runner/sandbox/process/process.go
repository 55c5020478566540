// Package process owns the "process" isolation tier: the harness runs as a
// child process of the runner, in its own process group, with a scrubbed
// environment (PATH, a session HOME and TMPDIR, the proxy variables and the
// resolved execution environment, nothing else of the runner's), the
// released secrets injected, and its HTTP(S) traffic sent through a
// deny-by-default egress proxy started for the session, which records every
// decision as a network.connected event.
//
// This is process-level enforcement: a binary that ignores the proxy
// variables can open its own connections, and a descendant that calls
// setsid leaves the process group. The namespace tier closes both gaps.
package process

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"warrant.dev/warrant/internal/runner/egress"
	"warrant.dev/warrant/internal/runner/session"
	"warrant.dev/warrant/protocol"
)

// FallbackPath is the session's PATH when the runner has none.
const FallbackPath = "/usr/local/bin:/usr/bin:/bin"

// proxyShutdownTimeout bounds the egress proxy's shutdown after a session.
const proxyShutdownTimeout = 5 * time.Second

// Options configures the backend.
type Options struct {
	// Path is the session's PATH; empty means the runner's PATH, else
	// FallbackPath.
	Path string
	// Resolver resolves names for the egress proxy; nil means the system
	// resolver. Tests use it to make names resolve where they choose.
	Resolver egress.Resolver
}

// Backend is the process tier. The zero value is not usable; call New.
type Backend struct {
	path     string
	resolver egress.Resolver
}

// New returns the process backend.
func New(opts Options) *Backend {
	p := opts.Path
	if p == "" {
		p = os.Getenv("PATH")
	}
	if p == "" {
		p = FallbackPath
	}
	return &Backend{path: p, resolver: opts.Resolver}
}

// Isolation implements session.Backend.
func (b *Backend) Isolation() string { return protocol.IsolationProcess }

// Check implements session.Backend: every execution except the pi agent,
// which has no CLI and runs only in a harness backend. This is the one
// place that keeps pi from ever being spawned as a process.
func (b *Backend) Check(c *protocol.Contract, e *session.Execution) error {
	if c.Agent.Kind == protocol.AgentPi || e.Agent == protocol.AgentPi {
		return &session.CapabilityError{Reason: "the pi agent runs only in a harness backend; the process backend cannot spawn it"}
	}
	return nil
}

// Run implements session.Backend.
func (b *Backend) Run(ctx context.Context, s *session.Session) (session.Result, error) {
	log := s.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	e := s.Execution
	cwd, err := session.ResolveCwd(s.Workspace, e.Cwd)
	if err != nil {
		return session.Result{}, err
	}
	home := filepath.Join(s.ScratchDir, "home")
	tmp := filepath.Join(s.ScratchDir, "tmp")
	for _, d := range []string{home, tmp} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return session.Result{}, fmt.Errorf("session scratch directory: %w", err)
		}
	}
	env := map[string]string{"PATH": b.path, "HOME": home, "TMPDIR": tmp}
	for k, v := range session.ResolveEnv(e, s.Secrets) {
		env[k] = v
	}
	// Set after the contract's variables, which cannot unset it: it is how
	// a restarted runner finds this session's strays.
	env[session.MarkerEnv] = s.ScratchDir

	var proxy *egress.Proxy
	if e.EgressProxy {
		var addr string
		proxy, addr, err = egress.Start(context.WithoutCancel(ctx), egress.Config{
			AllowHosts:  s.Contract.Network.AllowHosts,
			DefaultDeny: s.Contract.Network.DefaultDeny,
			Resolver:    b.resolver,
			Record:      session.RecordEgress(s),
		})
		if err != nil {
			return session.Result{}, fmt.Errorf("start egress proxy: %w", err)
		}
		defer func() {
			sctx, cancel := context.WithTimeout(context.Background(), proxyShutdownTimeout)
			defer cancel()
			if err := proxy.Shutdown(sctx); err != nil {
				log.Warn("egress proxy shutdown", "run", s.RunID, "err", err)
			}
		}()
		// The proxy variables are set last: the contract's own variables
		// cannot point the session around its proxy.
		url := "http://" + addr
		for _, k := range []string{"HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"} {
			env[k] = url
		}
	} else {
		log.Warn("session runs without the egress proxy (execution.env.egressProxy is false): its network use is not recorded", "run", s.RunID)
	}

	argv := e.Argv()
	cmd := &exec.Cmd{Path: argv[0], Args: argv, Env: session.Environ(env), Dir: cwd}
	if path, err := session.LookPath(argv[0], env["PATH"], cwd); err != nil {
		cmd.Err = err
	} else {
		cmd.Path = path
	}
	return session.Supervise(ctx, cmd, s.Log, session.Limits{
		Timeout:     e.Timeout,
		LogMaxBytes: e.LogMaxBytes,
		KillGrace:   s.KillGrace,
	}, s.Started)
}

var _ session.Backend = (*Backend)(nil)
