package cli

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"warrant.dev/warrant/client"
	"warrant.dev/warrant/internal/fsutil"
	"warrant.dev/warrant/protocol"
)

func init() { register(newReceiptCmd) }

// receiptView is the one-screen answer to the five questions about a run,
// and the --json output of `warrant receipt`.
type receiptView struct {
	RunID        string          `json:"runId"`
	State        string          `json:"state"`
	Failure      *client.Failure `json:"failure,omitempty"`
	Verification *verifySummary  `json:"verification,omitempty"`
	WhatMoved    whatMoved       `json:"whatMoved"`
	Why          why             `json:"why"`
	WhoApproved  whoApproved     `json:"whoApproved"`
	WhatSawIt    *whatSawIt      `json:"whatSawIt,omitempty"`
	Reproduce    reproduce       `json:"reproduce"`
	Timeline     timeline        `json:"timeline"`
}

type verifySummary struct {
	Trusted bool     `json:"trusted"`
	Valid   bool     `json:"valid"`
	Note    string   `json:"note,omitempty"`
	Failed  []string `json:"failed,omitempty"`
}

type fileChange struct {
	Path    string `json:"path"`
	Added   int    `json:"added"`
	Removed int    `json:"removed"`
	Binary  bool   `json:"binary,omitempty"`
}

type whatMoved struct {
	BaseRef        string       `json:"baseRef"`
	SnapshotHash   string       `json:"snapshotHash"`
	FilesIn        int          `json:"filesIn"` // -1 when unknown
	UntrackedIn    []string     `json:"untrackedIn"`
	DeniedPatterns []string     `json:"deniedPatterns"`
	DeniedPaths    []string     `json:"deniedPaths"`
	DiffHash       string       `json:"diffHash,omitempty"`
	Artifacts      []string     `json:"artifacts"`
	FilesOut       []fileChange `json:"filesOut"`
}

type why struct {
	Task        string                `json:"task"`
	RequestedBy protocol.ActorRef     `json:"requestedBy"`
	Policy      client.PolicyDecision `json:"policy"`
	PolicyHash  string                `json:"policyHash,omitempty"`
}

type whoApproved struct {
	Required  bool              `json:"required"`
	Approvals []client.Approval `json:"approvals"`
}

type whatSawIt struct {
	RunnerID        string                   `json:"runnerId"`
	RunnerKeyID     string                   `json:"runnerKeyId"`
	Pool            string                   `json:"pool"`
	Isolation       string                   `json:"isolation"`
	AttestationTier string                   `json:"attestationTier"`
	HostsAllowed    []string                 `json:"hostsAllowed"`
	HostsBlocked    []string                 `json:"hostsBlocked"`
	Secrets         []protocol.SecretRelease `json:"secretsReleased"`
	Disclosures     []protocol.Disclosure    `json:"disclosures"`
	Models          []protocol.ModelUsage    `json:"modelsUsed"`
}

type reproduce struct {
	ContractHash string   `json:"contractHash,omitempty"`
	BaseRef      string   `json:"baseRef"`
	Agent        string   `json:"agent"`
	Execution    string   `json:"execution"`
	Isolation    string   `json:"isolation"`
	AllowHosts   []string `json:"allowHosts"`
	Commands     []string `json:"commands"`
}

type timeline struct {
	Events    int64  `json:"events"`
	StartedAt string `json:"startedAt,omitempty"`
	EndedAt   string `json:"endedAt,omitempty"`
	Duration  string `json:"duration,omitempty"`
}

func newReceiptCmd(a *app) *cobra.Command {
	var bundlePath, trustPath string
	cmd := &cobra.Command{
		Use:   "receipt RUN",
		Short: "Show what a run moved, why, who approved it, what saw it, and how to reproduce it",
		Long: `Show one screen about a run: what moved (files in and out), why (task,
requester, policy decision), who approved it, what saw it (runner, isolation,
hosts allowed and blocked, secrets released by name), how to reproduce it
(contract hash, base, execution), and whether its bundle verifies against your
pinned keys. --bundle FILE (or -) writes the run's warrant.bundle.v1 for
offline verification with 'warrant verify'.`,
		Example: `  warrant receipt run_123
  warrant receipt run_123 --bundle run_123.bundle.json
  warrant receipt run_123 --json`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.runReceipt(args[0], bundlePath, trustPath)
		},
	}
	cmd.Flags().StringVar(&bundlePath, "bundle", "", "write the run's bundle to FILE (- for stdout) instead of the summary")
	cmd.Flags().StringVar(&trustPath, "trust", "", "trust file for the verification result (default: configured trust file)")
	return cmd
}

func (a *app) runReceipt(runID, bundlePath, trustPath string) error {
	c, cfg, err := a.planeClient()
	if err != nil {
		return err
	}
	run, err := c.GetRun(a.ctx, runID)
	if err != nil {
		return explain(err, cfg)
	}
	var bundle *protocol.Bundle
	var raw []byte
	if run.HasReceipt {
		if bundle, raw, err = c.Bundle(a.ctx, runID); err != nil {
			return explain(err, cfg)
		}
	}
	if bundlePath != "" {
		if bundle == nil {
			return withExit(ExitFailure, fmt.Errorf("run %s has no receipt yet (state %s): there is no bundle to write", runID, run.State))
		}
		if bundlePath == "-" {
			_, err := a.stdio.Out.Write(raw)
			return err
		}
		if err := fsutil.WriteFileAtomic(bundlePath, raw, 0o644); err != nil {
			return err
		}
		fmt.Fprintf(a.stdio.Err, "wrote %s; verify it offline with 'warrant verify %s'\n", bundlePath, bundlePath)
		return nil
	}
	view := buildReceiptView(run, bundle)
	if bundle != nil {
		trust, _, err := a.loadTrust(trustPath)
		if err != nil {
			return err
		}
		rep := protocol.VerifyBundle(bundle, trust)
		vs := &verifySummary{Trusted: rep.Trusted(), Valid: rep.Valid(), Note: rep.Note}
		for _, ch := range rep.Checks {
			if ch.Err != nil {
				vs.Failed = append(vs.Failed, ch.Err.Error())
			}
		}
		view.Verification = vs
	}
	a.fillArtifacts(c, run, &view)
	if a.json {
		return printJSON(a.stdio.Out, view)
	}
	a.printReceipt(view)
	return nil
}

func buildReceiptView(run *client.Run, bundle *protocol.Bundle) receiptView {
	v := receiptView{
		RunID: run.ID, State: run.State, Failure: run.Failure,
		Why: why{Task: run.Prompt, RequestedBy: run.RequestedBy, Policy: run.PolicyDecision},
		WhoApproved: whoApproved{
			Required:  run.PolicyDecision.Decision == "ask",
			Approvals: run.Approvals,
		},
		Timeline: timeline{Events: run.EventCount},
	}
	if v.WhoApproved.Approvals == nil {
		v.WhoApproved.Approvals = []client.Approval{}
	}
	ws := run.Workspace
	if run.Contract != nil {
		ws = &run.Contract.Workspace
	}
	v.WhatMoved = whatMoved{FilesIn: -1, UntrackedIn: []string{}, DeniedPatterns: []string{}, DeniedPaths: []string{}, Artifacts: []string{}, FilesOut: []fileChange{}}
	if ws != nil {
		v.WhatMoved.BaseRef, v.WhatMoved.SnapshotHash = ws.BaseRef, ws.BundleHash
		for _, f := range ws.UntrackedFiles {
			v.WhatMoved.UntrackedIn = append(v.WhatMoved.UntrackedIn, f.Path)
		}
		v.WhatMoved.DeniedPatterns = append(v.WhatMoved.DeniedPatterns, ws.DeniedPatterns...)
		v.WhatMoved.DeniedPaths = append(v.WhatMoved.DeniedPaths, ws.DeniedPaths...)
	}
	v.Reproduce = reproduce{BaseRef: v.WhatMoved.BaseRef, Agent: run.Agent.Kind, Isolation: run.Isolation, AllowHosts: run.AllowHosts, Commands: []string{}}
	if v.Reproduce.AllowHosts == nil {
		v.Reproduce.AllowHosts = []string{}
	}
	if run.Contract != nil {
		c := run.Contract
		v.Why.PolicyHash = c.PolicyHash
		v.Reproduce.ContractHash = run.ContractHash
		v.Reproduce.Execution = describeExecution(c.EffectiveExecution())
		v.Reproduce.Isolation = c.EffectiveIsolation()
		v.Reproduce.AllowHosts = append([]string{}, c.Network.AllowHosts...)
	}
	v.Reproduce.Commands = append(v.Reproduce.Commands,
		fmt.Sprintf("warrant receipt %s --bundle %s.bundle.json && warrant verify %s.bundle.json", run.ID, run.ID, run.ID))
	if bundle != nil {
		r := bundle.Receipt
		v.WhatMoved.DiffHash = r.WorkspaceOut.DiffHash
		v.WhatMoved.Artifacts = append(v.WhatMoved.Artifacts, r.WorkspaceOut.ArtifactHashes...)
		saw := &whatSawIt{
			RunnerID: r.Runner.RunnerID, RunnerKeyID: r.Runner.KeyID, Pool: r.Runner.Pool,
			Isolation: r.Runner.Isolation, AttestationTier: r.Runner.AttestationTier,
			HostsAllowed: []string{}, HostsBlocked: []string{},
			Secrets: r.SecretsReleased, Disclosures: r.BoundaryDisclosures, Models: r.ModelsUsed,
		}
		if saw.Isolation == "" {
			saw.Isolation = protocol.IsolationProcess
		}
		for _, n := range r.NetworkAccessed {
			if n.Decision == protocol.DecisionAllowed {
				saw.HostsAllowed = append(saw.HostsAllowed, n.Host)
			} else {
				saw.HostsBlocked = append(saw.HostsBlocked, n.Host)
			}
		}
		v.WhatSawIt = saw
		v.Timeline.StartedAt, v.Timeline.EndedAt = r.StartedAt, r.EndedAt
		if s, err := protocol.ParseTime(r.StartedAt); err == nil {
			if e, err := protocol.ParseTime(r.EndedAt); err == nil {
				v.Timeline.Duration = e.Sub(s).Round(time.Millisecond).String()
			}
		}
		v.Timeline.Events = int64(len(bundle.Events))
	} else if run.RunnerID != "" {
		v.WhatSawIt = &whatSawIt{RunnerID: run.RunnerID, RunnerKeyID: run.RunnerKeyID, Pool: run.Pool, Isolation: run.Isolation,
			HostsAllowed: []string{}, HostsBlocked: []string{}, Secrets: []protocol.SecretRelease{}, Disclosures: []protocol.Disclosure{}, Models: []protocol.ModelUsage{}}
	}
	return v
}

// fillArtifacts reads the snapshot (for the file count) and the diff (for
// per-file line counts). Either may be unavailable (retention, access):
// the receipt then says so rather than failing.
func (a *app) fillArtifacts(c *client.Client, run *client.Run, v *receiptView) {
	if h := v.WhatMoved.SnapshotHash; protocol.IsHash(h) {
		if data, err := readBlob(a, c, h, 64<<20); err == nil {
			if snap, err := protocol.ParseSnapshot(data); err == nil {
				v.WhatMoved.FilesIn = len(snap.Entries)
			}
		}
	}
	if h := v.WhatMoved.DiffHash; protocol.IsHash(h) {
		if data, err := readBlob(a, c, h, 64<<20); err == nil {
			v.WhatMoved.FilesOut = diffStats(data)
		}
	}
}

func readBlob(a *app, c *client.Client, hash string, limit int64) ([]byte, error) {
	rc, err := c.GetBlob(a.ctx, hash)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	data, err := io.ReadAll(io.LimitReader(rc, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, errors.New("blob too large to summarize")
	}
	if protocol.HashBytes(data) != hash {
		return nil, fmt.Errorf("blob %s does not match its hash", hash)
	}
	return data, nil
}

// diffStats counts added and removed lines per file of a git diff.
func diffStats(diff []byte) []fileChange {
	var out []fileChange
	var cur *fileChange
	sc := bufio.NewScanner(bytes.NewReader(diff))
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "diff --git "):
			out = append(out, fileChange{Path: diffPath(line)})
			cur = &out[len(out)-1]
		case cur == nil:
		case strings.HasPrefix(line, "GIT binary patch"), strings.HasPrefix(line, "Binary files "):
			cur.Binary = true
		case strings.HasPrefix(line, "+++ "), strings.HasPrefix(line, "--- "):
		case strings.HasPrefix(line, "+"):
			cur.Added++
		case strings.HasPrefix(line, "-"):
			cur.Removed++
		}
	}
	if out == nil {
		out = []fileChange{}
	}
	return out
}

// diffPath takes the b/ path of a "diff --git a/X b/Y" line.
func diffPath(line string) string {
	rest := strings.TrimPrefix(line, "diff --git ")
	if i := strings.LastIndex(rest, " b/"); i >= 0 {
		return rest[i+3:]
	}
	return rest
}

// plural renders "1 file", "2 files".
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

func describeExecution(e protocol.ExecutionSpec) string {
	switch e.Kind {
	case protocol.ExecShell:
		sh := e.Shell
		if sh == "" {
			sh = "sh"
		}
		return fmt.Sprintf("%s -c %q", sh, oneLine(e.Script, 120))
	case protocol.ExecArgv:
		return oneLine(strings.Join(append([]string{e.Command}, e.Args...), " "), 160)
	case protocol.ExecAgent:
		kind := ""
		if e.Agent != nil {
			kind = e.Agent.Kind
		}
		return fmt.Sprintf("agent %s with the task as prompt", kind)
	}
	return e.Kind
}

func (a *app) printReceipt(v receiptView) {
	w := a.stdio.Out
	st := styleFor(w)
	short := func(h string) string {
		if len(h) > 12 {
			return h[:12]
		}
		if h == "" {
			return "-"
		}
		return h
	}
	head := fmt.Sprintf("Run %s  %s", v.RunID, st.state(v.State))
	if v.Verification != nil {
		switch {
		case v.Verification.Trusted:
			head += "  " + st.green("verified ✓") + st.dim(" ("+v.Verification.Note+")")
		case v.Verification.Valid:
			head += "  " + st.yellow("consistent, keys not pinned") + st.dim(" (pin the plane key: warrant keys trust)")
		default:
			head += "  " + st.red("VERIFICATION FAILED: "+strings.Join(v.Verification.Failed, "; "))
		}
	} else {
		head += "  " + st.dim("no receipt")
	}
	fmt.Fprintln(w, head)
	if v.Failure != nil {
		fmt.Fprintf(w, "  %s %s: %s\n", st.red("failure"), v.Failure.Class, oneLine(v.Failure.Message, 200))
	}
	section := func(title string) { fmt.Fprintf(w, "\n%s\n", st.bold(title)) }
	kv := func(k, val string) { fmt.Fprintf(w, "  %-10s %s\n", k, val) }

	m := v.WhatMoved
	section("WHAT MOVED")
	in := fmt.Sprintf("snapshot %s of %s", short(m.SnapshotHash), short(m.BaseRef))
	if m.FilesIn >= 0 {
		in = plural(m.FilesIn, "file") + ", " + in
	}
	in += fmt.Sprintf(", %d untracked allowlisted", len(m.UntrackedIn))
	kv("in", in)
	if len(m.DeniedPaths) > 0 {
		kv("withheld", fmt.Sprintf("%s matched deny patterns: %s", plural(len(m.DeniedPaths), "path"), oneLine(strings.Join(m.DeniedPaths, ", "), 100)))
	} else {
		kv("withheld", fmt.Sprintf("nothing matched the %d deny patterns", len(m.DeniedPatterns)))
	}
	switch {
	case len(m.FilesOut) > 0:
		added, removed := 0, 0
		for _, f := range m.FilesOut {
			added += f.Added
			removed += f.Removed
		}
		kv("out", fmt.Sprintf("%s changed, %s %s   diff %s", plural(len(m.FilesOut), "file"), st.green(fmt.Sprintf("+%d", added)), st.red(fmt.Sprintf("-%d", removed)), short(m.DiffHash)))
		for i, f := range m.FilesOut {
			if i == 8 {
				kv("", fmt.Sprintf("… and %d more", len(m.FilesOut)-8))
				break
			}
			stat := fmt.Sprintf("+%d -%d", f.Added, f.Removed)
			if f.Binary {
				stat = "binary"
			}
			kv("", fmt.Sprintf("%-40s %s", oneLine(f.Path, 40), stat))
		}
	case m.DiffHash != "":
		kv("out", "diff "+short(m.DiffHash)+" (not readable here)")
	default:
		kv("out", "no changes")
	}

	section("WHY")
	kv("task", oneLine(v.Why.Task, 100))
	kv("by", v.Why.RequestedBy.Kind+" "+oneLine(v.Why.RequestedBy.ID, 60))
	pol := v.Why.Policy.Decision + ": " + oneLine(v.Why.Policy.Reason, 80)
	if v.Why.PolicyHash != "" {
		pol += st.dim("  (policy " + short(v.Why.PolicyHash) + ")")
	}
	kv("policy", pol)

	section("WHO APPROVED")
	if len(v.WhoApproved.Approvals) == 0 {
		if v.WhoApproved.Required {
			kv("", "approval required, none given yet")
		} else {
			kv("", "no approval required by policy")
		}
	}
	for _, ap := range v.WhoApproved.Approvals {
		line := fmt.Sprintf("%s by %s %s at %s", ap.Decision, ap.Actor.Kind, oneLine(ap.Actor.ID, 60), ap.At)
		if ap.Reason != "" {
			line += ": " + oneLine(ap.Reason, 80)
		}
		kv("", line)
	}

	section("WHAT SAW IT")
	if s := v.WhatSawIt; s != nil {
		kv("runner", fmt.Sprintf("%s  key %s  pool %s", s.RunnerID, s.RunnerKeyID, s.Pool))
		att := s.AttestationTier
		if att == protocol.AttestationMock {
			att += " (software runner: no hardware attestation)"
		}
		kv("session", fmt.Sprintf("isolation %s, attestation %s", s.Isolation, att))
		net := "no network access attempted"
		if len(s.HostsAllowed)+len(s.HostsBlocked) > 0 {
			var parts []string
			if len(s.HostsAllowed) > 0 {
				parts = append(parts, "allowed "+oneLine(strings.Join(s.HostsAllowed, ", "), 80))
			}
			if len(s.HostsBlocked) > 0 {
				parts = append(parts, st.red("blocked "+oneLine(strings.Join(s.HostsBlocked, ", "), 80)))
			}
			net = strings.Join(parts, "; ")
		}
		kv("network", net)
		if len(s.Secrets) == 0 {
			kv("secrets", "none released")
		}
		for _, sec := range s.Secrets {
			kv("secrets", fmt.Sprintf("%s (%s) released %s", sec.Name, sec.Scope, sec.TS))
		}
		var out []string
		for _, d := range s.Disclosures {
			out = append(out, fmt.Sprintf("%s %s %s", d.Direction, d.DataClass, short(d.ContentHash)))
		}
		if len(out) > 0 {
			kv("disclosed", strings.Join(out, ", "))
		}
		if len(s.Models) > 0 {
			var ms []string
			for _, mu := range s.Models {
				ms = append(ms, mu.Provider+"/"+mu.Model)
			}
			kv("models", strings.Join(ms, ", "))
		}
	} else {
		kv("", "no runner has claimed this run")
	}

	section("HOW TO REPRODUCE")
	r := v.Reproduce
	if r.ContractHash != "" {
		kv("contract", r.ContractHash)
	}
	kv("base", orDash(r.BaseRef))
	if r.Execution != "" {
		kv("runs", r.Execution)
	}
	hosts := "none (deny by default)"
	if len(r.AllowHosts) > 0 {
		sorted := append([]string(nil), r.AllowHosts...)
		sort.Strings(sorted)
		hosts = strings.Join(sorted, ", ")
	}
	kv("egress", hosts)
	kv("timeline", fmt.Sprintf("%d events %s → %s (%s)", v.Timeline.Events, orDash(v.Timeline.StartedAt), orDash(v.Timeline.EndedAt), orDash(v.Timeline.Duration)))
	for _, c := range r.Commands {
		kv("verify", c)
	}
}
