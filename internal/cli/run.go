package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"warrant.dev/warrant/client"
	"warrant.dev/warrant/internal/workspace"
	"warrant.dev/warrant/protocol"
)

func init() { register(newRunCmd) }

type runFlags struct {
	agent          string
	pool           string
	allowHosts     []string
	dataClasses    []string
	secrets        []string
	isolation      string
	timeout        time.Duration
	dryRun         bool
	detach         bool
	wait           bool
	dir            string
	allowUntracked []string
	deny           []string
	disclosure     string
}

func newRunCmd(a *app) *cobra.Command {
	var f runFlags
	cmd := &cobra.Command{
		Use:   "run [flags] TASK",
		Short: "Capture this workspace and run an agent on it under a signed contract",
		Long: `Capture the current git workspace (tracked files in their working state;
untracked files only with --allow-untracked; secrets such as .env, *.pem and
id_rsa* withheld and listed), upload what the plane lacks, submit the run, and
follow its events live until it ends.

The run executes on a runner of --pool inside a governed session: scrubbed
environment, only the --secret values you name, and egress denied except to
--allow-host. The exit status is the run's: 0 completed, 4 failed,
5 cancelled, 6 denied by policy. Ctrl-C stops following, not the run.`,
		Example: `  warrant run --agent mock "update the notes"
  warrant run --agent command "go test ./..."
  warrant run --agent claude-code --secret ANTHROPIC_API_KEY --allow-host api.anthropic.com "fix the flaky test"
  warrant run --dry-run --agent codex "refactor the parser"     # what would be disclosed
  warrant run --detach --agent command "make lint"              # print the run id and return`,
		Args: func(c *cobra.Command, args []string) error {
			if len(args) != 1 || strings.TrimSpace(args[0]) == "" {
				return usageError("give the task as one argument (quote it)\nUsage: %s", c.UseLine())
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if f.detach && cmd.Flags().Changed("wait") && f.wait {
				return usageError("--wait and --detach contradict each other")
			}
			return a.runRun(f, args[0])
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.agent, "agent", protocol.AgentClaudeCode, "agent harness: claude-code, codex, command (TASK is a shell script), mock")
	fl.StringVar(&f.pool, "pool", "", "runner pool (default: the configured pool, else local)")
	fl.StringArrayVar(&f.allowHosts, "allow-host", nil, "allow egress to this host (repeatable; exact names, *.example.com for subdomains)")
	fl.StringArrayVar(&f.secrets, "secret", nil, "release this stored secret to the session by name (repeatable)")
	fl.StringVar(&f.isolation, "isolation", protocol.IsolationProcess, "session isolation tier: process or namespace")
	fl.StringArrayVar(&f.dataClasses, "data-class", nil, "label the workspace's data with this class, e.g. pii, for the policy's dataClasses rules (repeatable)")
	fl.DurationVar(&f.timeout, "timeout", 0, "wall-clock budget of the session (default: the policy's ceiling)")
	fl.BoolVar(&f.dryRun, "dry-run", false, "show what the run would disclose and the policy decision; send and store nothing")
	fl.BoolVar(&f.detach, "detach", false, "submit, print the run id and return")
	fl.BoolVar(&f.wait, "wait", true, "follow the run until it ends (the default)")
	fl.StringVar(&f.dir, "dir", ".", "workspace directory to capture")
	fl.StringArrayVar(&f.allowUntracked, "allow-untracked", nil, "also capture untracked files matching this pattern (repeatable)")
	fl.StringArrayVar(&f.deny, "deny", nil, "withhold files matching this pattern, in addition to the defaults (repeatable)")
	fl.StringVar(&f.disclosure, "disclosure", "minimal-context", "disclosure mode recorded in the contract")
	return cmd
}

func (a *app) runRun(f runFlags, task string) error {
	if !contains(protocol.AgentKinds, f.agent) {
		return usageError("--agent %q: want one of %s", f.agent, strings.Join(protocol.AgentKinds, ", "))
	}
	if f.isolation != protocol.IsolationProcess && f.isolation != protocol.IsolationNamespace {
		return usageError("--isolation %q: want process or namespace", f.isolation)
	}
	if !contains(protocol.DisclosureModes, f.disclosure) {
		return usageError("--disclosure %q: want one of %s", f.disclosure, strings.Join(protocol.DisclosureModes, ", "))
	}
	if f.timeout < 0 {
		return usageError("--timeout must be positive")
	}
	c, cfg, err := a.planeClient()
	if err != nil {
		return err
	}
	if f.pool == "" {
		f.pool = cfg.Pool
	}
	if f.pool == "" {
		f.pool = "local"
	}

	captured, err := workspace.Capture(a.ctx, workspace.CaptureOptions{Dir: f.dir, AllowUntracked: f.allowUntracked, Deny: f.deny})
	if err != nil {
		return withExit(ExitFailure, fmt.Errorf("%w\n  run inside a git work tree, or name the files to send with --allow-untracked", err))
	}
	a.reportCapture(captured)

	req := client.RunRequest{
		Agent:       protocol.AgentSpec{Kind: f.agent},
		Prompt:      task,
		Pool:        f.pool,
		Workspace:   captured.Manifest,
		Secrets:     f.secrets,
		AllowHosts:  f.allowHosts,
		Disclosure:  f.disclosure,
		Isolation:   f.isolation,
		DryRun:      f.dryRun,
		DataClasses: f.dataClasses,
	}
	if f.timeout > 0 {
		minutes := math.Ceil(f.timeout.Minutes()*1000) / 1000
		req.Budget.MaxDurationMin = &minutes
	}
	if !f.dryRun {
		stats, err := workspace.Upload(a.ctx, captured, planeBlobs{c})
		if err != nil {
			return explain(fmt.Errorf("upload workspace: %w", err), cfg)
		}
		if !a.json {
			fmt.Fprintf(a.stdio.Err, "uploaded %d of %d blobs (%s)", stats.Uploaded, stats.Blobs, humanBytes(stats.UploadedBytes))
			if stats.Uploaded < stats.Blobs {
				fmt.Fprint(a.stdio.Err, "; the plane had the rest")
			}
			fmt.Fprintln(a.stdio.Err)
		}
	}
	resp, err := c.SubmitRun(a.ctx, req)
	if err != nil {
		var api *client.APIError
		if errors.As(err, &api) && api.Code == client.CodePolicyDenied {
			return a.reportDenied(api)
		}
		return explain(err, cfg)
	}
	if resp.DryRun != nil {
		if resp.DryRun.SnapshotMissing { // nothing was uploaded: count from the capture
			resp.DryRun.Files, resp.DryRun.TotalBytes = captured.Stats.Files, captured.Stats.Bytes
		}
		return a.reportDryRun(resp.DryRun)
	}
	run := resp.Run
	if run == nil {
		return errors.New("the plane accepted the run but returned no run")
	}
	if f.detach {
		if a.json {
			return printJSON(a.stdio.Out, run)
		}
		fmt.Fprintln(a.stdio.Out, run.ID)
		fmt.Fprintf(a.stdio.Err, "follow it with 'warrant watch %s'\n", run.ID)
		return nil
	}
	if !a.json {
		st := styleFor(a.stdio.Err)
		fmt.Fprintf(a.stdio.Err, "run %s %s (agent %s, pool %s)\n", st.bold(run.ID), st.state(run.State), run.Agent.Kind, run.Pool)
	}
	final, err := a.follow(c, run, -1)
	if err != nil {
		if errors.Is(err, context.Canceled) {
			fmt.Fprintf(a.stdio.Err, "\nstopped following; run %s continues. Cancel it with 'warrant cancel %s'\n", run.ID, run.ID)
			return quietExit(ExitFailure)
		}
		return explain(err, cfg)
	}
	return exitForState(final)
}

func (a *app) reportCapture(c *workspace.Captured) {
	if a.json {
		return
	}
	base := c.Manifest.BaseRef
	if len(base) > 12 {
		base = base[:12]
	}
	fmt.Fprintf(a.stdio.Err, "captured %d files (%s) from %s at %s", c.Stats.Files, humanBytes(c.Stats.Bytes), c.Root, orDash(base))
	if c.Manifest.DirtyDiffHash != "" {
		fmt.Fprint(a.stdio.Err, " with uncommitted changes")
	}
	fmt.Fprintln(a.stdio.Err)
	if n := len(c.Manifest.DeniedPaths); n > 0 {
		fmt.Fprintf(a.stdio.Err, "withheld %d paths matching deny patterns: %s\n", n, oneLine(strings.Join(c.Manifest.DeniedPaths, ", "), 120))
	}
}

func (a *app) reportDenied(api *client.APIError) error {
	if a.json {
		_ = printJSON(a.stdio.Out, map[string]any{"denied": true, "code": api.Code, "reasons": api.Reasons, "message": api.Message})
		return quietExit(ExitDenied)
	}
	st := styleFor(a.stdio.Err)
	fmt.Fprintf(a.stdio.Err, "%s the plane's policy denied this run:\n", st.red("✗"))
	for _, r := range api.Reasons {
		fmt.Fprintf(a.stdio.Err, "  - %s\n", r)
	}
	if len(api.Reasons) == 0 {
		fmt.Fprintf(a.stdio.Err, "  - %s\n", api.Message)
	}
	fmt.Fprintln(a.stdio.Err, "  see the policy with 'warrant policy show'; an admin changes it with 'warrant policy set'")
	return quietExit(ExitDenied)
}

func (a *app) reportDryRun(r *client.DisclosureReport) error {
	if a.json {
		return printJSON(a.stdio.Out, r)
	}
	w := a.stdio.Out
	st := styleFor(w)
	kv := func(k, v string) { fmt.Fprintf(w, "  %-12s %s\n", k, v) }
	fmt.Fprintf(w, "%s nothing was sent or stored\n", st.bold("DRY RUN:"))
	kv("agent", r.Agent.Kind)
	kv("pool", r.Pool)
	kv("isolation", r.Isolation)
	kv("workspace", fmt.Sprintf("%d files (%s) at %s", r.Files, humanBytes(r.TotalBytes), orDash(r.BaseRef)))
	kv("untracked", orDash(strings.Join(r.UntrackedPaths, ", ")))
	kv("withheld", orDash(strings.Join(r.DeniedPaths, ", ")))
	var secrets []string
	for _, s := range r.Secrets {
		secrets = append(secrets, s.Name+" ("+s.Scope+")")
	}
	kv("secrets", orDash(strings.Join(secrets, ", ")))
	hosts := "none (deny by default)"
	if len(r.Network.AllowHosts) > 0 {
		hosts = strings.Join(r.Network.AllowHosts, ", ")
	}
	kv("egress", hosts)
	kv("disclosure", r.Disclosure)
	kv("data", orDash(strings.Join(r.DataClasses, ", ")))
	decision := r.PolicyDecision.Decision + ": " + r.PolicyDecision.Reason
	switch r.PolicyDecision.Decision {
	case "deny":
		decision = st.red(decision)
		for _, reason := range r.PolicyDecision.Reasons {
			decision += "\n" + strings.Repeat(" ", 15) + "- " + reason
		}
	case "ask":
		decision = st.yellow(decision)
		for _, req := range r.PolicyDecision.ConsentRequirements {
			decision += "\n" + strings.Repeat(" ", 15) + "- needs approval: " + req
		}
	default:
		decision = st.green(decision)
	}
	kv("policy", decision)
	return nil
}

// planeBlobs adapts the plane client to the workspace's blob seams.
type planeBlobs struct{ c *client.Client }

func (p planeBlobs) Missing(ctx context.Context, hashes []string) ([]string, error) {
	return p.c.MissingBlobs(ctx, hashes)
}

func (p planeBlobs) Put(ctx context.Context, blobs []workspace.Blob) error {
	ups := make([]client.BlobUpload, len(blobs))
	for i, b := range blobs {
		ups[i] = client.BlobUpload{Hash: b.Hash, Size: b.Size, Open: b.Open}
	}
	_, err := p.c.PutBlobs(ctx, ups)
	return err
}

func (p planeBlobs) Get(ctx context.Context, hash string) (io.ReadCloser, error) {
	rc, err := p.c.GetBlob(ctx, hash)
	if errors.Is(err, client.ErrNotFound) {
		return nil, fmt.Errorf("%w: %s", workspace.ErrBlobNotFound, hash)
	}
	return rc, err
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
