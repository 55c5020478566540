package cli

import (
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"warrant.dev/warrant/internal/workspace"
	"warrant.dev/warrant/protocol"
)

func init() { register(newPullCmd) }

func newPullCmd(a *app) *cobra.Command {
	var dir, mode string
	var dryRun bool
	cmd := &cobra.Command{
		Use:   "pull RUN",
		Short: "Apply a run's changes to your work tree, three-way, never auto-resolving conflicts",
		Long: `Apply the changes a run made to your local work tree. For every file the run
touched, pull compares three versions: the base the run started from, the
run's output, and your file now. Changes that apply cleanly are applied;
conflicts are reported path by path and those files are left alone — never
auto-resolved, never given conflict markers.

If your HEAD or the touched files moved since the run's base, pull warns and
by default commits the run's changes on a new branch warrant/RUN instead,
leaving your work tree, index and uncommitted work untouched. --mode
worktree or --mode branch forces one or the other. --dry-run shows what would
change and writes nothing.`,
		Example: `  warrant pull run_123 --dry-run
  warrant pull run_123
  warrant pull run_123 --mode branch && git diff main warrant/run_123`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var pm workspace.PullMode
			switch mode {
			case "", "auto":
				pm = workspace.PullAuto
			case "worktree":
				pm = workspace.PullWorktree
			case "branch":
				pm = workspace.PullBranch
			default:
				return usageError("--mode %q: want auto, worktree or branch", mode)
			}
			c, cfg, err := a.planeClient()
			if err != nil {
				return err
			}
			runID := args[0]
			run, err := c.GetRun(a.ctx, runID)
			if err != nil {
				return explain(err, cfg)
			}
			if !run.HasReceipt || run.Contract == nil || run.Receipt == nil {
				return withExit(ExitFailure, fmt.Errorf("run %s has no receipt yet (state %s): nothing to pull", runID, run.State))
			}
			var diff []byte
			if h := run.Receipt.WorkspaceOut.DiffHash; h != "" {
				rc, err := c.GetBlob(a.ctx, h)
				if err != nil {
					return explain(fmt.Errorf("download the run's diff: %w", err), cfg)
				}
				diff, err = io.ReadAll(io.LimitReader(rc, 1<<30))
				rc.Close()
				if err != nil {
					return fmt.Errorf("download the run's diff: %w", err)
				}
				if protocol.HashBytes(diff) != h {
					return withExit(ExitFailure, fmt.Errorf("the run's diff does not match the hash in its receipt: refusing to apply it"))
				}
			}
			if len(diff) == 0 {
				if a.json {
					return printJSON(a.stdio.Out, map[string]any{"runId": runID, "applied": []any{}, "message": "the run changed nothing"})
				}
				fmt.Fprintf(a.stdio.Err, "run %s changed nothing: nothing to pull\n", runID)
				return nil
			}
			res, err := workspace.Pull(a.ctx, workspace.PullOptions{
				Dir: dir, RunID: runID, Manifest: &run.Contract.Workspace, Diff: diff,
				Source: planeBlobs{c}, Mode: pm, DryRun: dryRun,
			})
			if err != nil {
				if errors.Is(err, workspace.ErrBranchExists) {
					return withExit(ExitFailure, fmt.Errorf("%w: branch warrant/%s exists; delete it (git branch -D warrant/%s) or use --mode worktree", err, runID, runID))
				}
				return withExit(ExitFailure, err)
			}
			if a.json {
				if err := printJSON(a.stdio.Out, res); err != nil {
					return err
				}
			} else {
				a.printPull(runID, res)
			}
			if len(res.Conflicts) > 0 {
				return quietExit(ExitFailure)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", ".", "local work tree")
	cmd.Flags().StringVar(&mode, "mode", "auto", "auto (work tree unless diverged), worktree, or branch")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "show what would change; write nothing")
	return cmd
}

func (a *app) printPull(runID string, r *workspace.PullResult) {
	w := a.stdio.Out
	st := styleFor(w)
	for _, warn := range r.Warnings {
		fmt.Fprintf(a.stdio.Err, "%s %s\n", st.yellow("warning:"), warn)
	}
	verb := "applied"
	if r.DryRun {
		verb = "would apply"
	}
	where := "to the work tree"
	if r.Mode == workspace.PullBranch {
		where = "on branch " + r.Branch
		if r.Commit != "" {
			where += " (" + r.Commit[:min(12, len(r.Commit))] + ")"
		}
	}
	for _, f := range r.Applied {
		note := ""
		if f.Merged {
			note = " (merged with your changes)"
		}
		fmt.Fprintf(w, "  %s %s%s\n", st.green(pullSymbol(f.Action)), f.Path, note)
	}
	for _, p := range r.Unchanged {
		fmt.Fprintf(w, "  = %s (already has the run's content)\n", p)
	}
	for _, c := range r.Conflicts {
		fmt.Fprintf(w, "  %s %s: %s\n", st.red("!"), c.Path, c.Reason)
	}
	fmt.Fprintf(a.stdio.Err, "%s %s of run %s %s\n", verb, plural(len(r.Applied), "change"), runID, where)
	if len(r.Conflicts) > 0 {
		fmt.Fprintf(a.stdio.Err, "%s left alone; resolve them by hand (the run's version: warrant receipt %s --bundle, or git show on the branch)\n", plural(len(r.Conflicts), "conflicting file"), runID)
	}
	if r.Mode == workspace.PullBranch && !r.DryRun && r.Branch != "" {
		fmt.Fprintf(a.stdio.Err, "review with 'git diff HEAD %s', merge with 'git merge %s'\n", r.Branch, r.Branch)
	}
}

func pullSymbol(action string) string {
	switch action {
	case "add":
		return "A"
	case "delete":
		return "D"
	}
	return "M"
}
