package protocol

import (
	"fmt"
)

// ReceiptInput is what a runner knows at the end of a run, from which the
// receipt is derived.
type ReceiptInput struct {
	Contract       *Contract
	Events         []ChainedEvent // the whole chain, terminal event last
	Runner         RunnerIdentity
	DiffHash       string   // "" when the run produced no diff
	ArtifactHashes []string // uploaded artifacts, in upload order
	CostUSD        *float64
}

// BuildReceipt derives an unsigned receipt from the contract and the event
// chain, exactly as the original runner does: the status comes from the
// terminal event, secretsReleased copies the secret.released events with
// their ts, networkAccessed lists the distinct (host, decision) pairs
// grouped by host in first-seen order, boundaryDisclosures lists every
// boundary.crossed event in order and modelsUsed the distinct
// model.called pairs.
func BuildReceipt(in ReceiptInput) (*Receipt, error) {
	if in.Contract == nil {
		return nil, fmt.Errorf("build receipt: no contract")
	}
	if len(in.Events) == 0 {
		return nil, fmt.Errorf("build receipt: %w", ErrChainEmpty)
	}
	contractHash, err := in.Contract.Hash()
	if err != nil {
		return nil, fmt.Errorf("build receipt: %w", err)
	}
	manifestHash, err := in.Contract.ManifestHash()
	if err != nil {
		return nil, fmt.Errorf("build receipt: %w", err)
	}
	head := in.Events[len(in.Events)-1]
	status, ok := statusOfTerminal(head.Event.Type())
	if !ok {
		return nil, fmt.Errorf("build receipt: last event is %q, not a terminal event", head.Event.Type())
	}
	d, err := deriveFromEvents(in.Events)
	if err != nil {
		return nil, fmt.Errorf("build receipt: %w", err)
	}
	artifacts := in.ArtifactHashes
	if artifacts == nil {
		artifacts = []string{}
	}
	return &Receipt{
		Version:             VersionReceipt,
		RunID:               in.Contract.RunID,
		ContractHash:        contractHash,
		Runner:              in.Runner,
		StartedAt:           in.Events[0].TS,
		EndedAt:             head.TS,
		Status:              status,
		EventsHead:          head.Hash,
		EventCount:          int64(len(in.Events)),
		WorkspaceIn:         WorkspaceIn{BaseRef: in.Contract.Workspace.BaseRef, ManifestHash: manifestHash},
		WorkspaceOut:        WorkspaceOut{DiffHash: in.DiffHash, ArtifactHashes: artifacts},
		SecretsReleased:     d.secrets,
		NetworkAccessed:     d.network,
		ModelsUsed:          d.models,
		BoundaryDisclosures: d.disclosures,
		CostUSD:             in.CostUSD,
		Signatures:          []Signature{},
	}, nil
}

// statusOfTerminal maps a terminal event type to the receipt status.
func statusOfTerminal(eventType string) (string, bool) {
	switch eventType {
	case EventRunCompleted:
		return StateCompleted, true
	case EventRunFailed:
		return StateFailed, true
	case EventRunCancelled:
		return StateCancelled, true
	}
	return "", false
}

// derived holds the receipt lists implied by an event chain.
type derived struct {
	secrets     []SecretRelease
	network     []NetworkAccess
	models      []ModelUsage
	disclosures []Disclosure
	artifacts   map[string]bool // hashes named by artifact.created
}

func deriveFromEvents(events []ChainedEvent) (derived, error) {
	d := derived{
		secrets:     []SecretRelease{},
		network:     []NetworkAccess{},
		models:      []ModelUsage{},
		disclosures: []Disclosure{},
		artifacts:   map[string]bool{},
	}
	var hostOrder []string
	decisions := map[string][]string{}
	seenModel := map[ModelUsage]bool{}
	for i := range events {
		e := &events[i]
		switch e.Event.Type() {
		case EventSecretReleased, EventNetworkConnected, EventModelCalled, EventBoundaryCrossed, EventArtifactCreated:
		default:
			continue
		}
		p, err := e.Event.Payload()
		if err != nil {
			return d, fmt.Errorf("event seq %d: %w", e.Seq, err)
		}
		switch p := p.(type) {
		case SecretReleased:
			d.secrets = append(d.secrets, SecretRelease{Name: p.Name, Scope: p.Scope, TS: e.TS})
		case NetworkConnected:
			if _, seen := decisions[p.Host]; !seen {
				hostOrder = append(hostOrder, p.Host)
			}
			if !containsString(decisions[p.Host], p.Decision) {
				decisions[p.Host] = append(decisions[p.Host], p.Decision)
			}
		case ModelCalled:
			m := ModelUsage(p)
			if !seenModel[m] {
				seenModel[m] = true
				d.models = append(d.models, m)
			}
		case BoundaryCrossed:
			d.disclosures = append(d.disclosures, Disclosure(p))
		case ArtifactCreated:
			d.artifacts[p.Hash] = true
		}
	}
	for _, h := range hostOrder {
		for _, dec := range decisions[h] {
			d.network = append(d.network, NetworkAccess{Host: h, Decision: dec})
		}
	}
	return d, nil
}

func containsString(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
