package ui

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"net/http"
	"net/url"
	"regexp"
	"strings"

	"warrant.dev/warrant/client"
)

// Cookies. Both are HttpOnly, SameSite=Strict, limited to /ui/, and
// Secure when the request came over TLS or Config.SecureCookies says the
// users reach the plane over HTTPS.
const (
	sessionCookie = "warrant_session" // the principal's bearer token
	signinCookie  = "warrant_signin"  // a nonce binding the sign-in form's CSRF token
)

// principalToken is the shape of a principal token (the plane makes them
// "wpt_" and base64url): anything else never reaches the API or a cookie.
var principalToken = regexp.MustCompile(`^wpt_[A-Za-z0-9_-]{16,128}$`)

// maxFormBytes caps form bodies.
const maxFormBytes = 64 << 10

// Sign-in page notices, by code (the page never echoes free text from the
// URL).
var signinNotices = map[string]string{
	"required":  "Sign in to continue.",
	"revoked":   "You were signed out: your token was revoked or has expired. Sign in with a valid token.",
	"signedout": "You are signed out.",
}

// session is a signed-in request: the user's token, an API client acting
// with it, who the token belongs to, and the CSRF token of its forms.
type session struct {
	token string
	api   *client.Client
	me    client.Principal
	csrf  string
}

func (s *session) may(roles ...string) bool {
	for _, r := range roles {
		if s.me.Role == r {
			return true
		}
	}
	return false
}

func (u *UI) setCookie(w http.ResponseWriter, r *http.Request, name, value string, maxAge int) {
	http.SetCookie(w, &http.Cookie{
		Name: name, Value: value, Path: Prefix, MaxAge: maxAge,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil || u.secure,
	})
}

func (u *UI) clearCookie(w http.ResponseWriter, r *http.Request, name string) {
	u.setCookie(w, r, name, "", -1)
}

// session authenticates r. Without a usable session it answers the
// request itself (a redirect to sign-in, or an error) and returns nil:
// the caller just returns. Every request re-authenticates the token
// through the API, so a revoked token is signed out at once.
func (u *UI) session(w http.ResponseWriter, r *http.Request) *session {
	c, err := r.Cookie(sessionCookie)
	if err != nil || c.Value == "" {
		u.toSignIn(w, r, "required")
		return nil
	}
	if !principalToken.MatchString(c.Value) {
		u.clearCookie(w, r, sessionCookie)
		u.toSignIn(w, r, "required")
		return nil
	}
	s := &session{token: c.Value, api: u.apiClient(c.Value)}
	who, err := s.api.WhoAmI(apiContext(r))
	if err != nil {
		if errors.Is(err, client.ErrUnauthenticated) || errors.Is(err, client.ErrForbidden) {
			u.clearCookie(w, r, sessionCookie)
			u.toSignIn(w, r, "revoked")
			return nil
		}
		u.apiError(w, r, nil, err)
		return nil
	}
	s.me = who.Principal
	s.csrf = u.sessionCSRF(s.token)
	return s
}

// toSignIn sends the browser to the sign-in page, remembering where it
// was going. A form post gets a 401 page saying nothing was done; a
// stream gets a bare 401, so the page's script reloads the page.
func (u *UI) toSignIn(w http.ResponseWriter, r *http.Request, notice string) {
	if r.Header.Get("Accept") == "text/event-stream" {
		w.Header().Set("Cache-Control", "no-store")
		http.Error(w, "signed out", http.StatusUnauthorized)
		return
	}
	if r.Method != http.MethodGet {
		u.renderError(w, r, nil, http.StatusUnauthorized, "You are not signed in (or your token was revoked), so nothing was done. Sign in and try again.")
		return
	}
	q := url.Values{"m": {notice}}
	if r.URL.Path != Prefix {
		q.Set("next", r.URL.RequestURI())
	}
	http.Redirect(w, r, Prefix+"signin?"+q.Encode(), http.StatusSeeOther)
}

// sessionCSRF is the CSRF token of a session's forms: bound to the
// token, unguessable without the plane's session key.
func (u *UI) sessionCSRF(token string) string {
	sum := sha256.Sum256([]byte(token))
	return u.mac("csrf", hex.EncodeToString(sum[:]))
}

// checkPost refuses a cross-origin POST and one without the form's CSRF
// token (want). It parses the form. It answers 403 itself and returns
// false when the request is refused.
func (u *UI) checkPost(w http.ResponseWriter, r *http.Request, s *session, want string) bool {
	if err := u.crossOrg.Check(r); err != nil {
		u.log.Warn("ui: cross-origin POST refused", "path", r.URL.Path, "origin", r.Header.Get("Origin"), "secFetchSite", r.Header.Get("Sec-Fetch-Site"))
		u.renderError(w, r, s, http.StatusForbidden, "This form was sent from another site, so it was refused.")
		return false
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	if err := r.ParseForm(); err != nil {
		u.renderError(w, r, s, http.StatusBadRequest, "The form could not be read.")
		return false
	}
	got := r.PostForm.Get("csrf")
	if got == "" || subtle.ConstantTimeCompare([]byte(got), []byte(want)) != 1 {
		u.log.Warn("ui: POST without a valid CSRF token refused", "path", r.URL.Path)
		u.renderError(w, r, s, http.StatusForbidden, "This form is out of date or was not sent by this site. Reload the page and try again.")
		return false
	}
	return true
}

// safeNext is a same-UI path to go to after sign-in, or the run list.
func safeNext(next string) string {
	if !strings.HasPrefix(next, Prefix) || strings.HasPrefix(next, "//") || strings.ContainsAny(next, "\\\r\n") {
		return Prefix
	}
	if u, err := url.Parse(next); err != nil || u.Host != "" || u.Scheme != "" {
		return Prefix
	}
	return next
}

type signinPage struct {
	page
	Next string
}

func (u *UI) handleSignInPage(w http.ResponseWriter, r *http.Request) {
	nonce := make([]byte, 16)
	_, _ = rand.Read(nonce)
	n := hex.EncodeToString(nonce)
	u.setCookie(w, r, signinCookie, n, 3600)
	p := signinPage{page: page{Title: "Sign in", CSRF: u.mac("signin", n), Notice: signinNotices[r.URL.Query().Get("m")]}, Next: safeNext(r.URL.Query().Get("next"))}
	u.render(w, r, http.StatusOK, "signin", &p)
}

func (u *UI) handleSignIn(w http.ResponseWriter, r *http.Request) {
	want := ""
	if c, err := r.Cookie(signinCookie); err == nil && c.Value != "" {
		want = u.mac("signin", c.Value)
	}
	if want == "" {
		// No nonce: the form was not loaded from here (or cookies are off).
		u.renderError(w, r, nil, http.StatusForbidden, "Sign-in needs cookies, and the form must come from this site. Reload the sign-in page and try again.")
		return
	}
	if !u.checkPost(w, r, nil, want) {
		return
	}
	next := safeNext(r.PostForm.Get("next"))
	token := strings.TrimSpace(r.PostForm.Get("token"))
	again := func(status int, msg string) {
		p := signinPage{page: page{Title: "Sign in", CSRF: want, Error: msg}, Next: next}
		u.render(w, r, status, "signin", &p)
	}
	if token == "" {
		again(http.StatusBadRequest, "Paste a principal token (it starts with wpt_).")
		return
	}
	if !principalToken.MatchString(token) {
		again(http.StatusUnauthorized, "That is not a principal token. Principal tokens start with wpt_; runner, claim and enroll tokens cannot sign in.")
		return
	}
	if _, err := u.apiClient(token).WhoAmI(apiContext(r)); err != nil {
		if errors.Is(err, client.ErrUnauthenticated) || errors.Is(err, client.ErrForbidden) {
			again(http.StatusUnauthorized, "That token is not valid: it is unknown, revoked or expired.")
			return
		}
		u.apiError(w, r, nil, err)
		return
	}
	u.clearCookie(w, r, signinCookie)
	u.setCookie(w, r, sessionCookie, token, 0)
	http.Redirect(w, r, next, http.StatusSeeOther)
}

func (u *UI) handleSignOut(w http.ResponseWriter, r *http.Request) {
	c, err := r.Cookie(sessionCookie)
	if err != nil || c.Value == "" {
		http.Redirect(w, r, Prefix+"signin?m=signedout", http.StatusSeeOther)
		return
	}
	if !u.checkPost(w, r, nil, u.sessionCSRF(c.Value)) {
		return
	}
	u.clearCookie(w, r, sessionCookie)
	http.Redirect(w, r, Prefix+"signin?m=signedout", http.StatusSeeOther)
}
