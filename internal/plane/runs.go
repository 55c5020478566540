package plane

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"warrant.dev/warrant/client"
	"warrant.dev/warrant/internal/store"
	"warrant.dev/warrant/protocol"
)

// runDetails is the plane's own record of a run, kept by the store as
// opaque JSON.
type runDetails struct {
	Agent       protocol.AgentSpec    `json:"agent"`
	RequestedBy protocol.ActorRef     `json:"requestedBy"`
	Decision    client.PolicyDecision `json:"decision"`
	Approvers   []string              `json:"approvers,omitempty"` // nil: any approver
	Approvals   []client.Approval     `json:"approvals,omitempty"`
	// Request is kept while the run has no contract (awaiting approval):
	// the contract is built from it when the run is approved.
	Request *client.RunRequest `json:"request,omitempty"`
}

func decodeDetails(b []byte) (runDetails, error) {
	var d runDetails
	if len(b) == 0 {
		return d, nil
	}
	if err := json.Unmarshal(b, &d); err != nil {
		return d, fmt.Errorf("run details: %w", err)
	}
	return d, nil
}

func encodeDetails(d runDetails) ([]byte, error) {
	b, err := json.Marshal(d)
	if err != nil {
		return nil, fmt.Errorf("encode run details: %w", err)
	}
	return b, nil
}

var (
	poolPattern   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)
	secretPattern = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.-]{0,127}$`)
	// dataClassPattern: 1 to 64 of a-z, 0-9, '-', '_', '.'.
	dataClassPattern = regexp.MustCompile(`^[a-z0-9._-]{1,64}$`)
)

// Isolation tiers a run may request.
var knownTiers = []string{protocol.IsolationProcess, protocol.IsolationNamespace}

// validateRequest checks a run request and fills its defaults.
func validateRequest(req *client.RunRequest) error {
	bad := func(format string, args ...any) error { return errf(client.CodeBadRequest, format, args...) }
	if !slices.Contains(protocol.AgentKinds, req.Agent.Kind) {
		return bad("agent.kind %q is not one of %s", req.Agent.Kind, strings.Join(protocol.AgentKinds, ", "))
	}
	if !poolPattern.MatchString(req.Pool) {
		return bad("pool %q: want 1-64 letters, digits, '.', '_' or '-'", req.Pool)
	}
	if strings.TrimSpace(req.Prompt) == "" && req.Execution == nil {
		return bad("prompt is empty: say what the agent should do (or give an execution)")
	}
	m := &req.Workspace
	if m.Version == "" {
		return bad("workspace: a %s manifest is required", protocol.VersionManifest)
	}
	if !protocol.IsHash(m.BundleHash) {
		return bad("workspace.bundleHash must be a sha256 hex hash")
	}
	if m.DirtyDiffHash != "" && !protocol.IsHash(m.DirtyDiffHash) {
		return bad("workspace.dirtyDiffHash must be a sha256 hex hash")
	}
	for i, f := range m.UntrackedFiles {
		if !protocol.IsHash(f.Hash) {
			return bad("workspace.untrackedFiles[%d].hash must be a sha256 hex hash", i)
		}
		if err := protocol.ValidatePath(f.Path); err != nil {
			return bad("workspace.untrackedFiles[%d].path: %v", i, err)
		}
	}
	seen := map[string]bool{}
	for _, s := range req.Secrets {
		if !secretPattern.MatchString(s) {
			return bad("secret name %q: want a letter or '_' then letters, digits, '_', '.' or '-'", s)
		}
		if seen[s] {
			return bad("secret %q is named twice", s)
		}
		seen[s] = true
	}
	hosts := make([]string, 0, len(req.AllowHosts))
	for _, h := range req.AllowHosts {
		n, err := normalizeHost(h)
		if err != nil {
			return bad("allowHosts: %v", err)
		}
		if !slices.Contains(hosts, n) {
			hosts = append(hosts, n)
		}
	}
	req.AllowHosts = hosts
	if err := validBudget(req.Budget); err != nil {
		return bad("%v", err)
	}
	if req.Disclosure == "" {
		req.Disclosure = "minimal-context"
	}
	if !slices.Contains(protocol.DisclosureModes, req.Disclosure) {
		return bad("disclosure %q is not one of %s", req.Disclosure, strings.Join(protocol.DisclosureModes, ", "))
	}
	if req.Isolation != "" && !slices.Contains(knownTiers, req.Isolation) {
		return bad("isolation %q is not one of %s", req.Isolation, strings.Join(knownTiers, ", "))
	}
	var classes []string
	for _, c := range req.DataClasses {
		if !validDataClass(c) {
			return bad("dataClasses: %q is not a data class name (1 to 64 of a-z, 0-9, '-', '_', '.')", c)
		}
		if !slices.Contains(classes, c) {
			classes = append(classes, c)
		}
	}
	req.DataClasses = classes
	return nil
}

// validDataClass reports whether c is a well-formed data class name.
func validDataClass(c string) bool { return dataClassPattern.MatchString(c) }

// runDataClasses are the data classes a run carries: the built-in ones,
// then those its request declares.
func runDataClasses(req *client.RunRequest) []string {
	out := slices.Clone(client.BuiltinDataClasses)
	for _, c := range req.DataClasses {
		if !slices.Contains(out, c) {
			out = append(out, c)
		}
	}
	return out
}

// effectiveIsolation is the tier a run needs.
func effectiveIsolation(req *client.RunRequest) string {
	if req.Isolation == "" {
		return protocol.IsolationProcess
	}
	return req.Isolation
}

// storedSecretNames returns the names of the stored secrets.
func (p *Plane) storedSecretNames(ctx context.Context) (map[string]bool, error) {
	list, err := p.store.ListSecrets(ctx)
	if err != nil {
		return nil, err
	}
	out := make(map[string]bool, len(list))
	for _, s := range list {
		out[s.Name] = true
	}
	return out, nil
}

// handleSubmit is POST /v1/runs.
func (p *Plane) handleSubmit(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	id := info(r).who
	var req client.RunRequest
	err := p.decode(w, r, &req, false)
	if err != nil {
		return err
	}
	if err := validateRequest(&req); err != nil {
		return err
	}
	var ws *workspaceInfo
	if req.DryRun {
		// A dry run needs nothing uploaded: it counts the snapshot's files
		// when the plane holds it.
		if ws, err = p.workspaceOf(ctx, &req.Workspace); err != nil {
			var ae *apiError
			if !errors.As(err, &ae) || ae.code != client.CodeBlobMissing {
				return err
			}
			ws = &workspaceInfo{snapshotMissing: true}
		}
	} else {
		if ws, err = p.workspaceOf(ctx, &req.Workspace); err != nil {
			return err
		}
		if missing, err := p.store.MissingBlobs(ctx, ws.hashes); err != nil {
			return err
		} else if len(missing) > 0 {
			return errf(client.CodeBlobMissing, "%d workspace blob(s) were never uploaded, first %s: upload them (POST /v1/blobs/missing, PUT /v1/blobs/{hash}) and submit again", len(missing), missing[0])
		}
	}
	pol, policyHash, err := p.currentPolicy(ctx)
	if err != nil {
		return err
	}
	stored, err := p.storedSecretNames(ctx)
	if err != nil {
		return err
	}
	ev := evaluate(pol, &req, stored)
	if req.DryRun {
		writeJSON(w, http.StatusOK, client.SubmitResponse{DryRun: p.disclosure(&req, ws, ev)})
		return nil
	}
	p.metrics.submitted.WithLabelValues(ev.decision.Decision).Inc()
	if ev.decision.Decision == "deny" {
		return &apiError{code: client.CodePolicyDenied, msg: "the policy denies this run", reasons: ev.decision.Reasons}
	}
	pr := id.principal
	now := p.now()
	if err := p.store.RefBlobs(ctx, pr.ID, ws.hashes, now); err != nil {
		return err
	}
	requester := protocol.ActorRef{Kind: pr.Kind, ID: pr.Name}
	runID := newID("run_")
	d := runDetails{Agent: req.Agent, RequestedBy: requester, Decision: ev.decision}
	run := store.Run{
		ID: runID, Pool: req.Pool, AgentKind: req.Agent.Kind, Isolation: effectiveIsolation(&req), Prompt: req.Prompt,
		RequesterID: pr.ID, RequesterName: pr.Name, CreatedAt: now, UpdatedAt: now,
	}
	var events []store.Event
	if ev.decision.Decision == "ask" {
		run.State = store.StateAwaitingApproval
		d.Approvers = ev.approvers
		reqCopy := req
		reqCopy.DryRun = false
		d.Request = &reqCopy
	} else {
		run.State = store.StateCreated
		c, err := p.issueContract(runID, requester, nil, &req, ev, policyHash, now)
		if err != nil {
			return err
		}
		events, err = p.openingEvents(runID, c.hash, ev.decision, nil, nil, now)
		if err != nil {
			return err
		}
		run.Contract, run.ContractHash, run.ExpiresAt, run.SecretNames = c.bytes, c.hash, c.expiresAt, c.secretNames
	}
	if run.Details, err = encodeDetails(d); err != nil {
		return err
	}
	if err := p.store.CreateRun(ctx, run, events); err != nil {
		return err
	}
	p.log.Info("run submitted", "runId", runID, "requestId", info(r).id, "decision", ev.decision.Decision, "pool", req.Pool, "agent", req.Agent.Kind, "secrets", req.Secrets)
	if run.State == store.StateCreated {
		p.notify.Publish(poolTopic(run.Pool))
	} else {
		p.notify.Publish(runTopic(run.ID)) // wakes run-list streams
	}
	stored2, err := p.store.GetRun(ctx, runID)
	if err != nil {
		return err
	}
	view, err := p.view(ctx, stored2, true)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, client.SubmitResponse{Run: view})
	return nil
}

// disclosure is the dry-run report.
func (p *Plane) disclosure(req *client.RunRequest, ws *workspaceInfo, ev evaluation) *client.DisclosureReport {
	untracked := make([]string, 0, len(req.Workspace.UntrackedFiles))
	for _, f := range req.Workspace.UntrackedFiles {
		untracked = append(untracked, f.Path)
	}
	denied := req.Workspace.DeniedPaths
	if denied == nil {
		denied = []string{}
	}
	secrets := ev.secrets
	if ev.decision.Decision == "deny" {
		// Report every requested name, scoped or not.
		secrets = make([]protocol.SecretClaim, 0, len(req.Secrets))
		for _, s := range req.Secrets {
			secrets = append(secrets, protocol.SecretClaim{Name: s, Scope: "pool:" + req.Pool})
		}
	}
	network := ev.network
	if ev.decision.Decision == "deny" {
		network.AllowHosts = req.AllowHosts
	}
	exec := req.Execution
	if exec == nil {
		e := protocol.DefaultExecution(req.Agent, req.Prompt)
		exec = &e
	}
	return &client.DisclosureReport{
		DryRun: true, Agent: req.Agent, Pool: req.Pool, BaseRef: req.Workspace.BaseRef,
		Files: ws.files, TotalBytes: ws.bytes, SnapshotMissing: ws.snapshotMissing, UntrackedPaths: untracked, DeniedPaths: denied,
		Secrets: secrets, Network: network, Budget: ev.budget, Disclosure: req.Disclosure,
		Execution: exec, Isolation: effectiveIsolation(req), DataClasses: runDataClasses(req), PolicyDecision: ev.decision,
	}
}

// issued is a signed contract and what the store keeps of it.
type issued struct {
	contract    *protocol.Contract
	bytes       []byte
	hash        string
	expiresAt   time.Time
	secretNames []string
}

// issueContract builds and signs a run's contract.
func (p *Plane) issueContract(runID string, requester protocol.ActorRef, approvedBy []protocol.ActorRef, req *client.RunRequest, ev evaluation, policyHash string, now time.Time) (*issued, error) {
	exec := req.Execution
	if exec == nil {
		e := protocol.DefaultExecution(req.Agent, req.Prompt)
		exec = &e
	}
	expires := now.Add(p.cfg.ContractTTL)
	c := &protocol.Contract{
		Version:     protocol.VersionContract,
		RunID:       runID,
		IssuedAt:    protocol.FormatTime(now),
		Issuer:      protocol.KeyRef{KeyID: p.key.Public().ID(), Role: protocol.SignerPlane},
		RequestedBy: requester,
		ApprovedBy:  approvedBy,
		Agent:       req.Agent,
		Task:        protocol.TaskSpec{Prompt: req.Prompt},
		Runner:      protocol.RunnerSelector{Pool: req.Pool},
		Workspace:   req.Workspace,
		PolicyHash:  policyHash,
		Secrets:     ev.secrets,
		Network:     ev.network,
		Budget:      ev.budget,
		Disclosure:  req.Disclosure,
		Execution:   exec,
		Isolation:   req.Isolation,
		ExpiresAt:   protocol.FormatTime(expires),
		Signatures:  []protocol.Signature{},
	}
	if err := c.Sign(p.key, protocol.SignerPlane); err != nil {
		return nil, fmt.Errorf("sign contract: %w", err)
	}
	h, err := c.Hash()
	if err != nil {
		return nil, fmt.Errorf("hash contract: %w", err)
	}
	b, err := c.MarshalJSON()
	if err != nil {
		return nil, fmt.Errorf("encode contract: %w", err)
	}
	names := make([]string, 0, len(ev.secrets))
	for _, s := range ev.secrets {
		names = append(names, s.Name)
	}
	return &issued{contract: c, bytes: b, hash: h, expiresAt: expires, secretNames: names}, nil
}

// openingEvents are the events the plane writes when it issues a contract:
// run.created and policy.evaluated, and for an approved run one
// consent.requested per requirement and consent.granted.
func (p *Plane) openingEvents(runID, contractHash string, decision client.PolicyDecision, requirements []string, approver *protocol.ActorRef, now time.Time) ([]store.Event, error) {
	bodies := []protocol.EventBody{
		protocol.NewEvent(protocol.RunCreated{}),
		protocol.NewEvent(protocol.PolicyEvaluated{Decision: decision.Decision, Reason: decision.Reason}),
	}
	for _, req := range requirements {
		bodies = append(bodies, protocol.NewEvent(protocol.ConsentRequested{Requirement: req}))
	}
	if approver != nil {
		bodies = append(bodies, protocol.NewEvent(protocol.ConsentGranted{Actor: *approver}))
	}
	return chainEvents(runID, contractHash, nil, bodies, now)
}

// chainEvents links bodies after head (nil: from the genesis).
func chainEvents(runID, genesis string, head *store.Event, bodies []protocol.EventBody, now time.Time) ([]store.Event, error) {
	var last *protocol.ChainedEvent
	if head != nil {
		last = &protocol.ChainedEvent{Seq: head.Seq, Hash: head.Hash}
	}
	out := make([]store.Event, 0, len(bodies))
	for _, b := range bodies {
		e, err := protocol.NextEvent(last, genesis, b, now)
		if err != nil {
			return nil, fmt.Errorf("build event: %w", err)
		}
		se, err := toStoreEvent(runID, e)
		if err != nil {
			return nil, err
		}
		out = append(out, se)
		last = &e
	}
	return out, nil
}

func toStoreEvent(runID string, e protocol.ChainedEvent) (store.Event, error) {
	data, err := e.MarshalJSON()
	if err != nil {
		return store.Event{}, fmt.Errorf("encode event %d: %w", e.Seq, err)
	}
	return store.Event{RunID: runID, Seq: e.Seq, Hash: e.Hash, Prev: e.Prev, Type: e.Event.Type(), Data: data}, nil
}

func fromStoreEvents(events []store.Event) ([]protocol.ChainedEvent, error) {
	out := make([]protocol.ChainedEvent, len(events))
	for i, e := range events {
		if err := out[i].UnmarshalJSON(e.Data); err != nil {
			return nil, fmt.Errorf("stored event %d of %s: %w", e.Seq, e.RunID, err)
		}
	}
	return out, nil
}

// view renders a stored run for the API; full adds the contract, receipt
// and runner key id.
func (p *Plane) view(ctx context.Context, r store.Run, full bool) (*client.Run, error) {
	d, err := decodeDetails(r.Details)
	if err != nil {
		return nil, err
	}
	v := &client.Run{
		ID: r.ID, State: r.State, Agent: d.Agent, Pool: r.Pool, Prompt: r.Prompt, Isolation: r.Isolation,
		RequestedBy: d.RequestedBy, CreatedAt: protocol.FormatTime(r.CreatedAt), UpdatedAt: protocol.FormatTime(r.UpdatedAt),
		PolicyDecision: d.Decision, ConsentRequirements: d.Decision.ConsentRequirements, Approvals: d.Approvals,
		RunnerID: r.RunnerID, ContractHash: r.ContractHash, EventCount: r.EventCount, HasReceipt: r.HasReceipt,
	}
	if r.Cancel != nil {
		v.Cancellation = &client.Cancellation{Actor: protocol.ActorRef{Kind: r.Cancel.ActorKind, ID: r.Cancel.ActorID}, Reason: r.Cancel.Reason, At: protocol.FormatTime(r.Cancel.At)}
	}
	if r.Failure != nil {
		v.Failure = &client.Failure{Class: r.Failure.Class, Message: r.Failure.Message}
	}
	if d.Request != nil {
		ws := d.Request.Workspace
		v.Workspace = &ws
		v.Secrets = d.Request.Secrets
		v.AllowHosts = d.Request.AllowHosts
		b := d.Request.Budget
		v.Budget = &b
	}
	if !full {
		return v, nil
	}
	if len(r.Contract) > 0 {
		c, err := protocol.ParseContract(r.Contract)
		if err != nil {
			return nil, fmt.Errorf("stored contract of %s: %w", r.ID, err)
		}
		v.Contract = c
		if d.Request == nil {
			v.Secrets = make([]string, 0, len(c.Secrets))
			for _, s := range c.Secrets {
				v.Secrets = append(v.Secrets, s.Name)
			}
			v.AllowHosts = c.Network.AllowHosts
			b := c.Budget
			v.Budget = &b
		}
	}
	if len(r.Receipt) > 0 {
		rc, err := protocol.ParseReceipt(r.Receipt)
		if err != nil {
			return nil, fmt.Errorf("stored receipt of %s: %w", r.ID, err)
		}
		v.Receipt = rc
	}
	if r.RunnerID != "" {
		if rn, err := p.store.GetRunner(ctx, r.RunnerID); err == nil {
			v.RunnerKeyID = rn.KeyID
		}
	}
	return v, nil
}

// readableRun loads a run the caller may read: requesters only their own.
func (p *Plane) readableRun(r *http.Request) (store.Run, error) {
	run, err := p.store.GetRun(r.Context(), r.PathValue("id"))
	if errors.Is(err, store.ErrNotFound) {
		return run, errf(client.CodeNotFound, "no run %q", r.PathValue("id"))
	}
	if err != nil {
		return run, err
	}
	id := info(r).who
	if id.isRole(client.RoleRequester) && run.RequesterID != id.principal.ID {
		return run, errf(client.CodeForbidden, "requesters may read only the runs they requested")
	}
	return run, nil
}

func (p *Plane) handleGetRun(w http.ResponseWriter, r *http.Request) error {
	run, err := p.readableRun(r)
	if err != nil {
		return err
	}
	v, err := p.view(r.Context(), run, true)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, v)
	return nil
}

func encodeCursor(c store.RunCursor) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(c.At.UnixMilli(), 10) + ":" + c.ID))
}

func decodeCursor(s string) (*store.RunCursor, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return nil, err
	}
	msStr, id, ok := strings.Cut(string(b), ":")
	if !ok {
		return nil, errors.New("bad cursor")
	}
	n, err := strconv.ParseInt(msStr, 10, 64)
	if err != nil {
		return nil, err
	}
	return &store.RunCursor{At: time.UnixMilli(n).UTC(), ID: id}, nil
}

func (p *Plane) handleListRuns(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	f := store.RunFilter{State: q.Get("state"), Pool: q.Get("pool"), AgentKind: q.Get("agent"), RequesterName: q.Get("requestedBy"), Limit: 50}
	if f.State != "" && !slices.Contains(protocol.RunStates, f.State) {
		return errf(client.CodeBadRequest, "state %q is not one of %s", f.State, strings.Join(protocol.RunStates, ", "))
	}
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > 500 {
			return errf(client.CodeBadRequest, "limit must be 1..500")
		}
		f.Limit = n
	}
	if c := q.Get("cursor"); c != "" {
		cur, err := decodeCursor(c)
		if err != nil {
			return errf(client.CodeBadRequest, "invalid cursor")
		}
		f.Before = cur
	}
	id := info(r).who
	if id.isRole(client.RoleRequester) {
		f.RequesterID = id.principal.ID
	}
	limit := f.Limit
	f.Limit++
	runs, err := p.store.ListRuns(r.Context(), f)
	if err != nil {
		return err
	}
	out := client.RunList{Runs: []client.Run{}}
	for i, run := range runs {
		if i == limit {
			last := runs[limit-1]
			out.Next = encodeCursor(store.RunCursor{At: last.CreatedAt, ID: last.ID})
			break
		}
		v, err := p.view(r.Context(), run, false)
		if err != nil {
			return err
		}
		out.Runs = append(out.Runs, *v)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (p *Plane) handleEvents(w http.ResponseWriter, r *http.Request) error {
	run, err := p.readableRun(r)
	if err != nil {
		return err
	}
	after := int64(-1)
	if a := r.URL.Query().Get("after"); a != "" {
		if after, err = strconv.ParseInt(a, 10, 64); err != nil || after < -1 {
			return errf(client.CodeBadRequest, "after must be an integer ≥ -1")
		}
	}
	events, err := p.store.ListEvents(r.Context(), run.ID, after, 0)
	if err != nil {
		return err
	}
	parsed, err := fromStoreEvents(events)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, client.EventList{Events: parsed, State: run.State})
	return nil
}

// actorOf is the protocol actor of a principal.
func actorOf(pr *store.Principal) protocol.ActorRef {
	return protocol.ActorRef{Kind: pr.Kind, ID: pr.Name}
}

func (p *Plane) handleApprove(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	var dr client.DecisionRequest
	if err := p.decode(w, r, &dr, true); err != nil {
		return err
	}
	run, d, pr, err := p.pendingDecision(r)
	if err != nil {
		return err
	}
	req := d.Request
	pol, policyHash, err := p.currentPolicy(ctx)
	if err != nil {
		return err
	}
	stored, err := p.storedSecretNames(ctx)
	if err != nil {
		return err
	}
	ev := evaluate(pol, req, stored)
	if ev.decision.Decision == "deny" {
		return &apiError{code: client.CodePolicyDenied, msg: "the policy now denies this run; deny it instead", reasons: ev.decision.Reasons}
	}
	now := p.now()
	actor := actorOf(pr)
	c, err := p.issueContract(run.ID, d.RequestedBy, []protocol.ActorRef{actor}, req, ev, policyHash, now)
	if err != nil {
		return err
	}
	requirements := d.Decision.ConsentRequirements
	events, err := p.openingEvents(run.ID, c.hash, client.PolicyDecision{Decision: "ask", Reason: d.Decision.Reason}, requirements, &actor, now)
	if err != nil {
		return err
	}
	d.Approvals = append(d.Approvals, client.Approval{Actor: actor, Decision: "approved", Reason: dr.Reason, At: protocol.FormatTime(now)})
	d.Request = nil
	details, err := encodeDetails(d)
	if err != nil {
		return err
	}
	updated, err := p.store.ApproveRun(ctx, run.ID, store.Issue{Details: details, Contract: c.bytes, ContractHash: c.hash, ExpiresAt: c.expiresAt, SecretNames: c.secretNames, Events: events}, now)
	if err != nil {
		return err
	}
	p.log.Info("run approved", "runId", run.ID, "approver", pr.ID, "requestId", info(r).id)
	p.notify.Publish(poolTopic(updated.Pool))
	p.notify.Publish(runTopic(updated.ID))
	return p.writeRun(w, r, updated)
}

func (p *Plane) handleDeny(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	var dr client.DecisionRequest
	if err := p.decode(w, r, &dr, true); err != nil {
		return err
	}
	run, d, pr, err := p.pendingDecision(r)
	if err != nil {
		return err
	}
	now := p.now()
	d.Approvals = append(d.Approvals, client.Approval{Actor: actorOf(pr), Decision: "denied", Reason: dr.Reason, At: protocol.FormatTime(now)})
	details, err := encodeDetails(d)
	if err != nil {
		return err
	}
	msg := "denied by " + pr.Name
	if dr.Reason != "" {
		msg += ": " + dr.Reason
	}
	updated, err := p.store.EndPending(ctx, run.ID, store.PendingEnd{State: store.StateFailed, Details: details, Failure: &store.Failure{Class: protocol.FailurePolicyDenied, Message: msg}}, now)
	if err != nil {
		return err
	}
	p.metrics.ended(store.StateFailed, protocol.FailurePolicyDenied)
	p.notify.Publish(runTopic(updated.ID))
	return p.writeRun(w, r, updated)
}

// pendingDecision loads a run awaiting approval and checks that the caller
// may decide on it.
func (p *Plane) pendingDecision(r *http.Request) (store.Run, runDetails, *store.Principal, error) {
	pr := info(r).who.principal
	run, err := p.store.GetRun(r.Context(), r.PathValue("id"))
	if errors.Is(err, store.ErrNotFound) {
		return run, runDetails{}, nil, errf(client.CodeNotFound, "no run %q", r.PathValue("id"))
	}
	if err != nil {
		return run, runDetails{}, nil, err
	}
	if run.State != store.StateAwaitingApproval {
		return run, runDetails{}, nil, errf(client.CodeInvalidState, "run %s is %s, not awaiting approval", run.ID, run.State)
	}
	if run.RequesterID == pr.ID {
		return run, runDetails{}, nil, errf(client.CodeForbidden, "you requested this run; another approver must decide on it")
	}
	d, err := decodeDetails(run.Details)
	if err != nil {
		return run, d, nil, err
	}
	if d.Request == nil {
		return run, d, nil, fmt.Errorf("run %s awaits approval but has no stored request", run.ID)
	}
	if !mayApprove(d.Approvers, *pr) {
		return run, d, nil, errf(client.CodeForbidden, "the policy names the approvers of this run (%s); you are not one of them", strings.Join(d.Approvers, ", "))
	}
	return run, d, pr, nil
}

func (p *Plane) handleCancel(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	var dr client.DecisionRequest
	if err := p.decode(w, r, &dr, true); err != nil {
		return err
	}
	run, err := p.readableRun(r)
	if err != nil {
		return err
	}
	pr := info(r).who.principal
	if pr.Role != client.RoleAdmin && run.RequesterID != pr.ID {
		return errf(client.CodeForbidden, "only the run's requester or an admin may cancel it")
	}
	now := p.now()
	actor := actorOf(pr)
	updated, err := p.store.CancelRun(ctx, run.ID, store.Cancellation{ActorKind: actor.Kind, ActorID: actor.ID, Reason: dr.Reason, At: now}, now,
		func(run store.Run, head *store.Event) (store.End, error) {
			ev, err := chainEvents(run.ID, run.ContractHash, head, []protocol.EventBody{protocol.NewEvent(protocol.RunCancelled{Actor: actor})}, now)
			return store.End{Events: ev}, err
		})
	if err != nil {
		return err
	}
	if updated.State == store.StateCancelled && run.State != store.StateCancelled {
		p.metrics.ended(store.StateCancelled, "")
	}
	p.log.Info("run cancel requested", "runId", run.ID, "actor", pr.ID, "state", updated.State, "requestId", info(r).id)
	p.notify.Publish(runTopic(updated.ID))
	return p.writeRun(w, r, updated)
}

func (p *Plane) writeRun(w http.ResponseWriter, r *http.Request, run store.Run) error {
	v, err := p.view(r.Context(), run, true)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, v)
	return nil
}

// handleBundle is GET /v1/runs/{id}/bundle.
func (p *Plane) handleBundle(w http.ResponseWriter, r *http.Request) error {
	run, err := p.readableRun(r)
	if err != nil {
		return err
	}
	if !run.HasReceipt {
		return errf(client.CodeInvalidState, "run %s has no receipt yet (state %s)", run.ID, run.State)
	}
	b, err := p.bundle(r.Context(), run)
	if err != nil {
		return err
	}
	data, err := b.MarshalJSON()
	if err != nil {
		return fmt.Errorf("encode bundle: %w", err)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(data)))
	_, _ = w.Write(data)
	return nil
}

// bundle assembles a run's warrant.bundle.v1.
func (p *Plane) bundle(ctx context.Context, run store.Run) (*protocol.Bundle, error) {
	c, err := protocol.ParseContract(run.Contract)
	if err != nil {
		return nil, fmt.Errorf("stored contract of %s: %w", run.ID, err)
	}
	rc, err := protocol.ParseReceipt(run.Receipt)
	if err != nil {
		return nil, fmt.Errorf("stored receipt of %s: %w", run.ID, err)
	}
	stored, err := p.store.ListEvents(ctx, run.ID, -1, 0)
	if err != nil {
		return nil, err
	}
	events, err := fromStoreEvents(stored)
	if err != nil {
		return nil, err
	}
	pk, err := p.store.GetPlaneKey(ctx, c.Issuer.KeyID)
	if err != nil {
		return nil, fmt.Errorf("plane key %s of run %s: %w", c.Issuer.KeyID, run.ID, err)
	}
	rn, err := p.store.GetRunner(ctx, run.RunnerID)
	if err != nil {
		return nil, fmt.Errorf("runner of run %s: %w", run.ID, err)
	}
	return &protocol.Bundle{
		Version: protocol.VersionBundle, Contract: c, Receipt: rc, Events: events,
		Keys: protocol.BundleKeys{PlanePublicKeyPEM: pk.PublicKeyPEM, RunnerPublicKeyPEM: rn.PublicKeyPEM},
	}, nil
}
