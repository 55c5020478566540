package cli

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"warrant.dev/warrant/client"
	"warrant.dev/warrant/protocol"
)

func init() {
	register(newWhoAmICmd)
	register(newSecretsCmd)
	register(newPrincipalsCmd)
	register(newTokensCmd)
	register(newPolicyCmd)
	register(newExportCmd)
}

func newWhoAmICmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "whoami",
		Short: "Show the principal and role behind your token",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, cfg, err := a.planeClient()
			if err != nil {
				return err
			}
			me, err := c.WhoAmI(a.ctx)
			if err != nil {
				return explain(err, cfg)
			}
			if a.json {
				return printJSON(a.stdio.Out, me)
			}
			fmt.Fprintf(a.stdio.Out, "%s (%s, role %s) at %s\n", me.Principal.Name, me.Principal.Kind, me.Principal.Role, cfg.Plane)
			return nil
		},
	}
}

func newSecretsCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "secrets",
		Short: "Store secrets the plane releases to runs that name them (admin)",
		Long: `Secrets are stored encrypted (AES-256-GCM under the plane's master key) and
released only to the runner holding the claim on a run whose contract names
them. Values are read from stdin or a hidden prompt, never from arguments, and
no route ever returns them.`,
		Args: noArgs,
	}
	set := &cobra.Command{
		Use:   "set NAME",
		Short: "Store a secret; the value comes from stdin or a hidden prompt",
		Example: `  printf %s "$TOKEN" | warrant secrets set GITHUB_TOKEN
  warrant secrets set ANTHROPIC_API_KEY     # prompts without echo`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			value, err := a.readSecretValue(name)
			if err != nil {
				return err
			}
			c, cfg, err := a.planeClient()
			if err != nil {
				return err
			}
			info, err := c.PutSecret(a.ctx, name, value)
			if err != nil {
				return explain(err, cfg)
			}
			if a.json {
				return printJSON(a.stdio.Out, info)
			}
			fmt.Fprintf(a.stdio.Out, "stored %s\n", info.Name)
			fmt.Fprintf(a.stdio.Err, "runs may name it once the policy makes it releasable to their pool (warrant policy show)\n")
			return nil
		},
	}
	list := &cobra.Command{
		Use:   "list",
		Short: "List secret names (never values)",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, cfg, err := a.planeClient()
			if err != nil {
				return err
			}
			secrets, err := c.ListSecrets(a.ctx)
			if err != nil {
				return explain(err, cfg)
			}
			if a.json {
				if secrets == nil {
					secrets = []client.SecretInfo{}
				}
				return printJSON(a.stdio.Out, secrets)
			}
			t := newTable(a.stdio.Out, "NAME", "UPDATED")
			for _, s := range secrets {
				t.row(s.Name, s.UpdatedAt)
			}
			return t.flush()
		},
	}
	rm := &cobra.Command{
		Use:   "rm NAME",
		Short: "Delete a secret",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, cfg, err := a.planeClient()
			if err != nil {
				return err
			}
			if err := c.DeleteSecret(a.ctx, args[0]); err != nil {
				return explain(err, cfg)
			}
			if a.json {
				return printJSON(a.stdio.Out, map[string]string{"deleted": args[0]})
			}
			fmt.Fprintf(a.stdio.Out, "deleted %s\n", args[0])
			return nil
		},
	}
	cmd.AddCommand(set, list, rm)
	return cmd
}

// readSecretValue reads a secret from a hidden prompt on a terminal, or
// from stdin otherwise (one trailing newline removed).
func (a *app) readSecretValue(name string) (string, error) {
	if f, ok := a.stdio.In.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		fmt.Fprintf(a.stdio.Err, "value for %s (input hidden): ", name)
		b, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(a.stdio.Err)
		if err != nil {
			return "", fmt.Errorf("read secret: %w", err)
		}
		if len(b) == 0 {
			return "", usageError("empty secret: nothing stored")
		}
		return string(b), nil
	}
	b, err := io.ReadAll(io.LimitReader(a.stdio.In, 1<<20+1))
	if err != nil {
		return "", fmt.Errorf("read secret from stdin: %w", err)
	}
	if len(b) > 1<<20 {
		return "", usageError("secret longer than 1 MiB")
	}
	v := strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
	if v == "" {
		return "", usageError("empty secret on stdin: nothing stored (pipe the value in, e.g. printf %%s \"$VALUE\" | warrant secrets set %s)", name)
	}
	return v, nil
}

func newPrincipalsCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{Use: "principals", Short: "Manage principals: people and services with a role (admin)", Args: noArgs}
	var role, kind string
	create := &cobra.Command{
		Use:   "create NAME --role admin|requester|approver|auditor",
		Short: "Create a principal and print its first token (shown once)",
		Example: `  warrant principals create sam@example.com --role approver
  warrant principals create ci-bot --kind service --role requester --json`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !contains(client.Roles, role) {
				return usageError("--role must be one of %v", client.Roles)
			}
			c, cfg, err := a.planeClient()
			if err != nil {
				return err
			}
			out, err := c.CreatePrincipal(a.ctx, client.CreatePrincipalRequest{Name: args[0], Kind: kind, Role: role})
			if err != nil {
				return explain(err, cfg)
			}
			if a.json {
				return printJSON(a.stdio.Out, out)
			}
			fmt.Fprintln(a.stdio.Out, out.Token.Secret)
			fmt.Fprintf(a.stdio.Err, "created %s %s (%s, id %s); the token above is shown only once\n", out.Principal.Kind, out.Principal.Name, out.Principal.Role, out.Principal.ID)
			return nil
		},
	}
	create.Flags().StringVar(&role, "role", "", "admin, requester, approver or auditor")
	create.Flags().StringVar(&kind, "kind", "human", "human or service")
	list := &cobra.Command{
		Use:   "list",
		Short: "List principals and their tokens (ids only)",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, cfg, err := a.planeClient()
			if err != nil {
				return err
			}
			ps, err := c.ListPrincipals(a.ctx)
			if err != nil {
				return explain(err, cfg)
			}
			if a.json {
				if ps == nil {
					ps = []client.Principal{}
				}
				return printJSON(a.stdio.Out, ps)
			}
			t := newTable(a.stdio.Out, "ID", "NAME", "KIND", "ROLE", "TOKENS", "STATUS")
			for _, p := range ps {
				active := 0
				for _, tk := range p.Tokens {
					if tk.RevokedAt == "" {
						active++
					}
				}
				status := "active"
				if p.Disabled {
					status = "disabled"
				}
				t.row(p.ID, p.Name, p.Kind, p.Role, strconv.Itoa(active), status)
			}
			return t.flush()
		},
	}
	disable := &cobra.Command{
		Use:   "disable ID",
		Short: "Disable a principal and revoke all its tokens",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, cfg, err := a.planeClient()
			if err != nil {
				return err
			}
			if err := c.DisablePrincipal(a.ctx, args[0]); err != nil {
				return explain(err, cfg)
			}
			fmt.Fprintf(a.stdio.Err, "disabled %s\n", args[0])
			return nil
		},
	}
	cmd.AddCommand(create, list, disable)
	return cmd
}

func newTokensCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{Use: "tokens", Short: "Mint and revoke bearer tokens of principals (admin)", Args: noArgs}
	create := &cobra.Command{
		Use:   "create PRINCIPAL_ID",
		Short: "Mint another token for a principal (shown once)",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, cfg, err := a.planeClient()
			if err != nil {
				return err
			}
			tok, err := c.CreateToken(a.ctx, args[0])
			if err != nil {
				return explain(err, cfg)
			}
			if a.json {
				return printJSON(a.stdio.Out, tok)
			}
			fmt.Fprintln(a.stdio.Out, tok.Secret)
			fmt.Fprintf(a.stdio.Err, "token %s; shown only once\n", tok.ID)
			return nil
		},
	}
	revoke := &cobra.Command{
		Use:   "revoke TOKEN_ID",
		Short: "Revoke a token: it stops working at once",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, cfg, err := a.planeClient()
			if err != nil {
				return err
			}
			if err := c.RevokeToken(a.ctx, args[0]); err != nil {
				return explain(err, cfg)
			}
			fmt.Fprintf(a.stdio.Err, "revoked %s\n", args[0])
			return nil
		},
	}
	cmd.AddCommand(create, revoke)
	return cmd
}

func newPolicyCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{Use: "policy", Short: "Show or replace the plane's warrant.policy.v1", Args: noArgs}
	show := &cobra.Command{
		Use:   "show",
		Short: "Print the policy (JSON) and its hash",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, cfg, err := a.planeClient()
			if err != nil {
				return err
			}
			p, err := c.GetPolicy(a.ctx)
			if err != nil {
				return explain(err, cfg)
			}
			if a.json {
				return printJSON(a.stdio.Out, p)
			}
			if err := printJSON(a.stdio.Out, p.Policy); err != nil {
				return err
			}
			fmt.Fprintf(a.stdio.Err, "policy hash %s\n", p.PolicyHash)
			return nil
		},
	}
	set := &cobra.Command{
		Use:     "set FILE",
		Short:   "Replace the policy with FILE (- for stdin); new contracts carry its hash",
		Example: "  warrant policy show > policy.json && $EDITOR policy.json && warrant policy set policy.json",
		Args:    exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			data, err := readInput(a.stdio.In, args[0], 1<<20)
			if err != nil {
				return err
			}
			p, err := protocol.ParsePolicy(data)
			if err != nil {
				return withExit(ExitUsage, fmt.Errorf("%s: %w", args[0], err))
			}
			c, cfg, err := a.planeClient()
			if err != nil {
				return err
			}
			view, err := c.PutPolicy(a.ctx, *p)
			if err != nil {
				return explain(err, cfg)
			}
			if a.json {
				return printJSON(a.stdio.Out, view)
			}
			fmt.Fprintf(a.stdio.Out, "policy %s\n", view.PolicyHash)
			return nil
		},
	}
	cmd.AddCommand(show, set)
	return cmd
}

func newExportCmd(a *app) *cobra.Command {
	var since, out string
	cmd := &cobra.Command{
		Use:   "export [--since 30d|RFC3339] [-o FILE]",
		Short: "Export runs, events and receipts as JSON lines (admin, auditor)",
		Example: `  warrant export --since 30d -o warrant-export.jsonl
  warrant export --since 2026-11-01T00:00:00Z | jq -c 'select(.type=="receipt")'`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			t, err := parseSince(since, time.Now())
			if err != nil {
				return usageError("--since: %v", err)
			}
			c, cfg, err := a.planeClient()
			if err != nil {
				return err
			}
			rc, err := c.Export(a.ctx, t)
			if err != nil {
				return explain(err, cfg)
			}
			defer rc.Close()
			w := a.stdio.Out
			var f *os.File
			if out != "" && out != "-" {
				if f, err = os.Create(out); err != nil {
					return err
				}
				w = f
			}
			bw := bufio.NewWriter(w)
			n, err := io.Copy(bw, rc)
			if err == nil {
				err = bw.Flush()
			}
			if f != nil {
				if cerr := f.Close(); err == nil {
					err = cerr
				}
			}
			if err != nil {
				return fmt.Errorf("export: %w", err)
			}
			if f != nil {
				fmt.Fprintf(a.stdio.Err, "wrote %d bytes to %s\n", n, out)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&since, "since", "30d", "how far back: a duration like 30d, 12h, or an RFC 3339 time")
	cmd.Flags().StringVarP(&out, "output", "o", "", "write to FILE instead of stdout")
	return cmd
}

// parseSince reads "30d", "12h", "90m" or an RFC 3339 time.
func parseSince(s string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	if strings.HasSuffix(s, "d") {
		n, err := strconv.Atoi(strings.TrimSuffix(s, "d"))
		if err != nil || n < 0 {
			return time.Time{}, errors.New("want a number of days like 30d, a duration like 12h, or an RFC 3339 time")
		}
		return now.Add(-time.Duration(n) * 24 * time.Hour), nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return time.Time{}, errors.New("want a number of days like 30d, a duration like 12h, or an RFC 3339 time")
	}
	return now.Add(-d), nil
}
