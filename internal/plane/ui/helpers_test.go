package ui_test

import (
	"context"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"warrant.dev/warrant/client"
	"warrant.dev/warrant/internal/plane"
	"warrant.dev/warrant/internal/testutil"
	"warrant.dev/warrant/protocol"
)

var bg = context.Background()

// web is a cookie-keeping HTTP client of a plane's UI that does not follow
// redirects, like a browser without JavaScript seen one request at a time.
type web struct {
	t    testing.TB
	base string // the plane's URL
	http *http.Client
}

func newWeb(t testing.TB, planeURL string) *web {
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &web{t: t, base: planeURL, http: &http.Client{
		Jar:           jar,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Timeout:       30 * time.Second,
	}}
}

type reply struct {
	status int
	header http.Header
	body   string
}

func (w *web) do(method, path string, form url.Values, headers map[string]string) reply {
	w.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, w.base+path, body)
	if err != nil {
		w.t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Origin", w.base) // what a browser sends with a same-origin form
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := w.http.Do(req)
	if err != nil {
		w.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		w.t.Fatal(err)
	}
	return reply{status: resp.StatusCode, header: resp.Header, body: string(b)}
}

func (w *web) get(path string) reply { return w.do(http.MethodGet, path, nil, nil) }

func (w *web) post(path string, form url.Values) reply {
	return w.do(http.MethodPost, path, form, nil)
}

var csrfField = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// csrf is the CSRF token of the forms on a page.
func csrf(t testing.TB, page string) string {
	t.Helper()
	m := csrfField.FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("no CSRF field on the page:\n%s", page)
	}
	return m[1]
}

// signIn signs w in with token through the sign-in form.
func (w *web) signIn(token string) {
	w.t.Helper()
	page := w.get("/ui/signin")
	if page.status != http.StatusOK {
		w.t.Fatalf("sign-in page: %d", page.status)
	}
	r := w.post("/ui/signin", url.Values{"csrf": {csrf(w.t, page.body)}, "token": {token}, "next": {"/ui/"}})
	if r.status != http.StatusSeeOther || r.header.Get("Location") != "/ui/" {
		w.t.Fatalf("sign in: %d %s\n%s", r.status, r.header.Get("Location"), r.body)
	}
}

// principal makes a principal with role and returns its client, record
// and token.
func principal(t *testing.T, tp *testutil.TestPlane, role, name string) (*client.Client, client.Principal, string) {
	t.Helper()
	resp, err := tp.Admin.CreatePrincipal(bg, client.CreatePrincipalRequest{Name: name, Role: role})
	if err != nil {
		t.Fatalf("create %s: %v", name, err)
	}
	return tp.Client(resp.Token.Secret), resp.Principal, resp.Token.Secret
}

// consentPolicy makes every run wait for an approver.
func consentPolicy(t *testing.T, tp *testutil.TestPlane) {
	t.Helper()
	p := plane.DefaultPolicy()
	p.Consent = []protocol.ConsentRule{{When: "any-run", Approvers: []string{}}}
	if _, err := tp.Admin.PutPolicy(bg, p); err != nil {
		t.Fatalf("put policy: %v", err)
	}
}

// submitCommand submits a command-agent run in pool "local" with files
// as its workspace.
func submitCommand(t *testing.T, c *client.Client, script string, files map[string]string, edit ...func(*client.RunRequest)) *client.Run {
	t.Helper()
	if files == nil {
		files = map[string]string{"README.md": "# demo\n"}
	}
	ws := testutil.UploadWorkspace(t, c, files)
	req := client.RunRequest{Agent: protocol.AgentSpec{Kind: protocol.AgentCommand}, Prompt: script, Pool: "local", Workspace: ws}
	for _, e := range edit {
		e(&req)
	}
	resp, err := c.SubmitRun(bg, req)
	if err != nil {
		t.Fatalf("submit: %v", err)
	}
	return resp.Run
}
