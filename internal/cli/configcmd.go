package cli

import (
	"fmt"

	"github.com/spf13/cobra"
)

func init() { register(newConfigCmd) }

func newConfigCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{Use: "config", Short: "Show the CLI's configuration and where each setting comes from", Args: noArgs}
	cmd.AddCommand(&cobra.Command{
		Use:   "show",
		Short: "Show the effective configuration (the token is masked)",
		Long: `Show the effective configuration. Settings are layered: defaults, then the
config file, then the environment (WARRANT_PLANE, WARRANT_TOKEN, WARRANT_TRUST),
then flags (--plane, --token); later layers win.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, src, err := a.loadConfig()
			if err != nil {
				return err
			}
			masked := maskToken(cfg.Token)
			if a.json {
				return printJSON(a.stdio.Out, map[string]any{
					"file":  src.File,
					"plane": map[string]string{"value": cfg.Plane, "source": src.Plane},
					"token": map[string]string{"value": masked, "source": src.Token},
					"trust": map[string]string{"value": cfg.Trust, "source": src.Trust},
				})
			}
			t := newTable(a.stdio.Out, "SETTING", "VALUE", "SOURCE")
			t.row("plane", cfg.Plane, src.Plane)
			t.row("token", masked, src.Token)
			t.row("trust", orDash(cfg.Trust), src.Trust)
			t.row("file", src.File, "")
			return t.flush()
		},
	})
	return cmd
}

func maskToken(t string) string {
	if t == "" {
		return "-"
	}
	if len(t) <= 8 {
		return "****"
	}
	return t[:4] + "…" + fmt.Sprintf("(%d chars)", len(t))
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
