package ui

import (
	"bytes"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"path"
	"strconv"
	"strings"
	"time"

	"warrant.dev/warrant/client"
	"warrant.dev/warrant/protocol"
)

// page is what every page's template gets.
type page struct {
	Title  string
	Nav    string            // the active navigation entry
	Me     *client.Principal // nil when signed out
	CSRF   string            // the CSRF token of the page's forms
	Notice string            // a short confirmation (from a fixed list)
	Error  string            // a message safe to show
}

func (p *page) base() *page { return p }

// pageData is any page struct (they all embed page).
type pageData interface{ base() *page }

func newPage(s *session, title, nav string) page {
	p := page{Title: title, Nav: nav}
	if s != nil {
		me := s.me
		p.Me, p.CSRF = &me, s.csrf
	}
	return p
}

// parseTemplates parses layout.html with each other template into one
// set per page.
func (u *UI) parseTemplates() (map[string]*template.Template, error) {
	funcs := template.FuncMap{
		"static":     u.staticURL,
		"age":        age,
		"when":       when,
		"short":      short,
		"stateLabel": stateLabel,
		"stateClass": stateClass,
		"plural":     plural,
		"join":       strings.Join,
		"truncate":   truncate,
		"runURL":     func(id string) string { return Prefix + "runs/" + pathEscape(id) },
		"prev":       func(seq int64) int64 { return seq - 1 },
		"shortID":    shortID,
	}
	layout, err := template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html")
	if err != nil {
		return nil, errors.Join(ErrConfig, err)
	}
	names, err := fs.Glob(templateFS, "templates/*.html")
	if err != nil {
		return nil, errors.Join(ErrConfig, err)
	}
	out := map[string]*template.Template{}
	for _, n := range names {
		base := strings.TrimSuffix(path.Base(n), ".html")
		if base == "layout" {
			continue
		}
		t, err := template.Must(layout.Clone()).ParseFS(templateFS, n)
		if err != nil {
			return nil, errors.Join(ErrConfig, err)
		}
		out[base] = t
	}
	return out, nil
}

// render writes a page. Pages are rendered into a buffer first, so a
// template error never leaves half a page.
func (u *UI) render(w http.ResponseWriter, r *http.Request, status int, name string, data pageData) {
	t, ok := u.pages[name]
	if !ok {
		u.log.Error("ui: no template", "name", name)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, "layout.html", data); err != nil {
		u.log.Error("ui: render", "page", name, "path", r.URL.Path, "err", err)
		http.Error(w, "internal error: the page could not be rendered", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Length", strconv.Itoa(buf.Len()))
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

type errorPage struct {
	page
	Status int
}

// renderError shows msg (safe text) with status.
func (u *UI) renderError(w http.ResponseWriter, r *http.Request, s *session, status int, msg string) {
	p := errorPage{page: newPage(s, http.StatusText(status), ""), Status: status}
	p.Error = msg
	u.render(w, r, status, "error", &p)
}

// apiError shows an error from the plane's API: its message is safe to
// show (the API keeps causes in its log). An unauthenticated answer signs
// the user out.
func (u *UI) apiError(w http.ResponseWriter, r *http.Request, s *session, err error) {
	var ae *client.APIError
	if !errors.As(err, &ae) {
		u.log.Error("ui: plane API call failed", "path", r.URL.Path, "err", err)
		u.renderError(w, r, s, http.StatusBadGateway, "The plane did not answer. Try again in a moment.")
		return
	}
	if ae.Code == client.CodeUnauthenticated {
		u.clearCookie(w, r, sessionCookie)
		u.toSignIn(w, r, "revoked")
		return
	}
	status := ae.Status
	if status < 400 {
		status = http.StatusBadGateway
	}
	msg := ae.Message
	if len(ae.Reasons) > 0 {
		msg += ": " + strings.Join(ae.Reasons, "; ")
	}
	if ae.Code == client.CodeInternal && ae.RequestID != "" {
		msg += " (request " + ae.RequestID + ")"
	}
	u.renderError(w, r, s, status, msg)
}

// --- template helpers ---

// age says how long ago an RFC 3339 time was, coarsely.
func age(ts string) string {
	t, err := protocol.ParseTime(ts)
	if err != nil {
		return ts
	}
	return ageOf(time.Since(t))
}

func ageOf(d time.Duration) string {
	switch {
	case d < 0:
		return "just now"
	case d < 5*time.Second:
		return "just now"
	case d < time.Minute:
		return fmt.Sprintf("%d s ago", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%d min ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%d h ago", int(d.Hours()))
	default:
		return fmt.Sprintf("%d days ago", int(d.Hours()/24))
	}
}

// when renders an RFC 3339 time for people: "2026-11-27 10:04:05 UTC".
func when(ts string) string {
	t, err := protocol.ParseTime(ts)
	if err != nil {
		return ts
	}
	return t.UTC().Format("2006-01-02 15:04:05 UTC")
}

// short is the first 12 characters of a hash, or "—".
func short(h string) string {
	switch {
	case h == "":
		return "—"
	case len(h) > 12:
		return h[:12]
	}
	return h
}

// shortID shows an id like "run_0f3a…" up to its first '-' (the rest is
// in the link's title).
func shortID(id string) string {
	if i := strings.IndexByte(id, '-'); i > 0 && i < len(id)-1 {
		return id[:i] + "…"
	}
	return id
}

// truncate cuts s to n characters with an ellipsis, on one line.
func truncate(n int, s string) string {
	s = strings.Join(strings.Fields(s), " ")
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}

func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return strconv.Itoa(n) + " " + noun + "s"
}

// stateLabel is a run state in words.
func stateLabel(state string) string {
	switch state {
	case protocol.StateAwaitingApproval:
		return "awaiting approval"
	case "":
		return "unknown"
	}
	return state
}

// stateClass groups states for colour; the label always says the state
// in words too.
func stateClass(state string) string {
	switch state {
	case protocol.StateCompleted:
		return "ok"
	case protocol.StateFailed:
		return "bad"
	case protocol.StateCancelled:
		return "muted"
	case protocol.StateAwaitingApproval:
		return "warn"
	case protocol.StateClaimed, protocol.StateProvisioning, protocol.StateRunning:
		return "active"
	}
	return "queued"
}

func pathEscape(s string) string {
	var b strings.Builder
	for _, c := range []byte(s) {
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.' {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}
