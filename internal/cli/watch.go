package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"warrant.dev/warrant/client"
	"warrant.dev/warrant/protocol"
)

func init() { register(newWatchCmd) }

func newWatchCmd(a *app) *cobra.Command {
	var after int64
	cmd := &cobra.Command{
		Use:   "watch RUN",
		Short: "Follow a run's events live until it ends",
		Long: `Follow a run's event log live (reconnecting if the connection drops) until
the run ends. Exit status: 0 completed, 4 failed, 5 cancelled.
With --json, each event is printed as one JSON line.`,
		Example: `  warrant watch run_123
  warrant watch run_123 --json | jq .event.type`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, cfg, err := a.planeClient()
			if err != nil {
				return err
			}
			run, err := c.GetRun(a.ctx, args[0])
			if err != nil {
				return explain(err, cfg)
			}
			final, err := a.follow(c, run, after)
			if err != nil {
				return explain(err, cfg)
			}
			return exitForState(final)
		},
	}
	cmd.Flags().Int64Var(&after, "after", -1, "start after this event seq (default: the whole log)")
	return cmd
}

// exitForState maps a run's final state to the exit status.
func exitForState(final *client.Run) error {
	switch final.State {
	case protocol.StateCompleted:
		return nil
	case protocol.StateCancelled:
		return quietExit(ExitCancelled)
	case protocol.StateFailed:
		if final.Failure != nil && final.Failure.Class == protocol.FailurePolicyDenied {
			return quietExit(ExitDenied)
		}
		return quietExit(ExitRunFailed)
	}
	return quietExit(ExitFailure)
}

// follow streams a run's events to stdout until it ends, reconnecting on
// transport errors, with a progress line on a terminal while the run waits
// for a runner or an approval. It returns the run as it ended.
func (a *app) follow(c *client.Client, run *client.Run, after int64) (*client.Run, error) {
	ctx, cancel := context.WithCancel(a.ctx)
	defer cancel()
	prog := newProgress(a.stdio.Err, run)
	defer prog.stop()
	last := after
	backoff := client.DefaultBackoff
	for attempt := 0; ; {
		err := c.StreamEvents(ctx, run.ID, last, func(m client.StreamMessage) error {
			attempt = 0
			switch m.Kind {
			case client.StreamEvent:
				prog.clear()
				if err := a.printEvent(m.Event); err != nil {
					return err
				}
				last = m.Event.Seq
				prog.sawEvent(m.Event)
			case client.StreamState, client.StreamEnd:
				prog.setState(m.State)
			}
			return nil
		})
		if err == nil {
			prog.stop()
			final, err := c.GetRun(a.ctx, run.ID)
			if err != nil {
				return nil, err
			}
			a.printOutcome(final)
			return final, nil
		}
		var te *client.TransportError
		if !errors.As(err, &te) && !client.IsTransient(err) {
			return nil, err
		}
		prog.note(fmt.Sprintf("connection to the plane lost (%v); reconnecting…", err))
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(backoff.Wait(attempt)):
		}
		attempt++
	}
}

func (a *app) printEvent(e *protocol.ChainedEvent) error {
	if a.json {
		b, err := json.Marshal(e)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(a.stdio.Out, "%s\n", b)
		return err
	}
	st := styleFor(a.stdio.Out)
	ts := e.TS
	if t, err := protocol.ParseTime(e.TS); err == nil {
		ts = t.Local().Format("15:04:05.000")
	}
	typ := e.Event.Type()
	detail := describeEvent(e.Event)
	switch typ {
	case protocol.EventRunFailed:
		typ = st.red(typ)
	case protocol.EventRunCompleted:
		typ = st.green(typ)
	case protocol.EventRunCancelled:
		typ = st.yellow(typ)
	case protocol.EventNetworkConnected:
		if strings.HasPrefix(detail, protocol.DecisionBlocked) {
			detail = st.red(detail)
		}
	}
	_, err := fmt.Fprintf(a.stdio.Out, "%s  %s  %-24s %s\n", st.dim(ts), st.dim(fmt.Sprintf("#%-3d", e.Seq)), typ, detail)
	return err
}

// describeEvent renders an event's fields in a few words. Text that agents
// control is stripped of control characters.
func describeEvent(b protocol.EventBody) string {
	p, err := b.Payload()
	if err != nil {
		return oneLine(b.String(), 100)
	}
	short := func(h string) string {
		if len(h) > 12 {
			return h[:12]
		}
		return h
	}
	switch p := p.(type) {
	case protocol.RunClaimed:
		return fmt.Sprintf("runner %s (key %s)", p.RunnerID, p.RunnerKeyID)
	case protocol.WorkspaceMaterialized:
		return "manifest " + short(p.ManifestHash)
	case protocol.PolicyEvaluated:
		return p.Decision + ": " + oneLine(p.Reason, 80)
	case protocol.ConsentRequested:
		return oneLine(p.Requirement, 80)
	case protocol.ConsentGranted:
		return "by " + p.Actor.Kind + " " + oneLine(p.Actor.ID, 60)
	case protocol.SecretReleased:
		return fmt.Sprintf("%s (%s)", p.Name, p.Scope)
	case protocol.CommandExecuted:
		return fmt.Sprintf("exit %d (execution %s)", p.ExitCode, short(p.ArgvHash))
	case protocol.FileChanged:
		if p.ContentHash == "" {
			return oneLine(p.Path, 80) + " (deleted)"
		}
		return oneLine(p.Path, 80) + " " + short(p.ContentHash)
	case protocol.NetworkConnected:
		return p.Decision + " " + oneLine(p.Host, 80)
	case protocol.ModelCalled:
		return p.Provider + "/" + p.Model
	case protocol.BoundaryCrossed:
		return fmt.Sprintf("%s %s %s", p.Direction, p.DataClass, short(p.ContentHash))
	case protocol.ArtifactCreated:
		return p.Kind + " " + short(p.Hash)
	case protocol.CheckpointCreated:
		return p.Tier + " " + p.CheckpointID
	case protocol.RunFailed:
		return p.Failure + ": " + oneLine(p.Message, 100)
	case protocol.RunCancelled:
		return "by " + p.Actor.Kind + " " + oneLine(p.Actor.ID, 60)
	}
	return ""
}

func (a *app) printOutcome(r *client.Run) {
	if a.json {
		return
	}
	st := styleFor(a.stdio.Err)
	switch r.State {
	case protocol.StateCompleted:
		fmt.Fprintf(a.stdio.Err, "%s run %s completed. See 'warrant receipt %s'.\n", st.green("✓"), r.ID, r.ID)
	case protocol.StateCancelled:
		fmt.Fprintf(a.stdio.Err, "%s run %s was cancelled.\n", st.yellow("!"), r.ID)
	default:
		msg := ""
		if r.Failure != nil {
			msg = ": " + r.Failure.Class + ": " + oneLine(r.Failure.Message, 200)
		}
		fmt.Fprintf(a.stdio.Err, "%s run %s %s%s\n", st.red("✗"), r.ID, r.State, msg)
	}
}

// progress draws a one-line spinner on a terminal while a run waits for a
// runner or an approval, and prints a hint once when the wait is long. On
// a non-terminal it prints each note once, as a plain line.
type progress struct {
	w      io.Writer
	tty    bool
	mu     sync.Mutex
	run    *client.Run
	state  string
	since  time.Time
	drawn  bool
	hinted bool
	done   chan struct{}
	once   sync.Once
}

// waitHint is how long a run may wait for a runner before we say so.
const waitHint = 30 * time.Second

func newProgress(w io.Writer, run *client.Run) *progress {
	p := &progress{w: w, run: run, state: run.State, since: time.Now(), done: make(chan struct{})}
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) && os.Getenv("TERM") != "dumb" {
		p.tty = true
	}
	go p.loop()
	return p
}

func (p *progress) loop() {
	frames := []string{"⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for i := 0; ; i++ {
		select {
		case <-p.done:
			return
		case <-tick.C:
		}
		p.mu.Lock()
		msg := p.waitingMessage()
		if msg != "" {
			waited := time.Since(p.since).Truncate(time.Second)
			if waited >= waitHint && !p.hinted && p.state == protocol.StateCreated {
				p.hinted = true
				p.clearLocked()
				fmt.Fprintf(p.w, "no runner in pool %s has claimed this run for %s: start one with 'warrant runner start --pool %s'\n", p.run.Pool, waited, p.run.Pool)
			}
			if p.tty {
				fmt.Fprintf(p.w, "\r\x1b[2K%s %s %s", frames[i%len(frames)], msg, waited)
				p.drawn = true
			} else if !p.drawn {
				fmt.Fprintln(p.w, msg)
				p.drawn = true
			}
		}
		p.mu.Unlock()
	}
}

func (p *progress) waitingMessage() string {
	switch p.state {
	case protocol.StateCreated:
		return "waiting for a runner in pool " + p.run.Pool + "…"
	case protocol.StateAwaitingApproval:
		return "waiting for approval (an approver runs 'warrant approve " + p.run.ID + "')…"
	case protocol.StateClaimed, protocol.StateProvisioning:
		return "preparing the session…"
	}
	return ""
}

func (p *progress) setState(s string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if s != p.state {
		p.state, p.since = s, time.Now()
		p.clearLocked()
		if !p.tty {
			p.drawn = false
		}
	}
}

func (p *progress) sawEvent(e *protocol.ChainedEvent) {
	if e.Event.Type() == protocol.EventRunClaimed {
		p.setState(protocol.StateClaimed)
	}
	if e.Event.Type() == protocol.EventWorkspaceMaterialized {
		p.setState(protocol.StateRunning)
	}
}

func (p *progress) note(msg string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.clearLocked()
	fmt.Fprintln(p.w, msg)
}

func (p *progress) clear() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.clearLocked()
}

func (p *progress) clearLocked() {
	if p.tty && p.drawn {
		fmt.Fprint(p.w, "\r\x1b[2K")
		p.drawn = false
	}
}

func (p *progress) stop() {
	p.once.Do(func() {
		close(p.done)
		p.clear()
	})
}
