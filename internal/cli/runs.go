package cli

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"warrant.dev/warrant/client"
	"warrant.dev/warrant/protocol"
)

func init() { register(newRunsCmd) }

func newRunsCmd(a *app) *cobra.Command {
	var o client.ListRunsOptions
	cmd := &cobra.Command{
		Use:   "runs",
		Short: "List runs, newest first",
		Example: `  warrant runs
  warrant runs --state awaiting_approval
  warrant runs --pool local --limit 20 --json`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, cfg, err := a.planeClient()
			if err != nil {
				return err
			}
			if o.State != "" && !contains(protocol.RunStates, o.State) {
				return usageError("--state %q is not a run state (one of %v)", o.State, protocol.RunStates)
			}
			list, err := c.ListRuns(a.ctx, o)
			if err != nil {
				return explain(err, cfg)
			}
			if a.json {
				if list.Runs == nil {
					list.Runs = []client.Run{}
				}
				return printJSON(a.stdio.Out, list)
			}
			if len(list.Runs) == 0 {
				fmt.Fprintln(a.stdio.Err, "no runs")
				return nil
			}
			st := styleFor(a.stdio.Out)
			t := newTable(a.stdio.Out, "ID", "STATE", "AGENT", "POOL", "AGE", "WHO", "TASK")
			now := time.Now()
			for _, r := range list.Runs {
				t.row(r.ID, st.state(r.State), r.Agent.Kind, r.Pool, age(now, r.CreatedAt), r.RequestedBy.ID, oneLine(r.Prompt, 40))
			}
			if err := t.flush(); err != nil {
				return err
			}
			if list.Next != "" {
				fmt.Fprintf(a.stdio.Err, "more: warrant runs --cursor %s\n", list.Next)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.State, "state", "", "only runs in this state")
	f.StringVar(&o.Pool, "pool", "", "only runs for this pool")
	f.StringVar(&o.Agent, "agent", "", "only runs of this agent kind")
	f.StringVar(&o.RequestedBy, "requested-by", "", "only runs requested by this principal")
	f.IntVar(&o.Limit, "limit", 50, "at most this many runs")
	f.StringVar(&o.Cursor, "cursor", "", "continue a previous listing")
	return cmd
}

// state colors a run state.
func (s style) state(state string) string {
	switch state {
	case protocol.StateCompleted:
		return s.green(state)
	case protocol.StateFailed:
		return s.red(state)
	case protocol.StateCancelled, protocol.StateAwaitingApproval:
		return s.yellow(state)
	}
	return state
}

func age(now time.Time, ts string) string {
	t, err := protocol.ParseTime(ts)
	if err != nil {
		return "?"
	}
	d := now.Sub(t)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	default:
		return fmt.Sprintf("%dd", int(d.Hours()/24))
	}
}

func oneLine(s string, n int) string {
	out := make([]rune, 0, n)
	for _, r := range s {
		if r == '\n' || r == '\r' || r == '\t' {
			r = ' '
		}
		if r < 0x20 || r == 0x7f {
			continue // never echo control characters an agent wrote to the terminal
		}
		if len(out) == n {
			return string(out[:n-1]) + "…"
		}
		out = append(out, r)
	}
	return string(out)
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
