package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"warrant.dev/warrant/internal/runner"
)

func init() { register(newRunnerCmd) }

func newRunnerCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "runner",
		Short: "Run a runner that claims and executes runs for a pool",
		Args:  noArgs,
	}
	cmd.AddCommand(a.runnerStartCmd(), a.runnerDoctorCmd(), a.runnerEnrollTokenCmd(), a.runnerListCmd(), a.runnerRevokeCmd())
	return cmd
}

type runnerStartFlags struct {
	pool        string
	enrollToken string
	dataDir     string
	workDir     string
	name        string
	concurrency int
	enrollRetry time.Duration
	killGrace   time.Duration
	logLevel    string
	isolation   isolationFlags
}

func (a *app) runnerStartCmd() *cobra.Command {
	var f runnerStartFlags
	cmd := &cobra.Command{
		Use:   "start --pool NAME [--enroll-token T] [--data DIR]",
		Short: "Enroll (once) and execute runs claimed from the plane",
		Long: `Start a runner. The first start enrolls it: an Ed25519 key is made in the data
directory (mode 0600, never sent anywhere) and registered with the plane using
a one-time enroll token. Later starts reuse that identity.

The runner long-polls the plane for runs of its pool and executes up to
--concurrency of them at once, each in a governed session. SIGTERM or Ctrl-C
stops claiming and lets every claimed run finish with a posted receipt; a
second signal kills the sessions at once.`,
		Example: `  warrant runner start --plane http://127.0.0.1:7070 --pool default \
      --enroll-token "$(cat enroll-token)" --data /var/lib/warrant/runner`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return a.runnerStart(f) },
	}
	fl := cmd.Flags()
	fl.StringVar(&f.pool, "pool", "default", "runner pool to enroll into")
	fl.StringVar(&f.enrollToken, "enroll-token", "", "one-time enroll token (default $WARRANT_ENROLL_TOKEN); needed only on the first start")
	fl.StringVar(&f.dataDir, "data", "", "data directory for the runner key, identity and sessions (default <user config dir>/warrant/runner)")
	fl.StringVar(&f.workDir, "work-dir", "", "directory for session workspaces and logs (default: inside --data); a fast disk or tmpfs speeds sessions up")
	fl.StringVar(&f.name, "name", "", "name shown in the plane's runner list (default the host name)")
	fl.IntVar(&f.concurrency, "concurrency", 1, "runs executed at the same time")
	fl.DurationVar(&f.enrollRetry, "enroll-retry", runner.DefaultEnrollRetry, "how long to retry enrollment while the plane is unreachable")
	fl.DurationVar(&f.killGrace, "kill-grace", runner.DefaultKillGrace, "time a session has between SIGTERM and SIGKILL when it is stopped")
	fl.StringVar(&f.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	f.isolation.register(fl)
	return cmd
}

func (a *app) runnerStart(f runnerStartFlags) error {
	cfg, _, err := a.loadConfig()
	if err != nil {
		return err
	}
	if f.concurrency < 1 {
		return usageError("--concurrency must be at least 1")
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(f.logLevel)); err != nil {
		return usageError("--log-level %q: want debug, info, warn or error", f.logLevel)
	}
	if f.enrollToken == "" {
		f.enrollToken = os.Getenv("WARRANT_ENROLL_TOKEN")
	}
	if f.dataDir == "" {
		dir, err := DefaultConfigDir()
		if err != nil {
			return err
		}
		f.dataDir = filepath.Join(dir, "runner")
	}
	if f.name == "" {
		f.name, _ = os.Hostname()
	}
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find the warrant executable (for the mock agent): %w", err)
	}
	log := slog.New(slog.NewTextHandler(a.stdio.Err, &slog.HandlerOptions{Level: level}))
	backends, err := a.runnerBackends(a.ctx, f.isolation, self, log)
	if err != nil {
		return err
	}
	r, err := runner.New(runner.Options{
		PlaneURL:    cfg.Plane,
		Pool:        f.pool,
		DataDir:     f.dataDir,
		WorkDir:     f.workDir,
		EnrollToken: f.enrollToken,
		Name:        f.name,
		Concurrency: f.concurrency,
		Backends:    backends,
		WarrantPath: self,
		Logger:      log,
		EnrollRetry: f.enrollRetry,
		KillGrace:   f.killGrace,
	})
	if err != nil {
		return err
	}

	// The first signal (or the end of the command's context) stops
	// claiming and drains; a second one aborts the sessions.
	signals := make(chan os.Signal, 2)
	signal.Notify(signals, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(signals)
	runCtx, abort := context.WithCancel(context.WithoutCancel(a.ctx))
	defer abort()
	go func() {
		select {
		case <-signals:
		case <-a.ctx.Done():
		case <-runCtx.Done():
			return
		}
		log.Info("stopping: no new claims; finishing claimed runs (signal again to abort them)")
		r.Stop()
		select {
		case <-signals:
			log.Warn("aborting: killing running sessions")
			abort()
		case <-runCtx.Done():
		}
	}()

	if err := r.Run(runCtx); err != nil {
		if errors.Is(err, context.Canceled) {
			return quietExit(ExitFailure)
		}
		return err
	}
	return nil
}
