// Package ui is the plane's web control panel, served by every plane at
// /ui/ and embedded in the binary: sign-in with a principal token, the
// run list (live), each run's receipt answering the five questions (what
// moved, why, who approved, what saw it, how to reproduce) with its event
// timeline, diff and verification status, the approval queue, and the
// runners.
//
// The UI holds no privilege of its own. Its handlers are clients of the
// plane's API, called in memory with the signed-in user's token (see
// handlerTransport), so every read and decision passes the API's own
// authentication, role checks and validation, and a revoked token is
// signed out on its next request.
//
// Pages are server-rendered with html/template (nothing an agent wrote is
// ever trusted as HTML) and work without JavaScript; one small script
// adds live updates over Server-Sent Events. Every response carries a
// strict Content-Security-Policy (no inline script or style, no outside
// origin), every form a CSRF token, and every POST passes a cross-origin
// check.
package ui

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"path"
	"strings"
	"sync"

	"warrant.dev/warrant/client"
	"warrant.dev/warrant/protocol"
)

// Prefix is where the UI is mounted.
const Prefix = "/ui/"

// apiBase is the base URL of the in-memory API client; it is never
// dialled.
const apiBase = "http://plane.internal"

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Config configures the UI.
type Config struct {
	// API is the plane's HTTP API handler. The UI calls it in memory.
	API http.Handler
	// PlaneKey is the plane's public key, pinned when the UI verifies a
	// run's bundle.
	PlaneKey *protocol.PublicKey
	// SessionKey keys the UI's CSRF tokens: at least 32 secret bytes, the
	// same on every replica (the plane derives it from its master key).
	SessionKey []byte
	// SecureCookies marks the cookies Secure on every request, not only
	// on those that came over TLS (set it behind a TLS-terminating proxy).
	SecureCookies bool
	// Logger receives the UI's errors; nil discards them.
	Logger *slog.Logger
}

// UI serves the web control panel under Prefix.
type UI struct {
	api      http.Handler
	apiHTTP  *http.Client
	trust    *protocol.TrustStore
	key      []byte
	log      *slog.Logger
	pages    map[string]*template.Template
	static   map[string]staticFile
	mux      *http.ServeMux
	crossOrg *http.CrossOriginProtection
	blobs    *blobCache
	secure   bool // cookies always Secure
}

// ErrConfig is returned by New for an unusable configuration.
var ErrConfig = errors.New("ui: bad configuration")

// New builds the UI.
func New(cfg Config) (*UI, error) {
	if cfg.API == nil || cfg.PlaneKey == nil || len(cfg.SessionKey) < 32 {
		return nil, errors.Join(ErrConfig, errors.New("API, PlaneKey and a SessionKey of at least 32 bytes are required"))
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	u := &UI{
		api:      cfg.API,
		apiHTTP:  &http.Client{Transport: handlerTransport{h: cfg.API}},
		trust:    protocol.NewTrustStore(),
		key:      cfg.SessionKey,
		secure:   cfg.SecureCookies,
		log:      cfg.Logger,
		crossOrg: http.NewCrossOriginProtection(),
		blobs:    newBlobCache(64),
	}
	u.trust.Add(protocol.SignerPlane, cfg.PlaneKey)
	var err error
	if u.static, err = loadStatic(); err != nil {
		return nil, err
	}
	if u.pages, err = u.parseTemplates(); err != nil {
		return nil, err
	}
	u.routes()
	return u, nil
}

func (u *UI) routes() {
	m := http.NewServeMux()
	m.HandleFunc("GET /ui/{$}", u.handleRuns)
	m.HandleFunc("GET /ui/signin", u.handleSignInPage)
	m.HandleFunc("POST /ui/signin", u.handleSignIn)
	m.HandleFunc("POST /ui/signout", u.handleSignOut)
	m.HandleFunc("GET /ui/runs/{id}", u.handleRun)
	m.HandleFunc("GET /ui/runs/{id}/bundle", u.handleBundle)
	m.HandleFunc("GET /ui/runs/{id}/diff", u.handleDiffDownload)
	m.HandleFunc("GET /ui/runs/{id}/stream", u.handleRunStream)
	m.HandleFunc("POST /ui/runs/{id}/approve", u.handleDecision)
	m.HandleFunc("POST /ui/runs/{id}/deny", u.handleDecision)
	m.HandleFunc("GET /ui/stream/runs", u.handleRunsStream)
	m.HandleFunc("GET /ui/approvals", u.handleApprovals)
	m.HandleFunc("GET /ui/runners", u.handleRunners)
	m.HandleFunc("POST /ui/runners/{id}/revoke", u.handleRevokeRunner)
	m.HandleFunc("GET /ui/static/{name}", u.handleStatic)
	m.HandleFunc("/ui/", func(w http.ResponseWriter, r *http.Request) {
		u.renderError(w, r, nil, http.StatusNotFound, "There is no page here.")
	})
	u.mux = m
}

// ServeHTTP serves the UI. Every response gets the security headers.
func (u *UI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	h.Set("Cross-Origin-Resource-Policy", "same-origin")
	u.mux.ServeHTTP(w, r)
}

// apiClient is an API client acting with token, for the request r.
func (u *UI) apiClient(token string) *client.Client {
	c, err := client.New(apiBase, client.WithToken(token), client.WithHTTPClient(u.apiHTTP), client.WithUserAgent("warrant-ui"))
	if err != nil {
		panic("ui: the in-memory API base URL is invalid: " + err.Error()) // a constant: cannot happen
	}
	return c
}

// apiContext is the context for API calls made on behalf of r.
func apiContext(r *http.Request) context.Context {
	return withRemoteAddr(r.Context(), r.RemoteAddr)
}

// mac is the HMAC-SHA256 of the parts under the session key, hex.
func (u *UI) mac(parts ...string) string {
	m := hmac.New(sha256.New, u.key)
	for _, p := range parts {
		m.Write([]byte(p))
		m.Write([]byte{0})
	}
	return hex.EncodeToString(m.Sum(nil))
}

// --- static files ---

type staticFile struct {
	data        []byte
	contentType string
	version     string // a short content hash, for cache busting
}

func loadStatic() (map[string]staticFile, error) {
	out := map[string]staticFile{}
	err := fs.WalkDir(staticFS, "static", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := staticFS.ReadFile(p)
		if err != nil {
			return err
		}
		ct := "application/octet-stream"
		switch path.Ext(p) {
		case ".css":
			ct = "text/css; charset=utf-8"
		case ".js":
			ct = "text/javascript; charset=utf-8"
		case ".svg":
			ct = "image/svg+xml"
		}
		sum := sha256.Sum256(data)
		out[path.Base(p)] = staticFile{data: data, contentType: ct, version: hex.EncodeToString(sum[:6])}
		return nil
	})
	if err != nil {
		return nil, errors.Join(ErrConfig, err)
	}
	return out, nil
}

func (u *UI) staticURL(name string) string {
	f, ok := u.static[name]
	if !ok {
		return Prefix + "static/" + name
	}
	return Prefix + "static/" + name + "?v=" + f.version
}

func (u *UI) handleStatic(w http.ResponseWriter, r *http.Request) {
	f, ok := u.static[r.PathValue("name")]
	if !ok {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", f.contentType)
	w.Header().Set("Cache-Control", "public, max-age=86400")
	w.Header().Set("ETag", `"`+f.version+`"`)
	if match := r.Header.Get("If-None-Match"); match != "" && strings.Contains(match, f.version) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	_, _ = w.Write(f.data)
}

// --- a small cache of blob-derived facts ---

// blobCache remembers facts read from blobs (a snapshot's file count, a
// parsed diff) per token and blob, so that live page refreshes do not
// re-read large blobs. Keying by token keeps the API's access decision:
// a user only ever gets what their own token read.
type blobCache struct {
	mu    sync.Mutex
	max   int
	order []string
	m     map[string]any
}

func newBlobCache(max int) *blobCache { return &blobCache{max: max, m: map[string]any{}} }

func (c *blobCache) key(token, kind, hash string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:]) + "/" + kind + "/" + hash
}

func (c *blobCache) get(k string) (any, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok := c.m[k]
	return v, ok
}

func (c *blobCache) put(k string, v any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[k]; ok {
		return
	}
	if len(c.order) >= c.max {
		delete(c.m, c.order[0])
		c.order = c.order[1:]
	}
	c.order = append(c.order, k)
	c.m[k] = v
}
