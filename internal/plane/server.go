package plane

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"time"

	"warrant.dev/warrant/client"
	"warrant.dev/warrant/internal/plane/ui"
)

// Handler returns the plane's HTTP API and, under /ui/, its web UI (a
// client of the API, served in memory; see package ui).
func (p *Plane) Handler() http.Handler {
	mux := http.NewServeMux()
	rt := func(pattern string, rule authRule, h handlerFunc) { p.route(mux, pattern, rule, h) }

	rt("GET /healthz", authPublic, func(w http.ResponseWriter, r *http.Request) error {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
		return nil
	})
	rt("GET /readyz", authPublic, p.handleReady)
	mux.Handle("GET /metrics", p.metrics.handler())
	rt("GET /v1/info", authPublic, p.handleInfo)
	rt("GET /v1/whoami", authAnyPrincipal, p.handleWhoAmI)

	rt("POST /v1/principals", authAdmin, p.handleCreatePrincipal)
	rt("GET /v1/principals", authAdminAuditor, p.handleListPrincipals)
	rt("POST /v1/principals/{id}/tokens", authAdmin, p.handleCreateToken)
	rt("DELETE /v1/tokens/{id}", authAdmin, p.handleRevokeToken)
	rt("DELETE /v1/principals/{id}", authAdmin, p.handleDisablePrincipal)

	rt("POST /v1/enroll-tokens", authAdmin, p.handleCreateEnrollToken)
	rt("POST /v1/runners/enroll", authPublic, p.handleEnroll)
	rt("GET /v1/runners", authRunnersRead, p.handleListRunners)
	rt("DELETE /v1/runners/{id}", authAdmin, p.handleRevokeRunner)
	rt("POST /v1/claims", authRunner, p.handleClaim)
	rt("POST /v1/runs/{id}/heartbeat", authClaim, p.handleHeartbeat)
	rt("POST /v1/runs/{id}/events", authClaim, p.handleAppendEvents)
	rt("POST /v1/runs/{id}/complete", authClaimComplete, p.handleComplete)

	rt("POST /v1/runs", authRequester, p.handleSubmit)
	rt("GET /v1/runs", authAnyPrincipal, p.handleListRuns)
	rt("GET /v1/runs/stream", authAnyPrincipal, p.handleRunsStream)
	rt("GET /v1/runs/{id}", authAnyPrincipal, p.handleGetRun)
	rt("GET /v1/runs/{id}/events", authAnyPrincipal, p.handleEvents)
	rt("GET /v1/runs/{id}/events/stream", authAnyPrincipal, p.handleStream)
	rt("POST /v1/runs/{id}/approve", authApprover, p.handleApprove)
	rt("POST /v1/runs/{id}/deny", authApprover, p.handleDeny)
	rt("POST /v1/runs/{id}/cancel", authRequester, p.handleCancel)
	rt("GET /v1/runs/{id}/bundle", authAnyPrincipal, p.handleBundle)

	rt("POST /v1/blobs/missing", authBlobWrite, p.handleMissing)
	rt("PUT /v1/blobs/{hash}", authBlobWrite, p.handlePutBlob)
	rt("POST /v1/blobs", authBlobWrite, p.handlePutBlobs)
	rt("GET /v1/blobs/{hash}", authBlobRead, p.handleGetBlob)
	rt("POST /v1/blobs/fetch", authBlobRead, p.handleFetchBlobs)

	rt("GET /v1/policy", authAnyPrincipal, p.handleGetPolicy)
	rt("PUT /v1/policy", authAdmin, p.handlePutPolicy)
	rt("PUT /v1/secrets/{name}", authAdmin, p.handlePutSecret)
	rt("GET /v1/secrets", authAdminAuditor, p.handleListSecrets)
	rt("DELETE /v1/secrets/{name}", authAdmin, p.handleDeleteSecret)
	rt("GET /v1/export", authAdminAuditor, p.handleExport)
	rt("GET /v1/retention", authAdminAuditor, p.handleRetention)

	// The web UI: a client of the routes above, called in memory.
	if u, err := ui.New(ui.Config{API: mux, PlaneKey: p.PublicKey(), SessionKey: p.uiSessionKey(), SecureCookies: p.cfg.SecureCookies, Logger: p.log.With("component", "ui")}); err != nil {
		p.log.Error("the web UI is not served", "err", err)
	} else {
		rt(ui.Prefix, authPublic, func(w http.ResponseWriter, r *http.Request) error { u.ServeHTTP(w, r); return nil })
	}

	rt("/", authPublic, func(w http.ResponseWriter, r *http.Request) error {
		return errf(client.CodeNotFound, "no route %s %s", r.Method, r.URL.Path)
	})
	return mux
}

// uiSessionKey keys the web UI's CSRF tokens: derived from the master
// key, so every replica agrees and the UI never holds the master key.
func (p *Plane) uiSessionKey() []byte {
	m := hmac.New(sha256.New, p.cfg.MasterKey)
	m.Write([]byte("warrant-ui-session-v1"))
	return m.Sum(nil)
}

func (p *Plane) handleReady(w http.ResponseWriter, r *http.Request) error {
	if p.draining.Load() {
		return errf(client.CodeUnavailable, "the plane is shutting down")
	}
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := p.store.Ping(ctx); err != nil {
		return errf(client.CodeUnavailable, "the store does not answer").because(err)
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	return nil
}

// Server serves a Plane over HTTP with graceful shutdown.
type Server struct {
	plane *Plane
	http  *http.Server
}

// NewServer wraps p in an HTTP server.
func NewServer(p *Plane) *Server {
	return &Server{plane: p, http: &http.Server{
		Handler:           p.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(p.log.Handler(), slog.LevelWarn),
	}}
}

// Serve starts the plane's loops and serves on ln until Shutdown.
func (s *Server) Serve(ln net.Listener) error {
	s.plane.Start()
	err := s.http.Serve(ln)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown stops accepting connections, ends long polls and event streams
// promptly, waits for in-flight requests to finish (until ctx ends) and
// stops the plane's loops.
func (s *Server) Shutdown(ctx context.Context) error {
	s.plane.Drain()
	err := s.http.Shutdown(ctx)
	s.plane.Close()
	return err
}
