package ui

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"warrant.dev/warrant/client"
	"warrant.dev/warrant/protocol"
)

// maxTimelineEvents bounds the events rendered on a run page.
const maxTimelineEvents = 2000

// maxSnapshotBytes bounds the snapshot read to count a run's input files.
const maxSnapshotBytes = 64 << 20

// runPage is a run's receipt page: the five questions, the timeline, the
// diff and the verification status.
type runPage struct {
	page
	Run        *client.Run
	Terminal   bool
	Stream     string
	Verify     *verifyView
	Moved      movedView
	Why        whyView
	Approval   approvalView
	Saw        sawView
	Repro      reproView
	Events     []eventView
	EventsCut  int
	Diff       *diffView
	DiffNote   string
	Decide     bool
	DecideNote string
}

type movedView struct {
	BaseRef        string
	SnapshotHash   string
	FilesIn        int // -1 when unknown
	Untracked      []string
	DeniedPatterns []string
	DeniedPaths    []string
	DiffHash       string
	Artifacts      []artifactRow
	Changed        []string // paths of file.changed events, when the diff is not readable
}

type artifactRow struct{ Kind, Hash string }

type whyView struct {
	Task         string
	RequestedBy  protocol.ActorRef
	Decision     string
	Reason       string
	Reasons      []string
	Requirements []string
	PolicyHash   string
}

type approvalView struct {
	Required   bool
	Approvals  []client.Approval
	ApprovedBy []protocol.ActorRef // as the signed contract names them
}

type sawView struct {
	Claimed      bool
	RunnerID     string
	RunnerKeyID  string
	Pool         string
	Isolation    string
	Attestation  string
	HostsAllowed []string
	HostsBlocked []string
	Secrets      []secretRow
	Disclosures  []protocol.Disclosure
	Models       []string
	FromReceipt  bool
}

type secretRow struct{ Name, Scope, TS string }

type reproView struct {
	ContractHash string
	BaseRef      string
	Agent        string
	ExecHow      string // e.g. "sh -c"
	Execution    string // the script or command line, as written
	Isolation    string
	Disclosure   string
	AllowHosts   []string
	Budget       string
	ExpiresAt    string
	Commands     []string
}

type verifyView struct {
	Status string // "verified", "unpinned", "failed"
	Label  string
	Note   string
	Checks []checkRow
}

type checkRow struct {
	Name string
	OK   bool
	Err  string
}

type eventView struct {
	Seq    int64
	TS     string
	Type   string
	Hash   string
	Prev   string
	Fields []field
	Class  string // "ok", "bad", "warn" or ""
	Label  string // the outcome in words, when the event has one
}

type field struct {
	Key   string
	Value string
	Hash  bool // a hash: shown short, whole in its title
}

func (u *UI) handleRun(w http.ResponseWriter, r *http.Request) {
	s := u.session(w, r)
	if s == nil {
		return
	}
	ctx := apiContext(r)
	id := r.PathValue("id")
	run, err := s.api.GetRun(ctx, id)
	if err != nil {
		u.apiError(w, r, s, err)
		return
	}
	p := &runPage{page: newPage(s, "Run "+run.ID, "runs"), Run: run, Terminal: protocol.IsTerminalState(run.State)}
	p.Notice = notices[r.URL.Query().Get("done")]
	var bundle *protocol.Bundle
	var events []protocol.ChainedEvent
	if run.HasReceipt {
		b, _, err := s.api.Bundle(ctx, id)
		if err != nil {
			p.Verify = &verifyView{Status: "failed", Label: "Bundle unreadable", Note: "The plane's bundle for this run could not be read or parsed: " + errText(err)}
		} else {
			bundle, events = b, b.Events // the whole chain, as verified
			p.Verify = u.verify(b)
		}
	}
	if bundle == nil && run.ContractHash != "" {
		el, err := s.api.Events(ctx, id, -1)
		if err != nil {
			u.apiError(w, r, s, err)
			return
		}
		events = el.Events
	}
	p.Moved = moved(run, events)
	p.Moved.FilesIn = u.snapshotFiles(ctx, s, p.Moved.SnapshotHash)
	p.Why = whyView{Task: run.Prompt, RequestedBy: run.RequestedBy, Decision: run.PolicyDecision.Decision, Reason: run.PolicyDecision.Reason,
		Reasons: run.PolicyDecision.Reasons, Requirements: run.ConsentRequirements}
	p.Approval = approvalView{Required: run.PolicyDecision.Decision == "ask", Approvals: run.Approvals}
	if run.Contract != nil {
		p.Why.PolicyHash = run.Contract.PolicyHash
		p.Approval.ApprovedBy = run.Contract.ApprovedBy
	}
	p.Saw = saw(run, events, bundle)
	p.Repro = repro(run)
	p.Events, p.EventsCut = timeline(events)
	if p.Moved.DiffHash != "" {
		p.Diff, p.DiffNote = u.diff(ctx, s, p.Moved.DiffHash)
		if p.Diff == nil {
			p.Moved.Changed = changedPaths(events)
		}
	} else {
		p.Moved.Changed = changedPaths(events)
	}
	if run.State == protocol.StateAwaitingApproval {
		switch {
		case !s.may(client.RoleApprover, client.RoleAdmin):
			p.DecideNote = "An approver decides on this run."
		case run.RequestedBy.ID == s.me.Name:
			p.DecideNote = "You requested this run: another approver must decide on it."
		default:
			p.Decide = true
		}
	}
	if !p.Terminal {
		after := int64(-1)
		if n := len(events); n > 0 {
			after = events[n-1].Seq
		}
		p.Stream = Prefix + "runs/" + pathEscape(run.ID) + "/stream?after=" + strconv.FormatInt(after, 10)
	}
	u.render(w, r, http.StatusOK, "run", p)
}

// errText is an error's safe text: an API error's message, else a
// generic phrase (causes stay in logs).
func errText(err error) string {
	var ae *client.APIError
	if errors.As(err, &ae) {
		return ae.Message
	}
	var ve *protocol.VerifyError
	if errors.As(err, &ve) {
		return ve.Error()
	}
	return "it could not be read"
}

// verify checks the bundle offline against the pinned plane key.
func (u *UI) verify(b *protocol.Bundle) *verifyView {
	rep := protocol.VerifyBundle(b, u.trust)
	v := &verifyView{Note: rep.Note}
	for _, c := range rep.Checks {
		row := checkRow{Name: c.Name, OK: c.Err == nil}
		if c.Err != nil {
			row.Err = c.Err.Error()
		}
		v.Checks = append(v.Checks, row)
	}
	switch {
	case rep.Trusted():
		v.Status, v.Label = "verified", "Verified"
	case rep.Valid():
		v.Status, v.Label = "unpinned", "Consistent, but not signed by this plane's key"
	default:
		v.Status, v.Label = "failed", "Verification failed"
	}
	return v
}

func moved(run *client.Run, events []protocol.ChainedEvent) movedView {
	m := movedView{FilesIn: -1}
	ws := run.Workspace
	if run.Contract != nil {
		ws = &run.Contract.Workspace
	}
	if ws != nil {
		m.BaseRef, m.SnapshotHash = ws.BaseRef, ws.BundleHash
		for _, f := range ws.UntrackedFiles {
			m.Untracked = append(m.Untracked, f.Path)
		}
		m.DeniedPatterns, m.DeniedPaths = ws.DeniedPatterns, ws.DeniedPaths
	}
	if run.Receipt != nil {
		m.DiffHash = run.Receipt.WorkspaceOut.DiffHash
	}
	for _, e := range events {
		if pl, err := e.Event.Payload(); err == nil {
			if a, ok := pl.(protocol.ArtifactCreated); ok {
				m.Artifacts = append(m.Artifacts, artifactRow{Kind: a.Kind, Hash: a.Hash})
				if a.Kind == "diff" && m.DiffHash == "" && run.Receipt == nil {
					m.DiffHash = a.Hash // live: the receipt is not there yet
				}
			}
		}
	}
	return m
}

func changedPaths(events []protocol.ChainedEvent) []string {
	var out []string
	seen := map[string]bool{}
	for _, e := range events {
		if pl, err := e.Event.Payload(); err == nil {
			if fc, ok := pl.(protocol.FileChanged); ok && !seen[fc.Path] {
				seen[fc.Path] = true
				out = append(out, fc.Path)
			}
		}
	}
	return out
}

func saw(run *client.Run, events []protocol.ChainedEvent, b *protocol.Bundle) sawView {
	v := sawView{RunnerID: run.RunnerID, RunnerKeyID: run.RunnerKeyID, Pool: run.Pool, Isolation: run.Isolation, Claimed: run.RunnerID != ""}
	seenHost := map[string]bool{}
	for _, e := range events {
		pl, err := e.Event.Payload()
		if err != nil {
			continue
		}
		switch x := pl.(type) {
		case protocol.NetworkConnected:
			k := x.Decision + " " + x.Host
			if seenHost[k] {
				continue
			}
			seenHost[k] = true
			if x.Decision == protocol.DecisionAllowed {
				v.HostsAllowed = append(v.HostsAllowed, x.Host)
			} else {
				v.HostsBlocked = append(v.HostsBlocked, x.Host)
			}
		case protocol.SecretReleased:
			v.Secrets = append(v.Secrets, secretRow{Name: x.Name, Scope: x.Scope, TS: e.TS})
		case protocol.BoundaryCrossed:
			v.Disclosures = append(v.Disclosures, protocol.Disclosure{Direction: x.Direction, ContentHash: x.ContentHash, DataClass: x.DataClass})
		case protocol.ModelCalled:
			m := x.Provider + "/" + x.Model
			if !contains(v.Models, m) {
				v.Models = append(v.Models, m)
			}
		}
	}
	if b != nil {
		rc := b.Receipt
		v.FromReceipt = true
		v.RunnerID, v.RunnerKeyID, v.Pool = rc.Runner.RunnerID, rc.Runner.KeyID, rc.Runner.Pool
		v.Attestation = rc.Runner.AttestationTier
		if rc.Runner.Isolation != "" {
			v.Isolation = rc.Runner.Isolation
		}
	}
	return v
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func repro(run *client.Run) reproView {
	v := reproView{Agent: run.Agent.Kind, Isolation: run.Isolation, AllowHosts: run.AllowHosts}
	if run.Agent.Version != "" {
		v.Agent += " " + run.Agent.Version
	}
	if ws := run.Workspace; ws != nil {
		v.BaseRef = ws.BaseRef
	}
	if b := run.Budget; b != nil {
		v.Budget = budgetText(*b)
	}
	if c := run.Contract; c != nil {
		v.ContractHash = run.ContractHash
		v.BaseRef = c.Workspace.BaseRef
		v.ExecHow, v.Execution = describeExecution(c.EffectiveExecution())
		v.Isolation = c.EffectiveIsolation()
		v.Disclosure = c.Disclosure
		v.AllowHosts = c.Network.AllowHosts
		v.Budget = budgetText(c.Budget)
		v.ExpiresAt = c.ExpiresAt
	}
	if run.HasReceipt {
		v.Commands = []string{
			"warrant receipt " + run.ID + " --bundle " + run.ID + ".bundle.json",
			"warrant verify " + run.ID + ".bundle.json",
		}
	}
	return v
}

func budgetText(b protocol.Budget) string {
	var parts []string
	if b.MaxSpendUSD != nil {
		parts = append(parts, fmt.Sprintf("at most %.2f USD", *b.MaxSpendUSD))
	}
	if b.MaxDurationMin != nil {
		parts = append(parts, fmt.Sprintf("at most %g min", *b.MaxDurationMin))
	}
	if len(parts) == 0 {
		return "none set"
	}
	return strings.Join(parts, ", ")
}

// describeExecution says how the session ran: the interpreter or kind,
// and the script or command line as written.
func describeExecution(e protocol.ExecutionSpec) (how, what string) {
	switch e.Kind {
	case protocol.ExecShell:
		sh := e.Shell
		if sh == "" {
			sh = "sh"
		}
		return sh + " -c", e.Script
	case protocol.ExecArgv:
		parts := []string{e.Command}
		for _, a := range e.Args {
			if a == "" || strings.ContainsAny(a, " \t\n'\"\\$`") {
				a = strconv.Quote(a)
			}
			parts = append(parts, a)
		}
		return "argv", strings.Join(parts, " ")
	case protocol.ExecAgent:
		kind := ""
		if e.Agent != nil {
			kind = e.Agent.Kind
		}
		return "agent " + kind, "the task, as the agent's prompt"
	}
	return e.Kind, ""
}

var hexHash = regexp.MustCompile(`^(sha256:)?[0-9a-f]{64}$`)

// timeline renders the events (the last maxTimelineEvents of them).
func timeline(events []protocol.ChainedEvent) ([]eventView, int) {
	cut := 0
	if len(events) > maxTimelineEvents {
		cut = len(events) - maxTimelineEvents
		events = events[cut:]
	}
	out := make([]eventView, 0, len(events))
	for _, e := range events {
		v := eventView{Seq: e.Seq, TS: e.TS, Type: e.Event.Type(), Hash: e.Hash, Prev: e.Prev}
		var m map[string]any
		if err := json.Unmarshal([]byte(e.Event.String()), &m); err == nil {
			keys := make([]string, 0, len(m))
			for k := range m {
				if k != "type" {
					keys = append(keys, k)
				}
			}
			sort.Strings(keys)
			for _, k := range keys {
				val := flatten(m[k])
				v.Fields = append(v.Fields, field{Key: k, Value: val, Hash: hexHash.MatchString(val)})
			}
		}
		switch pl, _ := e.Event.Payload(); x := pl.(type) {
		case protocol.NetworkConnected:
			if x.Decision == protocol.DecisionAllowed {
				v.Class, v.Label = "ok", "allowed"
			} else {
				v.Class, v.Label = "bad", "blocked"
			}
		case protocol.RunCompleted:
			v.Class, v.Label = "ok", "completed"
		case protocol.RunFailed:
			v.Class, v.Label = "bad", "failed"
		case protocol.RunCancelled:
			v.Class, v.Label = "warn", "cancelled"
		case protocol.ConsentGranted:
			v.Class, v.Label = "ok", "approved"
		case protocol.CommandExecuted:
			if x.ExitCode == 0 {
				v.Class, v.Label = "ok", "exit 0"
			} else {
				v.Class, v.Label = "bad", "exit "+strconv.Itoa(x.ExitCode)
			}
		}
		out = append(out, v)
	}
	return out, cut
}

// flatten renders a JSON value on one line.
func flatten(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case nil:
		return "null"
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		parts := make([]string, 0, len(keys))
		for _, k := range keys {
			parts = append(parts, k+" "+flatten(x[k]))
		}
		return strings.Join(parts, ", ")
	case []any:
		parts := make([]string, 0, len(x))
		for _, e := range x {
			parts = append(parts, flatten(e))
		}
		return strings.Join(parts, ", ")
	default:
		b, _ := json.Marshal(x)
		return string(b)
	}
}

// diff reads and parses a run's diff through the API, or says why not.
func (u *UI) diff(ctx context.Context, s *session, hash string) (*diffView, string) {
	key := u.blobs.key(s.token, "diff", hash)
	if v, ok := u.blobs.get(key); ok {
		return v.(*diffView), ""
	}
	data, complete, err := readBlob(ctx, s.api, hash, maxDiffBytes)
	if err != nil {
		return nil, "The diff could not be read: " + errText(err)
	}
	if complete && protocol.HashBytes(data) != hash {
		return nil, "The diff blob does not match its hash: it is not shown."
	}
	v := parseDiff(data)
	if !complete {
		v.Truncated = true
	}
	u.blobs.put(key, v)
	return v, ""
}

// snapshotFiles counts the files of a workspace snapshot, or -1.
func (u *UI) snapshotFiles(ctx context.Context, s *session, hash string) int {
	if !protocol.IsHash(hash) {
		return -1
	}
	key := u.blobs.key(s.token, "files", hash)
	if v, ok := u.blobs.get(key); ok {
		return v.(int)
	}
	data, complete, err := readBlob(ctx, s.api, hash, maxSnapshotBytes)
	if err != nil || !complete || protocol.HashBytes(data) != hash {
		return -1
	}
	snap, err := protocol.ParseSnapshot(data)
	if err != nil {
		return -1
	}
	u.blobs.put(key, len(snap.Entries))
	return len(snap.Entries)
}

// readBlob reads at most limit bytes of a blob; complete says whether
// that was all of it.
func readBlob(ctx context.Context, c *client.Client, hash string, limit int64) ([]byte, bool, error) {
	rc, err := c.GetBlob(ctx, hash)
	if err != nil {
		return nil, false, err
	}
	defer rc.Close()
	data, err := io.ReadAll(io.LimitReader(rc, limit+1))
	if err != nil {
		return nil, false, err
	}
	if int64(len(data)) > limit {
		return data[:limit], false, nil
	}
	return data, true, nil
}

// safeFilename keeps a run id usable in a Content-Disposition filename.
func safeFilename(id string) string {
	var b strings.Builder
	for _, c := range id {
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' {
			b.WriteRune(c)
		}
	}
	if b.Len() == 0 {
		return "run"
	}
	return b.String()
}

// handleBundle serves the run's warrant.bundle.v1 as a download.
func (u *UI) handleBundle(w http.ResponseWriter, r *http.Request) {
	s := u.session(w, r)
	if s == nil {
		return
	}
	id := r.PathValue("id")
	_, raw, err := s.api.Bundle(apiContext(r), id)
	if err != nil && raw == nil {
		u.apiError(w, r, s, err)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Disposition", `attachment; filename="`+safeFilename(id)+`.bundle.json"`)
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Length", strconv.Itoa(len(raw)))
	_, _ = w.Write(raw)
}

// handleDiffDownload serves the run's whole diff as a text download.
func (u *UI) handleDiffDownload(w http.ResponseWriter, r *http.Request) {
	s := u.session(w, r)
	if s == nil {
		return
	}
	ctx := apiContext(r)
	id := r.PathValue("id")
	run, err := s.api.GetRun(ctx, id)
	if err != nil {
		u.apiError(w, r, s, err)
		return
	}
	var events []protocol.ChainedEvent
	if run.ContractHash != "" {
		if el, err := s.api.Events(ctx, id, -1); err == nil {
			events = el.Events
		}
	}
	hash := moved(run, events).DiffHash
	if hash == "" {
		u.renderError(w, r, s, http.StatusNotFound, "This run has no diff.")
		return
	}
	rc, err := s.api.GetBlob(ctx, hash)
	if err != nil {
		u.apiError(w, r, s, err)
		return
	}
	defer rc.Close()
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("Content-Disposition", `attachment; filename="`+safeFilename(id)+`.diff"`)
	h.Set("Cache-Control", "no-store")
	if _, err := io.Copy(w, rc); err != nil && r.Context().Err() == nil {
		u.log.Warn("ui: diff download cut short", "run", id, "err", err)
	}
}
