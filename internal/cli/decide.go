package cli

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"warrant.dev/warrant/client"
)

func init() {
	register(func(a *app) *cobra.Command {
		return a.decisionCmd("approve", "Approve a run awaiting approval (approver or admin)", "  warrant approve run_123 --reason \"reviewed the task\"",
			func(c *client.Client, ctx context.Context, id, reason string) (*client.Run, error) {
				return c.Approve(ctx, id, reason)
			})
	})
	register(func(a *app) *cobra.Command {
		return a.decisionCmd("deny", "Deny a run awaiting approval; it fails policy_denied", "  warrant deny run_123 --reason \"touches production credentials\"",
			func(c *client.Client, ctx context.Context, id, reason string) (*client.Run, error) {
				return c.Deny(ctx, id, reason)
			})
	})
	register(func(a *app) *cobra.Command {
		return a.decisionCmd("cancel", "Cancel a run: a queued one at once, a running one by stopping its session", "  warrant cancel run_123 --reason \"wrong branch\"",
			func(c *client.Client, ctx context.Context, id, reason string) (*client.Run, error) {
				return c.Cancel(ctx, id, reason)
			})
	})
}

func (a *app) decisionCmd(verb, short, example string, do func(*client.Client, context.Context, string, string) (*client.Run, error)) *cobra.Command {
	var reason string
	cmd := &cobra.Command{
		Use:     verb + " RUN",
		Short:   short,
		Example: example,
		Args:    exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, cfg, err := a.planeClient()
			if err != nil {
				return err
			}
			run, err := do(c, a.ctx, args[0], reason)
			if err != nil {
				return explain(err, cfg)
			}
			if a.json {
				return printJSON(a.stdio.Out, run)
			}
			st := styleFor(a.stdio.Out)
			fmt.Fprintf(a.stdio.Out, "%s %s\n", run.ID, st.state(run.State))
			return nil
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why (recorded with the decision)")
	return cmd
}
