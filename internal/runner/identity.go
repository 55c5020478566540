package runner

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"warrant.dev/warrant/client"
	"warrant.dev/warrant/internal/fsutil"
	"warrant.dev/warrant/protocol"
)

// Files in the runner's data directory, all mode 0600.
const (
	privateKeyFile = "runner.key.pem"
	publicKeyFile  = "runner.pub.pem"
	identityFile   = "identity.json"
)

// Identity is what enrollment gives a runner, kept in identity.json. The
// private key stays in its own file and is never sent anywhere.
type Identity struct {
	RunnerID          string `json:"runnerId"`
	RunnerToken       string `json:"runnerToken"`
	Pool              string `json:"pool"`
	Name              string `json:"name,omitempty"`
	KeyID             string `json:"keyId"`
	PlaneURL          string `json:"planeUrl"`
	PlaneKeyID        string `json:"planeKeyId,omitempty"`
	PlanePublicKeyPEM string `json:"planePublicKeyPem,omitempty"`
	EnrolledAt        string `json:"enrolledAt"`
}

// Enrollment errors callers branch on.
var (
	// ErrNotEnrolled: no identity in the data directory and no enroll
	// token to make one.
	ErrNotEnrolled = errors.New("runner is not enrolled and no enroll token was given")
	// ErrEnrollRefused: the plane refused the enroll token (invalid, used
	// or expired). It is never retried.
	ErrEnrollRefused = errors.New("the plane refused the enroll token")
	// ErrPlaneUnreachable: enrollment gave up after retrying while the
	// plane could not be reached.
	ErrPlaneUnreachable = errors.New("the plane could not be reached")
)

// enrollBackoff paces enrollment retries while the plane is unreachable.
var enrollBackoff = client.Backoff{Initial: 250 * time.Millisecond, Max: 2 * time.Second}

// loadOrCreateKey reads the runner key, or generates one and writes both
// halves (0600) before anything is sent, so a crash after enrollment never
// leaves a registered key whose private half was lost.
func loadOrCreateKey(dir string) (*protocol.PrivateKey, error) {
	privPath := filepath.Join(dir, privateKeyFile)
	data, err := os.ReadFile(privPath)
	switch {
	case err == nil:
		key, err := protocol.ParsePrivateKeyPEM(string(data))
		if err != nil {
			return nil, fmt.Errorf("runner key %s: %w", privPath, err)
		}
		return key, nil
	case !errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("read runner key: %w", err)
	}
	key, err := protocol.GenerateKey(nil)
	if err != nil {
		return nil, fmt.Errorf("generate runner key: %w", err)
	}
	pemText, err := key.PEM()
	if err != nil {
		return nil, err
	}
	if err := fsutil.WriteFileAtomic(privPath, []byte(pemText), 0o600); err != nil {
		return nil, err
	}
	if err := fsutil.WriteFileAtomic(filepath.Join(dir, publicKeyFile), []byte(key.Public().PEM()), 0o600); err != nil {
		return nil, err
	}
	return key, nil
}

func loadIdentity(dir string) (*Identity, error) {
	data, err := os.ReadFile(filepath.Join(dir, identityFile))
	if err != nil {
		return nil, err
	}
	var id Identity
	if err := json.Unmarshal(data, &id); err != nil {
		return nil, fmt.Errorf("runner identity %s: %w", filepath.Join(dir, identityFile), err)
	}
	if id.RunnerID == "" || id.RunnerToken == "" {
		return nil, fmt.Errorf("runner identity %s is incomplete", filepath.Join(dir, identityFile))
	}
	return &id, nil
}

// enroll registers the key with the plane, retrying while the plane is
// unreachable (transport errors, or the plane answering that it is not
// ready) for up to budget. A refusal of the token is returned at once.
func (r *Runner) enroll(ctx context.Context, key *protocol.PrivateKey) (*Identity, error) {
	if r.opts.EnrollToken == "" {
		return nil, ErrNotEnrolled
	}
	req := client.EnrollRequest{
		EnrollToken:  r.opts.EnrollToken,
		PublicKeyPEM: key.Public().PEM(),
		Pool:         r.opts.Pool,
		Name:         r.opts.Name,
		Tiers:        r.tiers,
		Proof:        key.SignMessage(client.EnrollProofMessage(r.opts.EnrollToken)),
	}
	deadline := time.Now().Add(r.opts.EnrollRetry)
	for attempt := 0; ; attempt++ {
		resp, err := r.plane.Enroll(ctx, req)
		if err == nil {
			return &Identity{
				RunnerID:          resp.RunnerID,
				RunnerToken:       resp.RunnerToken,
				Pool:              resp.Pool,
				Name:              r.opts.Name,
				KeyID:             key.Public().ID(),
				PlaneURL:          r.plane.BaseURL(),
				PlaneKeyID:        resp.PlaneKeyID,
				PlanePublicKeyPEM: resp.PlanePublicKeyPEM,
				EnrolledAt:        protocol.FormatTime(time.Now()),
			}, nil
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("enroll: %w", context.Cause(ctx))
		}
		var api *client.APIError
		if errors.As(err, &api) && api.Code != client.CodeUnavailable {
			if api.Code == client.CodeUnauthenticated {
				return nil, fmt.Errorf("%w: %s; ask an admin for a new one (warrant runner enroll-token --pool %s)", ErrEnrollRefused, api.Message, r.opts.Pool)
			}
			return nil, fmt.Errorf("enroll: %w", err)
		}
		wait := enrollBackoff.Wait(attempt)
		if time.Now().Add(wait).After(deadline) {
			return nil, fmt.Errorf("%w at %s after retrying for %s: %v", ErrPlaneUnreachable, r.plane.BaseURL(), r.opts.EnrollRetry, err)
		}
		r.log.Warn("plane not reachable; retrying enrollment", "plane", r.plane.BaseURL(), "err", err, "retry_in", wait.Round(time.Millisecond))
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("enroll: %w", context.Cause(ctx))
		case <-t.C:
		}
	}
}

func identityPath(dir string) string { return filepath.Join(dir, identityFile) }

func marshalIdentity(id *Identity) ([]byte, error) {
	data, err := json.MarshalIndent(id, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode runner identity: %w", err)
	}
	return append(data, '\n'), nil
}
