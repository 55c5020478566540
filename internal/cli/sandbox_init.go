package cli

import (
	"github.com/spf13/cobra"

	"warrant.dev/warrant/internal/runner/sandbox/namespace"
)

func init() { register(newSandboxInitCmd) }

// newSandboxInitCmd is the hidden `warrant __sandbox-init`: PID 1 of a
// namespace-tier session. Only the runner starts it, with its
// configuration on an inherited pipe; run by hand it fails at once.
func newSandboxInitCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:    namespace.InitCommand,
		Short:  "Session init of the namespace isolation tier (started by the runner)",
		Hidden: true,
		Args:   noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if code := namespace.Init(); code != 0 {
				return quietExit(code)
			}
			return nil
		},
	}
}
