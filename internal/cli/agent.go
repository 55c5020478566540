package cli

import (
	"os"

	"github.com/spf13/cobra"

	"warrant.dev/warrant/internal/runner/mockagent"
)

func init() { register(newAgentCmd) }

// newAgentCmd is the hidden `warrant agent` noun: built-in agents the
// runner executes as harnesses (`warrant agent mock PROMPT`).
func newAgentCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:    "agent",
		Short:  "Built-in agents the runner executes (for tests and demos)",
		Hidden: true,
		Args:   noArgs,
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "mock PROMPT",
		Short: "The mock agent: appends its task to MOCK_AGENT.md, probes the network when asked",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			code := mockagent.Main(a.ctx, args, mockagent.Env{Getenv: os.Getenv, Stdout: a.stdio.Out, Stderr: a.stdio.Err})
			if code != 0 {
				return quietExit(code)
			}
			return nil
		},
	})
	return cmd
}
