// Package cli owns the `warrant` command tree: one file per noun, a shared
// way to load configuration (defaults, file, environment, flags), to print
// answers (stdout carries only the requested output; --json everywhere)
// and to turn errors into exit codes with a hint of what to do next.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"
)

// Exit codes. 0 is success.
const (
	ExitFailure   = 1 // the command failed, or what it checked does not hold
	ExitUsage     = 2 // bad flags or arguments
	ExitUntrusted = 3 // verify: the bundle is consistent but its keys are not pinned
	ExitRunFailed = 4 // run/watch: the run ended failed
	ExitCancelled = 5 // run/watch: the run ended cancelled
	ExitDenied    = 6 // run: policy denied the run
)

// Stdio is where a command reads and writes.
type Stdio struct {
	In       io.Reader
	Out, Err io.Writer
}

// exitError carries an exit code; when quiet is set the error has already
// been reported and is not printed again.
type exitError struct {
	code  int
	err   error
	quiet bool
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func withExit(code int, err error) error { return &exitError{code: code, err: err} }

// quietExit ends the command with code, having printed all there is to say.
func quietExit(code int) error {
	return &exitError{code: code, err: fmt.Errorf("exit %d", code), quiet: true}
}

// usageError marks a problem with flags or arguments.
func usageError(format string, args ...any) error {
	return withExit(ExitUsage, fmt.Errorf(format, args...))
}

// app is the state shared by every command of one invocation.
type app struct {
	ctx    context.Context
	stdio  Stdio
	json   bool
	global globalFlags
}

// Main runs the warrant command line and returns the process exit code.
func Main(ctx context.Context, args []string, stdio Stdio) int {
	a := &app{ctx: ctx, stdio: stdio}
	root := a.rootCommand()
	root.SetArgs(args)
	root.SetIn(stdio.In)
	root.SetOut(stdio.Out)
	root.SetErr(stdio.Err)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if !ee.quiet {
			fmt.Fprintf(stdio.Err, "warrant: %v\n", ee.err)
		}
		return ee.code
	}
	fmt.Fprintf(stdio.Err, "warrant: %v\n", err)
	return ExitFailure
}

func (a *app) rootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "warrant",
		Short: "Run coding agents under signed contracts and verify what they did",
		Long: `Warrant runs any vendor's coding agent (Claude Code, Codex, a shell command)
unmodified on machines you control, under a signed contract, inside a governed
session (scrubbed environment, injected secrets, deny-by-default egress), and
emits a signed receipt on a hash-chained event log that anyone can verify
offline.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		// Arbitrary args reach RunE, which names an unknown command as a
		// usage error (exit 2).
		Args: cobra.ArbitraryArgs,
		RunE: func(c *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usageError("unknown command %q\nRun 'warrant --help' for the commands.", args[0])
			}
			return c.Help()
		},
	}
	root.PersistentFlags().BoolVar(&a.json, "json", false, "print machine-readable JSON on stdout")
	a.global.register(root)
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return usageError("%v\nRun '%s --help' for usage.", err, c.CommandPath())
	})
	for _, add := range commandSet {
		root.AddCommand(add(a))
	}
	return root
}

// commandSet lists the constructors of the top-level commands; each noun's
// file adds its own in an init function.
var commandSet []func(*app) *cobra.Command

func register(f func(*app) *cobra.Command) { commandSet = append(commandSet, f) }

// exactArgs requires n positional arguments, named in the usage line.
func exactArgs(n int) cobra.PositionalArgs {
	return func(c *cobra.Command, args []string) error {
		if len(args) != n {
			return usageError("%s takes %d argument(s), got %d\nUsage: %s", c.CommandPath(), n, len(args), c.UseLine())
		}
		return nil
	}
}

// noArgs refuses positional arguments.
func noArgs(c *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usageError("%s takes no arguments, got %q\nUsage: %s", c.CommandPath(), args[0], c.UseLine())
	}
	return nil
}
