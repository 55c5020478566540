package plane

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"warrant.dev/warrant/client"
	"warrant.dev/warrant/internal/store"
	"warrant.dev/warrant/protocol"
)

// --- identity ---

func (p *Plane) handleInfo(w http.ResponseWriter, r *http.Request) error {
	pub := p.key.Public()
	writeJSON(w, http.StatusOK, client.Info{Version: p.cfg.Version, PlaneKeyID: pub.ID(), PlanePublicKeyPEM: pub.PEM(), ServerTime: protocol.FormatTime(p.now())})
	return nil
}

func principalView(pr store.Principal, tokens []store.Token) client.Principal {
	v := client.Principal{ID: pr.ID, Name: pr.Name, Kind: pr.Kind, Role: pr.Role, CreatedAt: protocol.FormatTime(pr.CreatedAt), Disabled: !pr.DisabledAt.IsZero()}
	for _, t := range tokens {
		ti := client.TokenInfo{ID: t.ID, CreatedAt: protocol.FormatTime(t.CreatedAt)}
		if !t.LastUsedAt.IsZero() {
			ti.LastUsedAt = protocol.FormatTime(t.LastUsedAt)
		}
		if !t.RevokedAt.IsZero() {
			ti.RevokedAt = protocol.FormatTime(t.RevokedAt)
		}
		v.Tokens = append(v.Tokens, ti)
	}
	return v
}

func (p *Plane) handleWhoAmI(w http.ResponseWriter, r *http.Request) error {
	id := info(r).who
	writeJSON(w, http.StatusOK, client.WhoAmI{Principal: principalView(*id.principal, nil), TokenID: id.token.ID})
	return nil
}

// CreatePrincipal creates a principal and its first token. It is what
// POST /v1/principals does, exported for bootstrapping and tests.
func (p *Plane) CreatePrincipal(ctx context.Context, req client.CreatePrincipalRequest) (*client.CreatePrincipalResponse, error) {
	name := strings.TrimSpace(req.Name)
	if name == "" || len(name) > 200 || strings.ContainsAny(name, "\n\r\t") {
		return nil, errf(client.CodeBadRequest, "name must be 1-200 characters without control characters")
	}
	if !slices.Contains(client.Roles, req.Role) {
		return nil, errf(client.CodeBadRequest, "role %q is not one of %s", req.Role, strings.Join(client.Roles, ", "))
	}
	kind := req.Kind
	if kind == "" {
		kind = "human"
	}
	if kind != "human" && kind != "service" {
		return nil, errf(client.CodeBadRequest, "kind must be human or service")
	}
	now := p.now()
	pr := store.Principal{ID: newID("prn_"), Name: name, Kind: kind, Role: req.Role, CreatedAt: now}
	secret, hash := newToken(prefixPrincipal)
	tok := store.Token{ID: newID("tok_"), PrincipalID: pr.ID, Hash: hash, CreatedAt: now}
	if err := p.store.CreatePrincipal(ctx, pr, tok); errors.Is(err, store.ErrConflict) {
		return nil, errf(client.CodeConflict, "a principal named %q exists", name)
	} else if err != nil {
		return nil, err
	}
	p.log.Info("principal created", "principal", pr.ID, "name", pr.Name, "role", pr.Role)
	return &client.CreatePrincipalResponse{Principal: principalView(pr, []store.Token{tok}), Token: client.NewToken{ID: tok.ID, Secret: secret}}, nil
}

func (p *Plane) handleCreatePrincipal(w http.ResponseWriter, r *http.Request) error {
	var req client.CreatePrincipalRequest
	if err := p.decode(w, r, &req, false); err != nil {
		return err
	}
	resp, err := p.CreatePrincipal(r.Context(), req)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, resp)
	return nil
}

func (p *Plane) handleListPrincipals(w http.ResponseWriter, r *http.Request) error {
	prs, err := p.store.ListPrincipals(r.Context())
	if err != nil {
		return err
	}
	toks, err := p.store.ListTokens(r.Context(), "")
	if err != nil {
		return err
	}
	by := map[string][]store.Token{}
	for _, t := range toks {
		by[t.PrincipalID] = append(by[t.PrincipalID], t)
	}
	out := struct {
		Principals []client.Principal `json:"principals"`
	}{Principals: []client.Principal{}}
	for _, pr := range prs {
		out.Principals = append(out.Principals, principalView(pr, by[pr.ID]))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (p *Plane) handleCreateToken(w http.ResponseWriter, r *http.Request) error {
	var body struct{}
	if err := p.decode(w, r, &body, true); err != nil {
		return err
	}
	secret, hash := newToken(prefixPrincipal)
	tok := store.Token{ID: newID("tok_"), PrincipalID: r.PathValue("id"), Hash: hash, CreatedAt: p.now()}
	err := p.store.CreateToken(r.Context(), tok)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return errf(client.CodeNotFound, "no principal %q", tok.PrincipalID)
	case errors.Is(err, store.ErrRevoked):
		return errf(client.CodeInvalidState, "principal %s is disabled", tok.PrincipalID)
	case err != nil:
		return err
	}
	writeJSON(w, http.StatusCreated, client.NewToken{ID: tok.ID, Secret: secret})
	return nil
}

func (p *Plane) handleRevokeToken(w http.ResponseWriter, r *http.Request) error {
	if err := p.store.RevokeToken(r.Context(), r.PathValue("id"), p.now()); errors.Is(err, store.ErrNotFound) {
		return errf(client.CodeNotFound, "no token %q", r.PathValue("id"))
	} else if err != nil {
		return err
	}
	p.log.Info("token revoked", "token", r.PathValue("id"), "by", info(r).subject)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (p *Plane) handleDisablePrincipal(w http.ResponseWriter, r *http.Request) error {
	if err := p.store.DisablePrincipal(r.Context(), r.PathValue("id"), p.now()); errors.Is(err, store.ErrNotFound) {
		return errf(client.CodeNotFound, "no principal %q", r.PathValue("id"))
	} else if err != nil {
		return err
	}
	p.log.Info("principal disabled", "principal", r.PathValue("id"), "by", info(r).subject)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// --- runners ---

func (p *Plane) handleCreateEnrollToken(w http.ResponseWriter, r *http.Request) error {
	var req client.EnrollTokenRequest
	if err := p.decode(w, r, &req, false); err != nil {
		return err
	}
	if !poolPattern.MatchString(req.Pool) {
		return errf(client.CodeBadRequest, "pool %q: want 1-64 letters, digits, '.', '_' or '-'", req.Pool)
	}
	ttl := time.Duration(req.TTLSeconds) * time.Second
	if req.TTLSeconds == 0 {
		ttl = time.Hour
	}
	if ttl <= 0 || ttl > 30*24*time.Hour {
		return errf(client.CodeBadRequest, "ttlSeconds must be between 1 and 2592000")
	}
	secret, hash := newToken(prefixEnroll)
	now := p.now()
	et := store.EnrollToken{Hash: hash, Pool: req.Pool, CreatedBy: info(r).who.principal.ID, CreatedAt: now, ExpiresAt: now.Add(ttl)}
	if err := p.store.CreateEnrollToken(r.Context(), et); err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, client.EnrollToken{Token: secret, Pool: req.Pool, ExpiresAt: protocol.FormatTime(et.ExpiresAt)})
	return nil
}

func (p *Plane) handleEnroll(w http.ResponseWriter, r *http.Request) error {
	var req client.EnrollRequest
	if err := p.decode(w, r, &req, false); err != nil {
		return err
	}
	if !strings.HasPrefix(req.EnrollToken, prefixEnroll) {
		return errf(client.CodeUnauthenticated, "enrollToken is not an enroll token")
	}
	key, err := protocol.ParsePublicKeyPEM(req.PublicKeyPEM)
	if err != nil {
		return errf(client.CodeBadRequest, "publicKeyPem: %v", err)
	}
	if !key.VerifyMessage(client.EnrollProofMessage(req.EnrollToken), req.Proof) {
		return errf(client.CodeBadRequest, "proof does not verify under publicKeyPem: sign %q with the runner key", "warrant-enroll-v1:<enrollToken>")
	}
	tiers := req.Tiers
	if len(tiers) == 0 {
		tiers = []string{protocol.IsolationProcess}
	}
	for _, t := range tiers {
		if !slices.Contains(knownTiers, t) {
			return errf(client.CodeBadRequest, "tier %q is not one of %s", t, strings.Join(knownTiers, ", "))
		}
	}
	if len(req.Name) > 200 {
		return errf(client.CodeBadRequest, "name is longer than 200 characters")
	}
	now := p.now()
	secret, hash := newToken(prefixRunner)
	rn := store.Runner{ID: newID("rnr_"), Name: req.Name, Pool: req.Pool, KeyID: key.ID(), PublicKeyPEM: key.PEM(), Tiers: tiers, TokenHash: hash, EnrolledAt: now, LastSeenAt: now}
	err = p.store.EnrollRunner(r.Context(), tokenHash(req.EnrollToken), rn, now)
	switch {
	case errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrTokenUsed), errors.Is(err, store.ErrTokenExpired):
		return errf(client.CodeUnauthenticated, "the enroll token is invalid, already used or expired: ask an admin for a new one").because(err)
	case errors.Is(err, store.ErrInvalidState):
		return errf(client.CodeBadRequest, "the enroll token is for another pool than %q", req.Pool).because(err)
	case err != nil:
		return err
	}
	p.log.Info("runner enrolled", "runner", rn.ID, "pool", rn.Pool, "keyId", rn.KeyID, "tiers", tiers)
	pub := p.key.Public()
	writeJSON(w, http.StatusCreated, client.EnrollResponse{RunnerID: rn.ID, RunnerToken: secret, Pool: rn.Pool, PlaneKeyID: pub.ID(), PlanePublicKeyPEM: pub.PEM()})
	return nil
}

func (p *Plane) handleListRunners(w http.ResponseWriter, r *http.Request) error {
	list, err := p.store.ListRunners(r.Context())
	if err != nil {
		return err
	}
	out := struct {
		Runners []client.Runner `json:"runners"`
	}{Runners: []client.Runner{}}
	for _, rn := range list {
		v := client.Runner{ID: rn.ID, Name: rn.Name, Pool: rn.Pool, KeyID: rn.KeyID, Tiers: rn.Tiers, EnrolledAt: protocol.FormatTime(rn.EnrolledAt), InFlight: rn.InFlight}
		if !rn.LastSeenAt.IsZero() {
			v.LastSeenAt = protocol.FormatTime(rn.LastSeenAt)
		}
		if !rn.RevokedAt.IsZero() {
			v.RevokedAt = protocol.FormatTime(rn.RevokedAt)
		}
		out.Runners = append(out.Runners, v)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (p *Plane) handleRevokeRunner(w http.ResponseWriter, r *http.Request) error {
	if err := p.store.RevokeRunner(r.Context(), r.PathValue("id"), p.now()); errors.Is(err, store.ErrNotFound) {
		return errf(client.CodeNotFound, "no runner %q", r.PathValue("id"))
	} else if err != nil {
		return err
	}
	p.log.Info("runner revoked", "runner", r.PathValue("id"), "by", info(r).subject)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// --- policy and secrets ---

func (p *Plane) handleGetPolicy(w http.ResponseWriter, r *http.Request) error {
	pol, h, err := p.currentPolicy(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, client.PolicyView{Policy: *pol, PolicyHash: h})
	return nil
}

func (p *Plane) handlePutPolicy(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		Policy *protocol.Policy `json:"policy"`
	}
	if err := p.decode(w, r, &req, false); err != nil {
		return err
	}
	if req.Policy == nil {
		return errf(client.CodeBadRequest, "policy is required")
	}
	if problems := validatePolicy(req.Policy); len(problems) > 0 {
		return &apiError{code: client.CodeBadRequest, msg: "invalid policy", reasons: problems}
	}
	v, err := p.putPolicy(r.Context(), *req.Policy)
	if err != nil {
		return err
	}
	p.log.Info("policy replaced", "policyHash", v.PolicyHash, "by", info(r).subject)
	writeJSON(w, http.StatusOK, v)
	return nil
}

// MaxSecretBytes caps one secret value.
const MaxSecretBytes = 64 << 10

func secretView(s store.Secret) client.SecretInfo {
	return client.SecretInfo{Name: s.Name, CreatedAt: protocol.FormatTime(s.CreatedAt), UpdatedAt: protocol.FormatTime(s.UpdatedAt)}
}

func (p *Plane) handlePutSecret(w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("name")
	if !secretPattern.MatchString(name) {
		return errf(client.CodeBadRequest, "secret name %q: want a letter or '_' then letters, digits, '_', '.' or '-'", name)
	}
	var req client.PutSecretRequest
	if err := p.decode(w, r, &req, false); err != nil {
		return err
	}
	if req.Value == "" || len(req.Value) > MaxSecretBytes {
		return errf(client.CodeBadRequest, "value must be 1 to %d bytes", MaxSecretBytes)
	}
	sealed, err := p.sealer.seal(name, []byte(req.Value))
	if err != nil {
		return err
	}
	now := p.now()
	s, err := p.store.PutSecret(r.Context(), store.Secret{Name: name, Ciphertext: sealed, CreatedAt: now, UpdatedAt: now})
	if err != nil {
		return err
	}
	p.log.Info("secret stored", "secret", name, "by", info(r).subject)
	writeJSON(w, http.StatusOK, secretView(s))
	return nil
}

func (p *Plane) handleListSecrets(w http.ResponseWriter, r *http.Request) error {
	list, err := p.store.ListSecrets(r.Context())
	if err != nil {
		return err
	}
	out := struct {
		Secrets []client.SecretInfo `json:"secrets"`
	}{Secrets: []client.SecretInfo{}}
	for _, s := range list {
		out.Secrets = append(out.Secrets, secretView(s))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (p *Plane) handleDeleteSecret(w http.ResponseWriter, r *http.Request) error {
	if err := p.store.DeleteSecret(r.Context(), r.PathValue("name")); errors.Is(err, store.ErrNotFound) {
		return errf(client.CodeNotFound, "no secret %q", r.PathValue("name"))
	} else if err != nil {
		return err
	}
	p.log.Info("secret deleted", "secret", r.PathValue("name"), "by", info(r).subject)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// --- export and retention ---

func (p *Plane) handleExport(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	var since time.Time
	if s := r.URL.Query().Get("since"); s != "" {
		t, err := protocol.ParseTime(s)
		if err != nil {
			return errf(client.CodeBadRequest, "since: %v", err)
		}
		since = t
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	enc := newLineWriter(w)
	var cur *store.RunCursor
	for {
		runs, err := p.store.RunsUpdatedSince(ctx, since, cur, 100)
		if err != nil {
			return fmt.Errorf("export: %w", err)
		}
		for _, run := range runs {
			v, err := p.view(ctx, run, true)
			if err != nil {
				return err
			}
			rc := v.Receipt
			v.Receipt = nil
			if err := enc.line(client.ExportLine{Type: client.ExportRun, RunID: run.ID, Run: v}); err != nil {
				return err
			}
			stored, err := p.store.ListEvents(ctx, run.ID, -1, 0)
			if err != nil {
				return err
			}
			events, err := fromStoreEvents(stored)
			if err != nil {
				return err
			}
			for i := range events {
				if err := enc.line(client.ExportLine{Type: client.ExportEvent, RunID: run.ID, Event: &events[i]}); err != nil {
					return err
				}
			}
			if rc != nil {
				if err := enc.line(client.ExportLine{Type: client.ExportReceipt, RunID: run.ID, Receipt: rc}); err != nil {
					return err
				}
			}
		}
		if len(runs) < 100 {
			return nil
		}
		last := runs[len(runs)-1]
		cur = &store.RunCursor{At: last.UpdatedAt, ID: last.ID}
	}
}

func (p *Plane) handleRetention(w http.ResponseWriter, r *http.Request) error {
	recs, err := p.store.ListRetention(r.Context(), 1000)
	if err != nil {
		return err
	}
	out := struct {
		Records []client.RetentionRecord `json:"records"`
	}{Records: []client.RetentionRecord{}}
	for _, rec := range recs {
		out.Records = append(out.Records, client.RetentionRecord{At: protocol.FormatTime(rec.At), Kind: rec.Kind, ID: rec.ID, Reason: rec.Reason, Bytes: rec.Bytes})
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}
