package plane

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strings"

	"warrant.dev/warrant/client"
	"warrant.dev/warrant/internal/store"
	"warrant.dev/warrant/protocol"
)

// DefaultPolicy is installed on a plane's first start: pools "local" and
// "default", every agent kind, deny-by-default egress where requests may
// allowlist any host, budget ceilings of 25 USD and 60 minutes, no
// releasable secrets, no consent rules, retention 365/90 days.
func DefaultPolicy() protocol.Policy {
	return protocol.Policy{
		Version:     protocol.VersionPolicy,
		Runners:     protocol.PolicyRunners{AllowPools: []string{"local", "default"}},
		Agents:      protocol.PolicyAgents{Allow: slices.Clone(protocol.AgentKinds)},
		DataClasses: []protocol.DataClassRule{},
		Network:     protocol.NetworkPolicy{DefaultDeny: true, AllowHosts: []string{"*"}},
		Secrets:     protocol.PolicySecrets{Releasable: []protocol.SecretScopeRule{}},
		Budget:      protocol.PolicyBudget{MaxSpendUSD: 25, MaxDurationMin: 60},
		Consent:     []protocol.ConsentRule{},
		Retention:   protocol.Retention{ReceiptsDays: 365, ArtifactsDays: 90},
	}
}

// Consent rule kinds.
const (
	consentAnyRun        = "any-run"
	consentAgentKind     = "agent-kind"
	consentSecretRelease = "secret-release"
)

// validatePolicy checks a policy before it is installed.
func validatePolicy(p *protocol.Policy) []string {
	var problems []string
	for _, pool := range p.Runners.AllowPools {
		if pool == "" {
			problems = append(problems, "runners.allowPools has an empty pool name")
		}
	}
	for _, a := range p.Agents.Allow {
		if a != "*" && !slices.Contains(protocol.AgentKinds, a) {
			problems = append(problems, fmt.Sprintf("agents.allow: unknown agent kind %q", a))
		}
	}
	for _, h := range p.Network.AllowHosts {
		if err := checkHostPattern(h); err != nil {
			problems = append(problems, "network.allowHosts: "+err.Error())
		}
	}
	for i, r := range p.Secrets.Releasable {
		if r.Name == "" || len(r.Pools) == 0 {
			problems = append(problems, fmt.Sprintf("secrets.releasable[%d]: needs a name and at least one pool", i))
		}
	}
	for i, r := range p.DataClasses {
		if !validDataClass(r.DataClass) || len(r.AllowPools) == 0 {
			problems = append(problems, fmt.Sprintf("dataClasses[%d]: needs a dataClass name (a-z, 0-9, '-', '_', '.') and at least one pool in allowPools", i))
		}
	}
	if p.Budget.MaxSpendUSD < 0 || p.Budget.MaxDurationMin < 0 {
		problems = append(problems, "budget ceilings must not be negative")
	}
	for i, c := range p.Consent {
		switch c.When {
		case consentAnyRun, consentAgentKind, consentSecretRelease:
		default:
			problems = append(problems, fmt.Sprintf("consent[%d].when: %q is not any-run, agent-kind or secret-release", i, c.When))
		}
		if c.When == consentAgentKind && c.Match == "" {
			problems = append(problems, fmt.Sprintf("consent[%d]: agent-kind needs match", i))
		}
	}
	if p.Retention.ReceiptsDays < 0 || p.Retention.ArtifactsDays < 0 {
		problems = append(problems, "retention days must not be negative")
	}
	return problems
}

// putPolicy installs p as the current policy.
func (p *Plane) putPolicy(ctx context.Context, pol protocol.Policy) (*client.PolicyView, error) {
	doc, err := protocol.Canonical(pol)
	if err != nil {
		return nil, fmt.Errorf("encode policy: %w", err)
	}
	h := protocol.HashBytes(doc)
	if err := p.store.PutPolicy(ctx, store.PolicyRecord{Hash: h, Document: doc, CreatedAt: p.now()}); err != nil {
		return nil, err
	}
	parsed, err := protocol.ParsePolicy(doc)
	if err != nil {
		return nil, fmt.Errorf("re-read policy: %w", err)
	}
	return &client.PolicyView{Policy: *parsed, PolicyHash: h}, nil
}

// currentPolicy loads the policy in force and its hash.
func (p *Plane) currentPolicy(ctx context.Context) (*protocol.Policy, string, error) {
	rec, err := p.store.CurrentPolicy(ctx)
	if err != nil {
		return nil, "", fmt.Errorf("load policy: %w", err)
	}
	pol, err := protocol.ParsePolicy(rec.Document)
	if err != nil {
		return nil, "", fmt.Errorf("stored policy: %w", err)
	}
	return pol, rec.Hash, nil
}

// evaluation is the outcome of checking a run request against the policy.
type evaluation struct {
	decision  client.PolicyDecision
	secrets   []protocol.SecretClaim // with their scopes, in request order
	network   protocol.NetworkPolicy
	budget    protocol.Budget
	approvers []string // who may approve ("" entries never appear); nil: any approver
}

// matchName matches a policy list entry against a value: "*" matches
// anything, anything else matches exactly.
func matchName(list []string, v string) bool {
	return slices.Contains(list, "*") || slices.Contains(list, v)
}

// checkHostPattern accepts "*", "*.example.com" and plain host names.
func checkHostPattern(h string) error {
	if h == "*" {
		return nil
	}
	name := strings.TrimPrefix(h, "*.")
	if name == "" || strings.ContainsAny(name, "*/:@ \t") || strings.ToLower(name) != name {
		return fmt.Errorf("%q is not \"*\", \"*.domain\" or a lowercase host name", h)
	}
	return nil
}

// hostAllowed reports whether a requested allowlist entry is permitted by
// the policy's allowHosts: "*" permits any request; "*.example.com"
// permits example.com's subdomains (and the same wildcard); an exact name
// permits only itself.
func hostAllowed(policyHosts []string, host string) bool {
	for _, ph := range policyHosts {
		switch {
		case ph == "*":
			return true
		case ph == host:
			return true
		case strings.HasPrefix(ph, "*."):
			suffix := ph[1:] // ".example.com"
			if strings.HasSuffix(host, suffix) && len(host) > len(suffix) {
				return true
			}
		}
	}
	return false
}

// normalizeHost lowercases a requested host and checks its form; a
// request may name "*.domain" to allow a domain's subdomains.
func normalizeHost(h string) (string, error) {
	h = strings.ToLower(strings.TrimSpace(h))
	if h == "*" {
		return "", fmt.Errorf("a run may not allow every host; name the hosts it needs")
	}
	if err := checkHostPattern(h); err != nil {
		return "", err
	}
	return h, nil
}

// evaluate checks a (validated) request against pol. storedSecrets says
// which secret names the plane holds. Every reason for a deny is listed.
func evaluate(pol *protocol.Policy, req *client.RunRequest, storedSecrets map[string]bool) evaluation {
	var ev evaluation
	var deny []string
	if !matchName(pol.Agents.Allow, req.Agent.Kind) {
		deny = append(deny, fmt.Sprintf("agent %q is not allowed by the policy (agents.allow: %s)", req.Agent.Kind, strings.Join(pol.Agents.Allow, ", ")))
	}
	if !matchName(pol.Runners.AllowPools, req.Pool) {
		deny = append(deny, fmt.Sprintf("pool %q is not allowed by the policy (runners.allowPools: %s)", req.Pool, strings.Join(pol.Runners.AllowPools, ", ")))
	}
	for _, class := range runDataClasses(req) {
		for _, rule := range pol.DataClasses {
			if rule.DataClass == class && !matchName(rule.AllowPools, req.Pool) {
				deny = append(deny, fmt.Sprintf("data class %q may not be seen by pool %q (dataClasses: only %s)", class, req.Pool, strings.Join(rule.AllowPools, ", ")))
			}
		}
	}
	ev.network = protocol.NetworkPolicy{DefaultDeny: pol.Network.DefaultDeny, AllowHosts: []string{}}
	for _, h := range req.AllowHosts {
		if !hostAllowed(pol.Network.AllowHosts, h) {
			deny = append(deny, fmt.Sprintf("host %q is not in the policy's network.allowHosts", h))
			continue
		}
		ev.network.AllowHosts = append(ev.network.AllowHosts, h)
	}
	ev.secrets = []protocol.SecretClaim{}
	for _, name := range req.Secrets {
		rule, ok := releasable(pol, name, req.Pool)
		switch {
		case !ok:
			deny = append(deny, fmt.Sprintf("secret %q is not releasable to pool %q (secrets.releasable)", name, req.Pool))
		case !storedSecrets[name]:
			deny = append(deny, fmt.Sprintf("secret %q is not stored on the plane (warrant secrets put %s)", name, name))
		default:
			scope := rule.Scope
			if scope == "" {
				scope = "pool:" + req.Pool
			}
			ev.secrets = append(ev.secrets, protocol.SecretClaim{Name: name, Scope: scope})
		}
	}
	ev.budget = req.Budget
	if b := req.Budget.MaxSpendUSD; b != nil && pol.Budget.MaxSpendUSD > 0 && *b > pol.Budget.MaxSpendUSD {
		deny = append(deny, fmt.Sprintf("budget maxSpendUsd %v exceeds the policy ceiling %v", *b, pol.Budget.MaxSpendUSD))
	}
	if d := req.Budget.MaxDurationMin; d != nil && pol.Budget.MaxDurationMin > 0 && *d > pol.Budget.MaxDurationMin {
		deny = append(deny, fmt.Sprintf("budget maxDurationMin %v exceeds the policy ceiling %v", *d, pol.Budget.MaxDurationMin))
	}
	if ev.budget.MaxDurationMin == nil && pol.Budget.MaxDurationMin > 0 {
		d := pol.Budget.MaxDurationMin
		ev.budget.MaxDurationMin = &d
	}
	if len(deny) > 0 {
		ev.decision = client.PolicyDecision{Decision: "deny", Reason: deny[0], Reasons: deny}
		return ev
	}
	var reqs []string
	anyApprover := false
	var approvers []string
	for _, c := range pol.Consent {
		var requirement string
		switch c.When {
		case consentAnyRun:
			requirement = consentAnyRun
		case consentAgentKind:
			if c.Match == req.Agent.Kind {
				requirement = consentAgentKind + ":" + c.Match
			}
		case consentSecretRelease:
			for _, s := range ev.secrets {
				if c.Match == "" || c.Match == s.Name {
					requirement = consentSecretRelease + ":" + s.Name
					break
				}
			}
		}
		if requirement == "" || slices.Contains(reqs, requirement) {
			continue
		}
		reqs = append(reqs, requirement)
		if len(c.Approvers) == 0 {
			anyApprover = true
		}
		approvers = append(approvers, c.Approvers...)
	}
	// Declared data classes go into the reason, so the run's signed
	// policy.evaluated event records them.
	declared := ""
	if len(req.DataClasses) > 0 {
		declared = "; data classes declared: " + strings.Join(req.DataClasses, ", ")
	}
	if len(reqs) > 0 {
		ev.decision = client.PolicyDecision{Decision: "ask", Reason: "policy requires consent: " + strings.Join(reqs, ", ") + declared, ConsentRequirements: reqs}
		if !anyApprover {
			ev.approvers = approvers
		}
		return ev
	}
	ev.decision = client.PolicyDecision{Decision: "allow", Reason: "policy allows this run" + declared}
	return ev
}

// releasable finds the policy rule that makes secret name releasable to
// pool.
func releasable(pol *protocol.Policy, name, pool string) (protocol.SecretScopeRule, bool) {
	for _, r := range pol.Secrets.Releasable {
		if r.Name == name && matchName(r.Pools, pool) {
			return r, true
		}
	}
	return protocol.SecretScopeRule{}, false
}

// mayApprove reports whether a principal may approve under the approver
// list (nil: any approver or admin; otherwise principal names or
// "role:<role>").
func mayApprove(approvers []string, p store.Principal) bool {
	if approvers == nil {
		return true
	}
	return slices.Contains(approvers, p.Name) || slices.Contains(approvers, "role:"+p.Role)
}

// validBudget checks request budget values.
func validBudget(b protocol.Budget) error {
	for name, v := range map[string]*float64{"maxSpendUsd": b.MaxSpendUSD, "maxDurationMin": b.MaxDurationMin} {
		if v != nil && (*v <= 0 || math.IsInf(*v, 0) || math.IsNaN(*v)) {
			return fmt.Errorf("budget.%s must be a positive number", name)
		}
	}
	return nil
}
