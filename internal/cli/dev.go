package cli

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"warrant.dev/warrant/client"
	"warrant.dev/warrant/internal/fsutil"
	"warrant.dev/warrant/internal/plane"
	"warrant.dev/warrant/internal/runner"
	"warrant.dev/warrant/internal/runner/sandbox/process"
	"warrant.dev/warrant/internal/runner/session"
	"warrant.dev/warrant/internal/workspace"
	"warrant.dev/warrant/protocol"
)

func init() {
	register(newDevCmd)
	register(newDemoCmd)
}

// devPool is the pool of the runner `warrant dev` embeds.
const devPool = "local"

type devFlags struct {
	data        string
	listen      string
	demo        bool
	keep        bool
	concurrency int
	writeConfig bool
	logLevel    string
}

func newDevCmd(a *app) *cobra.Command {
	var f devFlags
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run a plane, a runner (pool local) and SQLite in one process: the one-command start",
		Long: `Start an embedded plane (SQLite in the data directory), enroll an embedded
runner in pool "local", write the CLI config (plane URL, admin token, pool) and
a trust file pinning the plane's key, so every other command just works. It
stays up until Ctrl-C.

With --demo it also runs a mock agent in a sample repository, waits for the
run, and prints its receipt and its offline verification.`,
		Example: `  warrant dev                 # then, in another terminal inside a git repo:
  warrant run --agent mock "update the notes"
  warrant dev --demo`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			f.keep = true
			return a.runDev(f)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.data, "data", "", "data directory (default <user config dir>/warrant/dev)")
	fl.StringVar(&f.listen, "listen", "127.0.0.1:7070", "plane address; if it is taken a free port is used")
	fl.BoolVar(&f.demo, "demo", false, "also run the demo: a mock agent run with its receipt and verification")
	fl.IntVar(&f.concurrency, "concurrency", 2, "runs the embedded runner executes at once")
	fl.BoolVar(&f.writeConfig, "write-config", true, "write the CLI config and trust file for this plane")
	fl.StringVar(&f.logLevel, "log-level", "warn", "log level of the plane and runner: debug, info, warn, error")
	return cmd
}

func newDemoCmd(a *app) *cobra.Command {
	var f devFlags
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run one governed run end to end in a throwaway plane and show its verified receipt",
		Long: `Start a throwaway plane and runner (in a temporary directory, on a free
port), run the built-in mock agent in a sample git repository with a secret
and a blocked network probe, then print the run's events, its one-screen
receipt and its offline verification against the pinned plane key. Nothing
is left behind unless --keep is given. Exit status 0 means the receipt
verified.`,
		Example: "  go run ./cmd/warrant demo",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			f.demo = true
			f.listen = "127.0.0.1:0"
			f.writeConfig = false
			if f.data == "" {
				dir, err := os.MkdirTemp("", "warrant-demo-")
				if err != nil {
					return err
				}
				if !f.keep {
					defer os.RemoveAll(dir)
				} else {
					fmt.Fprintf(a.stdio.Err, "demo data kept in %s\n", dir)
				}
				f.data = dir
			}
			return a.runDev(f)
		},
	}
	cmd.Flags().BoolVar(&f.keep, "keep", false, "keep the plane running (and its data) after the demo until Ctrl-C")
	cmd.Flags().StringVar(&f.logLevel, "log-level", "warn", "log level of the plane and runner")
	f.concurrency = 1
	return cmd
}

func (a *app) runDev(f devFlags) error {
	var level slog.Level
	if err := level.UnmarshalText([]byte(f.logLevel)); err != nil {
		return usageError("--log-level %q: want debug, info, warn or error", f.logLevel)
	}
	log := slog.New(slog.NewTextHandler(a.stdio.Err, &slog.HandlerOptions{Level: level}))
	if f.data == "" {
		dir, err := DefaultConfigDir()
		if err != nil {
			return err
		}
		f.data = filepath.Join(dir, "dev")
	}
	if f.concurrency < 1 {
		f.concurrency = 1
	}
	ctx, stop := context.WithCancel(a.ctx)
	defer stop()

	// The plane.
	data, err := plane.OpenDataDir(ctx, filepath.Join(f.data, "plane"), "", os.Getenv(plane.MasterKeyEnv))
	if err != nil {
		return withExit(ExitFailure, err)
	}
	defer data.Close()
	p, err := plane.New(ctx, plane.Config{Store: data.Store, Blobs: data.Blobs, Key: data.Key, MasterKey: data.MasterKey, Logger: log, Version: planeBuildVersion()})
	if err != nil {
		return withExit(ExitFailure, err)
	}
	tokenFile := filepath.Join(f.data, "plane", plane.AdminTokenFile)
	token, created, err := p.Bootstrap(ctx, tokenFile)
	if err != nil {
		return withExit(ExitFailure, fmt.Errorf("bootstrap the plane: %w", err))
	}
	if !created {
		b, err := os.ReadFile(tokenFile)
		if err != nil {
			return withExit(ExitFailure, fmt.Errorf("read the admin token (%s): %w; delete %s to start afresh", tokenFile, err, f.data))
		}
		token = strings.TrimSpace(string(b))
	}
	ln, err := net.Listen("tcp", f.listen)
	if err != nil {
		ln, err = net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return withExit(ExitFailure, fmt.Errorf("listen: %w", err))
		}
		fmt.Fprintf(a.stdio.Err, "%s is taken; using %s\n", f.listen, ln.Addr())
	}
	planeURL := "http://" + ln.Addr().String()
	srv := plane.NewServer(p)
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()

	admin, err := client.New(planeURL, client.WithToken(token))
	if err != nil {
		return err
	}

	// The runner, enrolled into pool local.
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find the warrant executable (for the mock agent): %w", err)
	}
	runnerDir := filepath.Join(f.data, "runner")
	enrollToken := ""
	if !fileExists(filepath.Join(runnerDir, "identity.json")) {
		et, err := admin.CreateEnrollToken(ctx, client.EnrollTokenRequest{Pool: devPool, TTLSeconds: 600})
		if err != nil {
			return withExit(ExitFailure, fmt.Errorf("create an enroll token: %w", err))
		}
		enrollToken = et.Token
	}
	// dev offers every tier this host supports; the demo needs only the
	// process tier and skips the namespace probe.
	backends := []session.Backend{process.New(process.Options{})}
	if !f.demo || f.keep {
		if backends, err = a.runnerBackends(ctx, isolationFlags{}, self, log); err != nil {
			return err
		}
	}
	r, err := runner.New(runner.Options{
		PlaneURL: planeURL, Pool: devPool, DataDir: runnerDir, EnrollToken: enrollToken, Name: "dev",
		Concurrency: f.concurrency, Backends: backends, WarrantPath: self, Logger: log,
	})
	if err != nil {
		return err
	}
	runnerCtx, abortRunner := context.WithCancel(context.WithoutCancel(ctx))
	runnerDone := make(chan error, 1)
	go func() { runnerDone <- r.Run(runnerCtx) }()
	defer func() {
		r.Stop()
		select {
		case <-runnerDone:
		case <-time.After(15 * time.Second):
			abortRunner()
			<-runnerDone
		}
		abortRunner()
	}()

	trust := protocol.NewTrustStore()
	trust.Add(protocol.SignerPlane, data.Key.Public())
	if f.writeConfig {
		if err := a.writeDevConfig(planeURL, token, data.Key.Public()); err != nil {
			return err
		}
	}
	fmt.Fprintf(a.stdio.Err, "warrant dev: plane %s (key %s), runner in pool %s, data in %s\n", planeURL, data.Key.Public().ID(), devPool, f.data)
	fmt.Fprintf(a.stdio.Err, "  web UI   %s/ui/\n", planeURL)

	if f.demo {
		if err := a.runDemo(ctx, admin, planeURL, trust, f.data); err != nil {
			return err
		}
		if !f.keep {
			return nil
		}
	}
	fmt.Fprintf(a.stdio.Err, "  try      cd <a git repo> && warrant run --agent mock \"update the notes\"\n  stop     Ctrl-C\n")
	select {
	case <-ctx.Done():
		fmt.Fprintln(a.stdio.Err, "\nwarrant dev: stopping (claimed runs finish first)")
		return nil
	case err := <-serveErr:
		return withExit(ExitFailure, fmt.Errorf("plane stopped: %w", err))
	case err := <-runnerDone:
		runnerDone <- err
		if err != nil {
			return withExit(ExitFailure, fmt.Errorf("runner stopped: %w", err))
		}
		return nil
	}
}

// writeDevConfig points the CLI at the dev plane, unless the config file
// already names another plane (a user's real plane is never clobbered).
func (a *app) writeDevConfig(planeURL, token string, planeKey *protocol.PublicKey) error {
	path, err := a.configPath()
	if err != nil {
		return err
	}
	dir, err := DefaultConfigDir()
	if err != nil {
		return err
	}
	trustPath := filepath.Join(dir, "trust.json")
	existing, _, err := a.loadConfig()
	if err == nil && fileExists(path) && existing.Plane != "" && !isLocalPlane(existing.Plane) {
		fmt.Fprintf(a.stdio.Err, "%s names another plane (%s); not changing it. Use this one with:\n  export WARRANT_PLANE=%s WARRANT_TOKEN=%s\n", path, existing.Plane, planeURL, token)
		return nil
	}
	if err := writeConfig(path, Config{Plane: planeURL, Token: token, Trust: trustPath, Pool: devPool}); err != nil {
		return err
	}
	ts := protocol.NewTrustStore()
	if data, err := os.ReadFile(trustPath); err == nil {
		if parsed, err := protocol.ParseTrustFile(data); err == nil {
			ts = parsed
		}
	}
	ts.Add(protocol.SignerPlane, planeKey)
	if err := writeTrustFile(trustPath, ts); err != nil {
		return err
	}
	fmt.Fprintf(a.stdio.Err, "  config   %s (plane, admin token, pool %s); trust %s pins the plane key\n", path, devPool, trustPath)
	return nil
}

func isLocalPlane(u string) bool {
	return strings.HasPrefix(u, "http://127.0.0.1:") || strings.HasPrefix(u, "http://localhost:") || strings.HasPrefix(u, "http://[::1]:")
}

// demoSecret is the secret the demo releases to the mock agent.
const demoSecret = "MOCK_SECRET"

// runDemo makes a sample repository, lets the dev runner run the mock
// agent on it with a secret and a network probe, and prints the run's
// events, receipt and verification.
func (a *app) runDemo(ctx context.Context, admin *client.Client, planeURL string, trust *protocol.TrustStore, dataDir string) error {
	repo := filepath.Join(dataDir, "demo-repo")
	if err := makeDemoRepo(ctx, repo); err != nil {
		return fmt.Errorf("make the demo repository: %w", err)
	}
	value := make([]byte, 16)
	if _, err := rand.Read(value); err != nil {
		return err
	}
	if _, err := admin.PutSecret(ctx, demoSecret, "demo-"+hex.EncodeToString(value)); err != nil {
		return fmt.Errorf("store the demo secret: %w", err)
	}
	pv, err := admin.GetPolicy(ctx)
	if err != nil {
		return err
	}
	pol := pv.Policy
	releasable := false
	for _, r := range pol.Secrets.Releasable {
		if r.Name == demoSecret && contains(r.Pools, devPool) {
			releasable = true
		}
	}
	if !releasable {
		pol.Secrets.Releasable = append(pol.Secrets.Releasable, protocol.SecretScopeRule{Name: demoSecret, Scope: "pool:" + devPool, Pools: []string{devPool}})
		if _, err := admin.PutPolicy(ctx, pol); err != nil {
			return fmt.Errorf("make the demo secret releasable: %w", err)
		}
	}

	captured, err := workspace.Capture(ctx, workspace.CaptureOptions{Dir: repo})
	if err != nil {
		return err
	}
	if _, err := workspace.Upload(ctx, captured, planeBlobs{admin}); err != nil {
		return err
	}
	task := "check the network and update the notes"
	fmt.Fprintf(a.stdio.Out, "\n$ warrant run --agent mock --secret %s %q   (in %s)\n", demoSecret, task, repo)
	resp, err := admin.SubmitRun(ctx, client.RunRequest{
		Agent: protocol.AgentSpec{Kind: protocol.AgentMock}, Prompt: task, Pool: devPool,
		Workspace: captured.Manifest, Secrets: []string{demoSecret},
	})
	if err != nil {
		return fmt.Errorf("submit the demo run: %w", err)
	}
	final, err := a.follow(admin, resp.Run, -1)
	if err != nil {
		return err
	}
	fmt.Fprintf(a.stdio.Out, "\n$ warrant receipt %s\n", final.ID)
	run, err := admin.GetRun(ctx, final.ID)
	if err != nil {
		return err
	}
	bundle, raw, err := admin.Bundle(ctx, final.ID)
	if err != nil {
		return fmt.Errorf("fetch the demo bundle: %w", err)
	}
	view := buildReceiptView(run, bundle)
	rep := protocol.VerifyBundle(bundle, trust)
	view.Verification = &verifySummary{Trusted: rep.Trusted(), Valid: rep.Valid(), Note: rep.Note}
	a.fillArtifacts(admin, run, &view)
	a.printReceipt(view)

	bundlePath := filepath.Join(dataDir, final.ID+".bundle.json")
	if err := fsutil.WriteFileAtomic(bundlePath, raw, 0o644); err != nil {
		return err
	}
	fmt.Fprintf(a.stdio.Out, "\n$ warrant verify %s   (offline, plane key pinned)\n", bundlePath)
	if err := a.reportVerification(bundle, rep, "(the dev plane's key)"); err != nil {
		return err
	}
	if !rep.Trusted() || final.State != protocol.StateCompleted {
		return quietExit(ExitFailure)
	}
	return nil
}

// makeDemoRepo creates (once) a small git repository for the demo.
func makeDemoRepo(ctx context.Context, dir string) error {
	if fileExists(filepath.Join(dir, ".git")) {
		return nil
	}
	files := map[string]string{
		"README.md":  "# demo service\n\nA tiny repository the Warrant demo runs an agent on.\n",
		"src/app.go": "package main\n\nfunc main() { println(\"hello\") }\n",
		"NOTES.md":   "# notes\n",
		".env":       "DATABASE_URL=postgres://demo:demo-password@db/prod\n",
	}
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			return err
		}
	}
	git := func(args ...string) error {
		cmd := exec.CommandContext(ctx, "git", append([]string{"-C", dir, "-c", "user.name=Warrant Demo", "-c", "user.email=demo@warrant.invalid", "-c", "commit.gpgsign=false", "-c", "core.hooksPath=/dev/null"}, args...)...)
		cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null")
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("git %s: %v: %s", strings.Join(args, " "), err, out)
		}
		return nil
	}
	if err := git("init", "-q", "-b", "main"); err != nil {
		return err
	}
	// The .env file is committed on purpose: the capture withholds it
	// anyway and lists it, which the receipt shows.
	if err := git("add", "-A"); err != nil {
		return err
	}
	return git("commit", "-q", "-m", "demo repository")
}
