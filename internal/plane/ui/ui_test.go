package ui_test

import (
	"bufio"
	"bytes"
	"context"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"warrant.dev/warrant/client"
	"warrant.dev/warrant/internal/testutil"
	"warrant.dev/warrant/protocol"
)

const wantCSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// TestSecurityHeaders: every UI response, pages, assets and errors, has
// the strict policy headers; no page has inline script or style.
func TestSecurityHeaders(t *testing.T) {
	tp := testutil.StartPlane(t)
	w := newWeb(t, tp.URL)
	w.signIn(tp.AdminToken)
	for _, path := range []string{"/ui/signin", "/ui/", "/ui/approvals", "/ui/runners", "/ui/static/app.css", "/ui/static/app.js", "/ui/nowhere", "/ui/runs/run_missing"} {
		r := w.get(path)
		h := r.header
		if h.Get("Content-Security-Policy") != wantCSP || h.Get("X-Content-Type-Options") != "nosniff" || h.Get("X-Frame-Options") != "DENY" || h.Get("Referrer-Policy") == "" {
			t.Errorf("%s: security headers %v", path, h)
		}
		if strings.HasPrefix(h.Get("Content-Type"), "text/html") {
			if h.Get("Cache-Control") != "no-store" {
				t.Errorf("%s: pages must not be cached, Cache-Control %q", path, h.Get("Cache-Control"))
			}
			for _, inline := range []string{"<script>", "style=", "<style", "onclick", "onload", "javascript:"} {
				if strings.Contains(r.body, inline) {
					t.Errorf("%s: inline %q in the page", path, inline)
				}
			}
		}
	}
	if r := w.get("/ui/nowhere"); r.status != http.StatusNotFound {
		t.Errorf("unknown page: %d", r.status)
	}
	if r := w.get("/ui/runs/run_missing"); r.status != http.StatusNotFound || !strings.Contains(r.body, "no run") {
		t.Errorf("missing run: %d\n%s", r.status, r.body)
	}
	js := w.get("/ui/static/app.js")
	if js.header.Get("Content-Type") != "text/javascript; charset=utf-8" || !strings.Contains(js.body, "EventSource") {
		t.Errorf("app.js: %s", js.header.Get("Content-Type"))
	}
}

// TestSignIn: the cookie's attributes, wrong tokens, redirects back to
// where the user was going, sign-out.
func TestSignIn(t *testing.T) {
	tp := testutil.StartPlane(t)
	_, approverP, approverTok := principal(t, tp, client.RoleApprover, "ada@example.com")
	w := newWeb(t, tp.URL)

	r := w.get("/ui/approvals")
	if r.status != http.StatusSeeOther || r.header.Get("Location") != "/ui/signin?m=required&next=%2Fui%2Fapprovals" {
		t.Fatalf("signed-out page: %d %s", r.status, r.header.Get("Location"))
	}
	page := w.get("/ui/signin?m=required&next=%2Fui%2Fapprovals")
	if !strings.Contains(page.body, "Sign in to continue.") || !strings.Contains(page.body, `value="/ui/approvals"`) {
		t.Fatalf("sign-in page lacks its notice or next:\n%s", page.body)
	}
	token := csrf(t, page.body)
	for _, bad := range []string{"", "wpt_" + strings.Repeat("A", 43), tp.EnrollToken("local"), "wpt_x; Path=/"} {
		r := w.post("/ui/signin", url.Values{"csrf": {token}, "token": {bad}})
		if r.status < 400 || r.header.Get("Set-Cookie") != "" && strings.Contains(r.header.Get("Set-Cookie"), "warrant_session=w") {
			t.Fatalf("token %q signed in: %d %v", bad, r.status, r.header)
		}
	}
	// An open redirect is not possible through next.
	r = w.post("/ui/signin", url.Values{"csrf": {token}, "token": {approverTok}, "next": {"//evil.example/"}})
	if r.status != http.StatusSeeOther || r.header.Get("Location") != "/ui/" {
		t.Fatalf("next=//evil: %d %s", r.status, r.header.Get("Location"))
	}
	var session *http.Cookie
	for _, c := range (&http.Response{Header: r.header}).Cookies() {
		if c.Name == "warrant_session" {
			session = c
		}
	}
	if session == nil || !session.HttpOnly || session.SameSite != http.SameSiteStrictMode || session.Path != "/ui/" || session.Value != approverTok {
		t.Fatalf("session cookie = %+v", session)
	}
	home := w.get("/ui/")
	if home.status != http.StatusOK || !strings.Contains(home.body, approverP.Name) || !strings.Contains(home.body, ">approver<") {
		t.Fatalf("home after sign-in: %d\n%s", home.status, home.body)
	}
	out := w.post("/ui/signout", url.Values{"csrf": {csrf(t, home.body)}})
	if out.status != http.StatusSeeOther || !strings.Contains(out.header.Get("Location"), "m=signedout") {
		t.Fatalf("sign out: %d %s", out.status, out.header.Get("Location"))
	}
	if r := w.get("/ui/"); r.status != http.StatusSeeOther {
		t.Fatalf("still signed in after sign-out: %d", r.status)
	}
}

// TestRevokedTokenSignedOut: the next request after a revocation signs
// the user out, clears the cookie and says why.
func TestRevokedTokenSignedOut(t *testing.T) {
	tp := testutil.StartPlane(t)
	_, _, tok := principal(t, tp, client.RoleAuditor, "audrey@example.com")
	w := newWeb(t, tp.URL)
	w.signIn(tok)
	if r := w.get("/ui/runners"); r.status != http.StatusOK {
		t.Fatalf("runners: %d", r.status)
	}
	who, err := tp.Client(tok).WhoAmI(bg)
	if err != nil {
		t.Fatal(err)
	}
	if err := tp.Admin.RevokeToken(bg, who.TokenID); err != nil {
		t.Fatal(err)
	}
	r := w.get("/ui/runners")
	if r.status != http.StatusSeeOther || !strings.HasPrefix(r.header.Get("Location"), "/ui/signin?m=revoked") {
		t.Fatalf("after revocation: %d %s", r.status, r.header.Get("Location"))
	}
	if !strings.Contains(r.header.Get("Set-Cookie"), "warrant_session=;") {
		t.Fatalf("cookie not cleared: %q", r.header.Get("Set-Cookie"))
	}
	if page := w.get(r.header.Get("Location")); !strings.Contains(page.body, "your token was revoked") {
		t.Fatalf("sign-in page does not say why:\n%s", page.body)
	}
	// A stream (the page's script) gets 401, so the script reloads.
	w2 := newWeb(t, tp.URL)
	w2.http.Jar.SetCookies(mustURL(t, tp.URL+"/ui/"), []*http.Cookie{{Name: "warrant_session", Value: tok, Path: "/ui/"}})
	if r := w2.do(http.MethodGet, "/ui/stream/runs", nil, map[string]string{"Accept": "text/event-stream"}); r.status != http.StatusUnauthorized {
		t.Fatalf("stream with a revoked token: %d", r.status)
	}
}

func mustURL(t *testing.T, s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// TestFormsRefuseCrossSite: every POST needs the session's CSRF token and
// a same-origin request; a refused decision changes nothing.
func TestFormsRefuseCrossSite(t *testing.T) {
	tp := testutil.StartPlane(t)
	consentPolicy(t, tp)
	req, _, _ := principal(t, tp, client.RoleRequester, "rita@example.com")
	_, _, approverTok := principal(t, tp, client.RoleApprover, "ada@example.com")
	run := submitCommand(t, req, "true", nil)
	w := newWeb(t, tp.URL)
	w.signIn(approverTok)
	token := csrf(t, w.get("/ui/approvals").body)
	path := "/ui/runs/" + run.ID + "/approve"
	form := url.Values{"csrf": {token}, "reason": {"ok"}}
	cases := []struct {
		name    string
		form    url.Values
		headers map[string]string
	}{
		{"no token", url.Values{"reason": {"ok"}}, nil},
		{"wrong token", url.Values{"csrf": {strings.Repeat("0", len(token))}, "reason": {"ok"}}, nil},
		{"other origin", form, map[string]string{"Origin": "http://evil.example"}},
		{"cross-site fetch metadata", form, map[string]string{"Sec-Fetch-Site": "cross-site"}},
		{"same-site other origin", form, map[string]string{"Origin": "http://127.0.0.1:1", "Sec-Fetch-Site": "same-site"}},
	}
	for _, c := range cases {
		r := w.do(http.MethodPost, path, c.form, c.headers)
		if r.status != http.StatusForbidden {
			t.Errorf("%s: %d, want 403", c.name, r.status)
		}
	}
	if got, err := tp.Admin.GetRun(bg, run.ID); err != nil || got.State != protocol.StateAwaitingApproval {
		t.Fatalf("after refused posts the run is %v (%v)", got.State, err)
	}
	r := w.post(path, form)
	if r.status != http.StatusSeeOther || r.header.Get("Location") != "/ui/runs/"+run.ID+"?done=approved" {
		t.Fatalf("approve: %d %s\n%s", r.status, r.header.Get("Location"), r.body)
	}
	if got, _ := tp.Admin.GetRun(bg, run.ID); got.State != protocol.StateCreated || len(got.Approvals) != 1 || got.Approvals[0].Reason != "ok" {
		t.Fatalf("approved run = %+v", got)
	}
	// Another session's token does not work for this one.
	_, _, otherTok := principal(t, tp, client.RoleApprover, "bo@example.com")
	w2 := newWeb(t, tp.URL)
	w2.signIn(otherTok)
	run2 := submitCommand(t, req, "true", nil)
	if r := w2.post("/ui/runs/"+run2.ID+"/deny", form); r.status != http.StatusForbidden {
		t.Fatalf("another session's CSRF token: %d", r.status)
	}
}

// TestRequesterCannotApprove: the UI shows a requester no decision forms,
// and a decision they post anyway is refused by the API's role check.
func TestRequesterCannotApprove(t *testing.T) {
	tp := testutil.StartPlane(t)
	consentPolicy(t, tp)
	rita, _, ritaTok := principal(t, tp, client.RoleRequester, "rita@example.com")
	_, _, samTok := principal(t, tp, client.RoleRequester, "sam@example.com")
	run := submitCommand(t, rita, "true", nil)
	for _, tok := range []string{ritaTok, samTok} {
		w := newWeb(t, tp.URL)
		w.signIn(tok)
		page := w.get("/ui/approvals")
		if strings.Contains(page.body, `/approve"`) {
			t.Fatalf("a requester sees an approve form:\n%s", page.body)
		}
		r := w.post("/ui/runs/"+run.ID+"/approve", url.Values{"csrf": {csrf(t, page.body)}, "reason": {"me"}})
		if r.status != http.StatusForbidden || !strings.Contains(r.body, "may not") && !strings.Contains(r.body, "requested") {
			t.Fatalf("requester approve: %d\n%s", r.status, r.body)
		}
	}
	if got, _ := tp.Admin.GetRun(bg, run.ID); got.State != protocol.StateAwaitingApproval || len(got.Approvals) != 0 {
		t.Fatalf("run after a requester's approve = %+v", got)
	}
}

// TestRunPageEscapes: what agents and requesters wrote is text, never
// markup, on every page that shows it.
func TestRunPageEscapes(t *testing.T) {
	tp := testutil.StartPlane(t)
	payload := `<script>alert(1)</script>"><img src=x onerror=alert(1)>`
	rn := tp.EnrollRunner("local")
	run := submitCommand(t, tp.Admin, "echo '"+payload+"'", map[string]string{payload + ".txt": payload})
	cl := rn.MustClaim(t)
	cl.Append(t, protocol.FileChanged{Path: payload, ContentHash: protocol.HashBytes([]byte(payload))},
		protocol.NetworkConnected{Host: payload, Decision: protocol.DecisionBlocked})
	cl.Finish(t, protocol.RunFailed{Failure: protocol.FailureSessionFailed, Message: payload})
	w := newWeb(t, tp.URL)
	w.signIn(tp.AdminToken)
	for _, path := range []string{"/ui/", "/ui/runs/" + run.ID} {
		page := w.get(path)
		if page.status != http.StatusOK {
			t.Fatalf("%s: %d", path, page.status)
		}
		for _, raw := range []string{"<script>alert", "<img src=x", `"><img`} {
			if strings.Contains(page.body, raw) {
				t.Errorf("%s: the payload %q is in the page as markup", path, raw)
			}
		}
		if !strings.Contains(page.body, "&lt;script&gt;alert(1)&lt;/script&gt;") {
			t.Errorf("%s: the payload is not shown as text", path)
		}
	}
}

// TestBundleDownload: the bundle link serves the plane's exact bundle as
// an attachment, and the page reports it verified.
func TestBundleDownload(t *testing.T) {
	tp := testutil.StartPlane(t)
	rn := tp.EnrollRunner("local")
	run := submitCommand(t, tp.Admin, "true", nil)
	rn.MustClaim(t).Finish(t, protocol.RunCompleted{})
	w := newWeb(t, tp.URL)
	w.signIn(tp.AdminToken)
	r := w.get("/ui/runs/" + run.ID + "/bundle")
	_, want, err := tp.Admin.Bundle(bg, run.ID)
	if err != nil {
		t.Fatal(err)
	}
	if r.status != http.StatusOK || r.header.Get("Content-Disposition") != `attachment; filename="`+run.ID+`.bundle.json"` || !bytes.Equal([]byte(r.body), want) {
		t.Fatalf("bundle download: %d %v (%d bytes, want %d)", r.status, r.header, len(r.body), len(want))
	}
	b, err := protocol.ParseBundle([]byte(r.body))
	if err != nil || !protocol.VerifyBundle(b, tp.Trust()).Trusted() {
		t.Fatalf("downloaded bundle does not verify: %v", err)
	}
	page := w.get("/ui/runs/" + run.ID)
	if !strings.Contains(page.body, "✓ Verified") || !strings.Contains(page.body, "plane key "+tp.PlaneKey().ID()+" pinned") {
		t.Fatalf("run page lacks the verification status:\n%s", page.body)
	}
	for _, q := range []string{"What moved", "Why", "Who approved", "What saw it", "How to reproduce"} {
		if !strings.Contains(page.body, q) {
			t.Errorf("run page lacks %q", q)
		}
	}
	// An auditor may read it too; a requester who did not request it may not.
	_, _, sam := principal(t, tp, client.RoleRequester, "sam@example.com")
	w2 := newWeb(t, tp.URL)
	w2.signIn(sam)
	if r := w2.get("/ui/runs/" + run.ID + "/bundle"); r.status != http.StatusForbidden {
		t.Fatalf("another requester's bundle: %d", r.status)
	}
}

// TestRunListFiltersAndPaging: filters reach the API, paging follows its
// cursor, and links keep the filters.
func TestRunListFiltersAndPaging(t *testing.T) {
	tp := testutil.StartPlane(t)
	ws := testutil.UploadWorkspace(t, tp.Admin, map[string]string{"a.txt": "a"})
	submit := func(pool string, n int) {
		for i := 0; i < n; i++ {
			if _, err := tp.Admin.SubmitRun(bg, client.RunRequest{Agent: protocol.AgentSpec{Kind: protocol.AgentMock}, Prompt: "task " + pool, Pool: pool, Workspace: ws}); err != nil {
				t.Fatal(err)
			}
		}
	}
	submit("local", 27)
	submit("default", 2)
	w := newWeb(t, tp.URL)
	w.signIn(tp.AdminToken)
	rows := func(body string) int { return strings.Count(body, "<tr data-run=") }

	first := w.get("/ui/?pool=local")
	if n := rows(first.body); n != 25 || strings.Contains(first.body, "task default") {
		t.Fatalf("first page of pool local: %d rows", n)
	}
	m := regexp.MustCompile(`href="(/ui/\?[^"]*cursor=[^"]*)">Older`).FindStringSubmatch(first.body)
	if m == nil || !strings.Contains(m[1], "pool=local") {
		t.Fatalf("no next-page link keeping the filter:\n%s", first.body)
	}
	next := w.get(strings.ReplaceAll(m[1], "&amp;", "&"))
	if n := rows(next.body); n != 2 || !strings.Contains(next.body, "← Newest") {
		t.Fatalf("second page: %d rows", n)
	}
	if n := rows(w.get("/ui/?pool=default").body); n != 2 {
		t.Fatalf("pool default: %d rows", n)
	}
	if n := rows(w.get("/ui/?state=completed").body); n != 0 {
		t.Fatalf("state completed: %d rows", n)
	}
	if r := w.get("/ui/?state=sleeping"); r.status != http.StatusBadRequest || !strings.Contains(r.body, "is not one of") {
		t.Fatalf("bad state filter: %d", r.status)
	}
	if stream := regexp.MustCompile(`data-stream="([^"]+)"`).FindStringSubmatch(first.body); stream == nil || !strings.Contains(stream[1], "pool=local") || !strings.Contains(stream[1], "since=") {
		t.Fatalf("live stream URL does not carry the filter and since: %v", stream)
	}
}

// sseLines reads a Server-Sent Events response line by line.
func sseLines(t *testing.T, w *web, ctx context.Context, path string) (<-chan string, *http.Response) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, w.base+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "text/event-stream")
	resp, err := w.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("%s: %d %s", path, resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	lines := make(chan string, 100)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	return lines, resp
}

// waitLine reads lines until one contains want.
func waitLine(t *testing.T, lines <-chan string, want string) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("stream ended before %q", want)
			}
			if strings.Contains(l, want) {
				return
			}
		case <-timeout:
			t.Fatalf("no %q on the stream", want)
		}
	}
}

// TestLiveStreams: the UI's streams say what changed, end when the run
// ends, and leave nothing running.
func TestLiveStreams(t *testing.T) {
	testutil.CheckGoroutines(t)
	tp := testutil.StartPlane(t)
	w := newWeb(t, tp.URL)
	t.Cleanup(w.http.CloseIdleConnections)
	w.signIn(tp.AdminToken)
	ctx, cancel := context.WithCancel(bg)
	defer cancel()

	list, listResp := sseLines(t, w, ctx, "/ui/stream/runs?pool=local")
	defer listResp.Body.Close()
	run := submitCommand(t, tp.Admin, "true", nil)
	waitLine(t, list, `"id":"`+run.ID+`"`)

	events, evResp := sseLines(t, w, ctx, "/ui/runs/"+run.ID+"/stream?after=0")
	defer evResp.Body.Close()
	waitLine(t, events, "id: 1")
	waitLine(t, events, `event: state`)
	cl := tp.EnrollRunner("local").MustClaim(t)
	waitLine(t, events, `"type":"run.claimed"`)
	waitLine(t, list, `"state":"claimed"`)
	cl.Finish(t, protocol.RunCompleted{})
	waitLine(t, events, "event: end")
	for range events { // the stream ends after "end"
	}
	waitLine(t, list, `"state":"completed"`)
	cancel()
	for range list {
	}
}
