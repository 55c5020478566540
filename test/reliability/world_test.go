package reliability_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"warrant.dev/warrant/client"
	"warrant.dev/warrant/internal/testutil"
	"warrant.dev/warrant/protocol"
)

// secretEnv is the environment variable (and plane secret name) the
// suite's secret-using runs read.
const secretEnv = "REL_API_KEY"

// world is one scenario's plane, its clients, a workspace, a secret and
// the marker file its runs append to.
type world struct {
	t        testing.TB
	pp       *planeProc
	rl       *relay         // between every client but the checker and the plane; nil: direct
	req      *client.Client // a requester, through the relay when there is one
	reqToken string
	ws       protocol.Manifest
	markers  string
	secret   string
}

type worldConfig struct {
	plane    planeConfig
	relay    bool // runners (and the requester, unless directRequester) reach the plane through a relay
	noSecret bool

	directRequester bool
}

func newWorld(t testing.TB, name string, cfg worldConfig) *world {
	t.Helper()
	w := &world{t: t, markers: filepath.Join(suiteDir(t, name+"-markers"), "executions.log")}
	w.pp = startPlane(t, name+"-plane", cfg.plane)
	url := w.pp.url
	if cfg.relay {
		w.rl = startRelay(t, w.pp.addr)
		if !cfg.directRequester {
			url = w.rl.url()
		}
	}
	ctx := bg(t)
	token := w.pp.principal(t, name+"@test", client.RoleRequester)
	w.reqToken = token
	w.req = newClient(t, url, token)
	w.ws = testutil.UploadWorkspace(t, newClient(t, w.pp.url, token), map[string]string{
		"README.md": "# reliability\n", "main.go": "package main\n\nfunc main() {}\n",
	})
	if !cfg.noSecret {
		w.secret = newSecret(t, name+" plane secret "+secretEnv)
		if _, err := w.pp.admin.PutSecret(ctx, secretEnv, w.secret); err != nil {
			t.Fatalf("put secret: %v", err)
		}
		pv, err := w.pp.admin.GetPolicy(ctx)
		if err != nil {
			t.Fatal(err)
		}
		pol := pv.Policy
		pol.Secrets.Releasable = append(pol.Secrets.Releasable, protocol.SecretScopeRule{Name: secretEnv, Scope: "pool:default", Pools: []string{"default"}})
		if _, err := w.pp.admin.PutPolicy(ctx, pol); err != nil {
			t.Fatalf("put policy: %v", err)
		}
	}
	return w
}

// runnerURL is where the world's runners connect.
func (w *world) runnerURL() string {
	if w.rl != nil {
		return w.rl.url()
	}
	return w.pp.url
}

func (w *world) startRunner(name string, concurrency int, extra ...string) *runnerProc {
	w.t.Helper()
	return startRunner(w.t, name, runnerConfig{planeURL: w.runnerURL(), enrollToken: w.pp.enrollToken(w.t, "default"), concurrency: concurrency, extra: extra})
}

// runSpec is one run to submit: its script body (wrapped in marker
// lines) and whether it gets the secret.
type runSpec struct {
	body      string
	secret    bool
	isolation string
	noMarkers bool // the script is body alone (namespace sessions cannot reach the marker file)
}

// Bodies of the suite's runs.
const (
	bodyEcho   = "echo hi"
	bodyBig    = "head -c 1500000 /dev/urandom | base64 > big-output.txt" // a ~2 MB diff to upload
	bodySecret = `echo "the key is $` + secretEnv + `"; printf %s "$` + secretEnv + `" | base64; echo "$` + secretEnv + `" > leaked-key.txt`
)

func bodySleep(d time.Duration) string { return fmt.Sprintf("sleep %.3f", d.Seconds()) }

// submit submits a run, retrying while the plane is unreachable. Each
// attempt carries a fresh marker token: an attempt whose reply was lost
// may still have made a run, and that run must be told apart.
func (w *world) submit(ctx context.Context, spec runSpec) (client.Run, string, error) {
	var lastErr error
	for attempt := 0; attempt < 100; attempt++ {
		tok := newToken()
		prompt := markerScript(w.markers, tok, spec.body)
		if spec.noMarkers {
			tok, prompt = "", spec.body
		}
		req := client.RunRequest{
			Agent: protocol.AgentSpec{Kind: protocol.AgentCommand}, Pool: "default", Workspace: w.ws,
			Prompt: prompt, Isolation: spec.isolation,
		}
		if spec.secret {
			req.Secrets = []string{secretEnv}
		}
		resp, err := w.req.SubmitRun(ctx, req)
		if err == nil {
			return *resp.Run, tok, nil
		}
		lastErr = err
		if !client.IsTransient(err) || ctx.Err() != nil {
			return client.Run{}, "", err
		}
		time.Sleep(client.DefaultBackoff.Wait(min(attempt, 4)))
	}
	return client.Run{}, "", fmt.Errorf("submit: gave up: %w", lastErr)
}

// waitEnd polls a run until it ends, riding out plane restarts.
func (w *world) waitEnd(ctx context.Context, c *client.Client, id string, d time.Duration) (client.Run, error) {
	deadline := time.Now().Add(d)
	for {
		r, err := c.GetRun(ctx, id)
		if err == nil && isTerminal(r.State) {
			return *r, nil
		}
		if err != nil && !client.IsTransient(err) {
			return client.Run{}, err
		}
		if time.Now().After(deadline) {
			if err == nil {
				err = errors.New("still " + r.State)
			}
			return client.Run{}, fmt.Errorf("run %s did not end within %s: %w", id, d, err)
		}
		select {
		case <-ctx.Done():
			return client.Run{}, ctx.Err()
		case <-time.After(150 * time.Millisecond):
		}
	}
}

// cancel cancels a run, retrying while the plane is unreachable.
func (w *world) cancel(ctx context.Context, id string) error {
	return client.Retry(ctx, client.DefaultBackoff, 30*time.Second, func(ctx context.Context) error {
		_, err := w.req.Cancel(ctx, id, "reliability suite")
		return err
	})
}
