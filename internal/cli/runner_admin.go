package cli

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"warrant.dev/warrant/client"
)

// runnerEnrollTokenCmd makes a one-time enroll token (admin).
func (a *app) runnerEnrollTokenCmd() *cobra.Command {
	var pool string
	var ttl time.Duration
	cmd := &cobra.Command{
		Use:   "enroll-token --pool POOL",
		Short: "Make a one-time token that enrolls one runner into a pool (admin)",
		Example: `  warrant runner enroll-token --pool gpu
  warrant runner start --plane http://plane:7070 --pool gpu --enroll-token "$(warrant runner enroll-token --pool gpu)"`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if pool == "" {
				return usageError("--pool is required")
			}
			if ttl <= 0 {
				return usageError("--ttl must be positive")
			}
			c, cfg, err := a.planeClient()
			if err != nil {
				return err
			}
			et, err := c.CreateEnrollToken(a.ctx, client.EnrollTokenRequest{Pool: pool, TTLSeconds: int(ttl.Seconds())})
			if err != nil {
				return explain(err, cfg)
			}
			if a.json {
				return printJSON(a.stdio.Out, et)
			}
			fmt.Fprintln(a.stdio.Out, et.Token)
			fmt.Fprintf(a.stdio.Err, "enrolls one runner into pool %s until %s\n", et.Pool, et.ExpiresAt)
			return nil
		},
	}
	cmd.Flags().StringVar(&pool, "pool", "", "pool the runner joins")
	cmd.Flags().DurationVar(&ttl, "ttl", time.Hour, "how long the token stays valid")
	return cmd
}

// runnerListCmd lists enrolled runners.
func (a *app) runnerListCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List enrolled runners: pool, key, tiers, last seen, runs in flight",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, cfg, err := a.planeClient()
			if err != nil {
				return err
			}
			rs, err := c.ListRunners(a.ctx)
			if err != nil {
				return explain(err, cfg)
			}
			if a.json {
				if rs == nil {
					rs = []client.Runner{}
				}
				return printJSON(a.stdio.Out, rs)
			}
			t := newTable(a.stdio.Out, "ID", "NAME", "POOL", "KEY", "TIERS", "LAST SEEN", "IN FLIGHT", "STATUS")
			now := time.Now()
			for _, r := range rs {
				status := "active"
				if r.RevokedAt != "" {
					status = "revoked"
				}
				seen := "-"
				if r.LastSeenAt != "" {
					seen = age(now, r.LastSeenAt) + " ago"
				}
				t.row(r.ID, oneLine(r.Name, 20), r.Pool, r.KeyID, strings.Join(r.Tiers, ","), seen, strconv.Itoa(r.InFlight), status)
			}
			return t.flush()
		},
	}
}

// runnerRevokeCmd revokes a runner (admin).
func (a *app) runnerRevokeCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "revoke RUNNER_ID",
		Short: "Revoke a runner: its token stops working and its in-flight runs fail (admin)",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, cfg, err := a.planeClient()
			if err != nil {
				return err
			}
			if err := c.RevokeRunner(a.ctx, args[0]); err != nil {
				return explain(err, cfg)
			}
			fmt.Fprintf(a.stdio.Err, "revoked %s\n", args[0])
			return nil
		},
	}
}
