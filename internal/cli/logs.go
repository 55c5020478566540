package cli

import (
	"bufio"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"warrant.dev/warrant/protocol"
)

func init() { register(newLogsCmd) }

func newLogsCmd(a *app) *cobra.Command {
	var raw bool
	cmd := &cobra.Command{
		Use:   "logs RUN",
		Short: "Print a run's session log (stdout and stderr of the agent, secrets redacted)",
		Long: `Print the session log a run uploaded: the agent's stdout and stderr, merged,
with every released secret value redacted by the runner before upload. On a
terminal, control characters the agent wrote (escape sequences) are shown as
'?' unless --raw is given.`,
		Example: "  warrant logs run_123 | less",
		Args:    exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, cfg, err := a.planeClient()
			if err != nil {
				return err
			}
			ev, err := c.Events(a.ctx, args[0], -1)
			if err != nil {
				return explain(err, cfg)
			}
			hash := ""
			for _, e := range ev.Events {
				if p, err := e.Event.Payload(); err == nil {
					if ac, ok := p.(protocol.ArtifactCreated); ok && ac.Kind == "log" {
						hash = ac.Hash
					}
				}
			}
			if hash == "" {
				fmt.Fprintf(a.stdio.Err, "run %s has no session log (state %s)\n", args[0], ev.State)
				return nil
			}
			rc, err := c.GetBlob(a.ctx, hash)
			if err != nil {
				return explain(err, cfg)
			}
			defer rc.Close()
			w := a.stdio.Out
			sanitize := !raw
			if f, ok := w.(*os.File); !ok || !term.IsTerminal(int(f.Fd())) {
				sanitize = false // piped: the bytes as uploaded
			}
			bw := bufio.NewWriter(w)
			defer bw.Flush()
			if !sanitize {
				_, err = io.Copy(bw, rc)
				return err
			}
			br := bufio.NewReader(rc)
			for {
				b, err := br.ReadByte()
				if err == io.EOF {
					return nil
				}
				if err != nil {
					return err
				}
				if (b < 0x20 && b != '\n' && b != '\t') || b == 0x7f {
					b = '?'
				}
				bw.WriteByte(b)
			}
		},
	}
	cmd.Flags().BoolVar(&raw, "raw", false, "write control characters to the terminal as they are")
	return cmd
}
