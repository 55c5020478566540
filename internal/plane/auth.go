package plane

import (
	"errors"
	"math"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"warrant.dev/warrant/client"
	"warrant.dev/warrant/internal/store"
)

// identity is who made a request.
type identity struct {
	principal *store.Principal // principal tokens
	token     *store.Token
	runner    *store.Runner // runner tokens
	claim     *store.Run    // claim tokens: the claimed run
	claimHash string
	claimErr  error // claim routes that accept a used claim (complete) see why
}

func (id *identity) subject() string {
	switch {
	case id.principal != nil:
		return id.principal.ID
	case id.runner != nil:
		return id.runner.ID
	case id.claim != nil:
		return "claim:" + id.claim.ID
	}
	return ""
}

func (id *identity) role() string {
	if id != nil && id.principal != nil {
		return id.principal.Role
	}
	return ""
}

func (id *identity) isRole(roles ...string) bool {
	r := id.role()
	return r != "" && slices.Contains(roles, r)
}

// authRule says who may call a route.
type authRule struct {
	public      bool     // no token needed
	roles       []string // principal roles allowed (admin is always allowed)
	anyRole     bool     // any principal
	runner      bool     // runner tokens
	claim       bool     // claim tokens
	claimUsedOK bool     // a used-up claim token still authenticates (idempotent completion)
}

var (
	authPublic         = authRule{public: true}
	authAnyPrincipal   = authRule{anyRole: true}
	authRunner         = authRule{runner: true}
	authClaim          = authRule{claim: true}
	authClaimComplete  = authRule{claim: true, claimUsedOK: true}
	authAdmin          = authRule{roles: []string{client.RoleAdmin}}
	authAdminAuditor   = authRule{roles: []string{client.RoleAdmin, client.RoleAuditor}}
	authRunnersRead    = authRule{roles: []string{client.RoleAdmin, client.RoleAuditor, client.RoleApprover}}
	authRequester      = authRule{roles: []string{client.RoleAdmin, client.RoleRequester}}
	authApprover       = authRule{roles: []string{client.RoleAdmin, client.RoleApprover}}
	authBlobWrite      = authRule{roles: []string{client.RoleAdmin, client.RoleRequester}, claim: true}
	authBlobRead       = authRule{anyRole: true, claim: true}
	errNoToken         = errf(client.CodeUnauthenticated, "missing bearer token: send Authorization: Bearer <token>")
	errBadToken        = errf(client.CodeUnauthenticated, "invalid, revoked or expired token")
	errWrongTokenKind  = errf(client.CodeForbidden, "this kind of token may not call this route")
	errRoleNotAllowed  = errf(client.CodeForbidden, "your role may not do this")
	errClaimOtherRun   = errf(client.CodeForbidden, "this claim token belongs to another run")
	tokenTouchInterval = time.Minute
)

func bearer(r *http.Request) string {
	h := r.Header.Get("Authorization")
	if len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
		return strings.TrimSpace(h[7:])
	}
	return ""
}

// authenticate resolves the request's token and checks it against rule.
func (p *Plane) authenticate(r *http.Request, rule authRule) (*identity, error) {
	if rule.public {
		return nil, nil
	}
	tok := bearer(r)
	if tok == "" {
		return nil, errNoToken
	}
	ctx := r.Context()
	now := p.now()
	switch {
	case strings.HasPrefix(tok, prefixPrincipal):
		t, pr, err := p.store.LookupToken(ctx, tokenHash(tok))
		if errors.Is(err, store.ErrNotFound) {
			return nil, errBadToken
		}
		if err != nil {
			return nil, err
		}
		if !t.RevokedAt.IsZero() || !pr.DisabledAt.IsZero() {
			return nil, errBadToken
		}
		if now.Sub(t.LastUsedAt) > tokenTouchInterval {
			if err := p.store.TouchToken(ctx, t.ID, now); err != nil {
				p.log.Warn("record token use", "err", err)
			}
		}
		id := &identity{principal: &pr, token: &t}
		if !rule.anyRole && !(pr.Role == client.RoleAdmin || slices.Contains(rule.roles, pr.Role)) {
			if len(rule.roles) == 0 {
				return id, errWrongTokenKind
			}
			return id, errRoleNotAllowed
		}
		return id, nil
	case strings.HasPrefix(tok, prefixRunner):
		rn, err := p.store.LookupRunner(ctx, tokenHash(tok))
		if errors.Is(err, store.ErrNotFound) {
			return nil, errBadToken
		}
		if err != nil {
			return nil, err
		}
		if !rn.RevokedAt.IsZero() {
			return nil, errBadToken
		}
		if !rule.runner {
			return &identity{runner: &rn}, errWrongTokenKind
		}
		return &identity{runner: &rn}, nil
	case strings.HasPrefix(tok, prefixClaim):
		h := tokenHash(tok)
		run, err := p.store.GetClaim(ctx, h, now)
		if errors.Is(err, store.ErrNotFound) {
			return nil, errBadToken
		}
		if !rule.claim {
			return nil, errWrongTokenKind
		}
		id := &identity{claim: &run, claimHash: h}
		// A claim token works only for its own run.
		if rid := r.PathValue("id"); rid != "" && run.ID != "" && rid != run.ID {
			return nil, errClaimOtherRun
		}
		if err != nil {
			if rule.claimUsedOK && errors.Is(err, store.ErrClaimUsed) {
				id.claimErr = err
				return id, nil
			}
			return nil, err
		}
		return id, nil
	}
	return nil, errBadToken
}

// --- rate limits ---

// rateLimiter is a token bucket per subject (principal, runner or claim;
// the client IP for unauthenticated requests).
type rateLimiter struct {
	rate  float64
	burst float64
	mu    sync.Mutex
	b     map[string]*bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

func newRateLimiter(rate float64, burst int) *rateLimiter {
	return &rateLimiter{rate: rate, burst: float64(burst), b: map[string]*bucket{}}
}

// allow takes one token for key, or says how long until one is available.
func (l *rateLimiter) allow(key string, now time.Time) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.b[key]
	if b == nil {
		b = &bucket{tokens: l.burst, last: now}
		l.b[key] = b
	}
	b.tokens = math.Min(l.burst, b.tokens+now.Sub(b.last).Seconds()*l.rate)
	b.last = now
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	return false, time.Duration((1 - b.tokens) / l.rate * float64(time.Second))
}

// sweep forgets buckets that have refilled, bounding memory.
func (l *rateLimiter) sweep(now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for k, b := range l.b {
		if b.tokens+now.Sub(b.last).Seconds()*l.rate >= l.burst {
			delete(l.b, k)
		}
	}
}

func (p *Plane) limit(w http.ResponseWriter, r *http.Request, ri *reqInfo) error {
	key := ri.subject
	if key == "" {
		key = "ip:" + clientIP(r)
	}
	ok, wait := p.limiter.allow(key, time.Now())
	if ok {
		return nil
	}
	secs := int(math.Ceil(wait.Seconds()))
	w.Header().Set("Retry-After", itoa(max(secs, 1)))
	return errf(client.CodeRateLimited, "too many requests; retry after %d s", max(secs, 1))
}

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	var b [20]byte
	i := len(b)
	for n > 0 {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
	}
	return string(b[i:])
}
