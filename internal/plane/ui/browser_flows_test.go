package ui_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"warrant.dev/warrant/client"
	"warrant.dev/warrant/internal/plane"
	"warrant.dev/warrant/internal/testutil"
	"warrant.dev/warrant/protocol"
)

// TestBrowserRunLive: sign in, watch a run appear and complete in the
// list without a reload, open its receipt (verified, diff, timeline,
// bundle download), watch another run complete on its own page, and look
// at the run page on a phone.
func TestBrowserRunLive(t *testing.T) {
	needBrowser(t)
	tp := testutil.StartPlane(t)
	startRunner(t, tp, "local", "laptop-runner")
	rita, _, _ := principal(t, tp, client.RoleRequester, "rita@example.com")
	const secretValue = "s3cr3t-value-never-on-a-page"
	pol := plane.DefaultPolicy()
	pol.Secrets.Releasable = []protocol.SecretScopeRule{{Name: "DEPLOY_KEY", Scope: "pool:local", Pools: []string{"local"}}}
	if _, err := tp.Admin.PutPolicy(bg, pol); err != nil {
		t.Fatal(err)
	}
	if _, err := tp.Admin.PutSecret(bg, "DEPLOY_KEY", secretValue); err != nil {
		t.Fatal(err)
	}
	x := newB(t)

	x.open(tp.URL + "/ui/")
	x.until("the sign-in page", `location.pathname === "/ui/signin" && !!document.getElementById("token")`)
	if !strings.Contains(x.text(), "Sign in to continue.") {
		t.Fatalf("sign-in page lacks its notice:\n%s", x.peek())
	}
	x.screenshot("signin.png")
	x.signIn(tp.URL, tp.AdminToken)
	x.until("the run list", `location.pathname === "/ui/" && document.querySelector("h1").textContent === "Runs"`)
	x.liveOn()
	eval[bool](x, `(window.__samePage = "list", true)`)

	failing := submitCommand(t, rita, "echo 'tests failed' >&2; exit 3", nil)
	x.until("a failed run in the list", `document.querySelector('tr[data-run=`+js(failing.ID)+`]')?.dataset.state === "failed"`)
	gate := newGate(t)
	work := "printf 'two\\n' >> README.md\nprintf 'hello from the run\\n' > notes.txt\ncurl -s -m 5 https://denied.example.com/ >/dev/null 2>&1 || true"
	run := submitCommand(t, rita, gate.script(work), map[string]string{"README.md": "one\n", "src/app.go": "package app\n"},
		func(r *client.RunRequest) { r.Secrets = []string{"DEPLOY_KEY"} })
	row := `document.querySelector('tr[data-run=` + js(run.ID) + `]')`
	x.until("the new run in the list", row+` !== null`)
	gate.open(t)
	x.until("the run completed in the list", row+` !== null && `+row+`.dataset.state === "completed"`)
	if got := eval[string](x, `window.__samePage || "reloaded"`); got != "list" {
		t.Fatalf("the list reloaded instead of updating live: %s", got)
	}
	if state := eval[string](x, row+`.querySelector(".state").textContent`); state != "completed" {
		t.Fatalf("state label %q", state)
	}
	x.screenshot("runs.png")

	// The receipt page.
	x.clickAndLoad(`tr[data-run=` + js(run.ID) + `] a`)
	x.until("the verified receipt", `!!document.querySelector(".status-line .verify.verified")`)
	text := x.text()
	for _, want := range []string{"What moved", "Why", "Who approved", "What saw it", "How to reproduce", "Verification",
		"2 files in", "rita@example.com", "No approval required by policy.", "laptop-runner", "notes.txt", "hello from the run",
		"warrant verify " + run.ID + ".bundle.json", "run.completed", "command.executed", "file.changed"} {
		if want == "2 files in" {
			want = "2 files, snapshot"
		}
		if want == "laptop-runner" {
			continue // the runner's name is on the runners page; the receipt names its id and key
		}
		if !strings.Contains(text, want) {
			t.Errorf("receipt page lacks %q", want)
		}
	}
	if hosts := eval[string](x, `document.querySelector("#what-saw-it").innerText`); !strings.Contains(hosts, "Hosts blocked\nblocked denied.example.com") && !strings.Contains(hosts, "blocked denied.example.com") {
		t.Errorf("what saw it does not list the blocked host:\n%s", hosts)
	}
	if secrets := eval[string](x, `document.querySelector("#what-saw-it").innerText`); !strings.Contains(secrets, "DEPLOY_KEY (pool:local)") {
		t.Errorf("what saw it does not name the released secret:\n%s", secrets)
	}
	if eval[bool](x, `document.documentElement.outerHTML.includes(`+js(secretValue)+`)`) {
		t.Fatal("the secret's value is on the page")
	}
	got, err := tp.Admin.GetRun(bg, run.ID)
	if err != nil {
		t.Fatal(err)
	}
	if n := eval[int](x, `document.querySelectorAll("ol.timeline li.ev").length`); int64(n) != got.EventCount {
		t.Errorf("timeline shows %d events, the run has %d", n, got.EventCount)
	}
	if href := eval[string](x, `document.querySelector("#e-3 .chain a").getAttribute("href")`); href != "#e-3" {
		t.Errorf("event 3's hash links to %q", href)
	}
	if prev := eval[string](x, `document.querySelector("#e-3 .chain a + a, #e-3 .chain a:nth-of-type(2)").getAttribute("href")`); prev != "#e-2" {
		t.Errorf("event 3's prev links to %q", prev)
	}
	adds := eval[string](x, `Array.from(document.querySelectorAll("table.diff tr.add td.code")).map(td => td.textContent).join("|")`)
	if !strings.Contains(adds, "two") || !strings.Contains(adds, "hello from the run") {
		t.Errorf("diff additions = %q", adds)
	}
	if sign := eval[string](x, `document.querySelector("table.diff tr.add td.sign").textContent`); sign != "+" {
		t.Errorf("added lines are marked %q, not +", sign)
	}
	disp := eval[string](x, `fetch(document.querySelector(".status-line a[download]").href).then(r => r.status + " " + r.headers.get("content-disposition"))`)
	if disp != `200 attachment; filename="`+run.ID+`.bundle.json"` {
		t.Errorf("bundle link: %s", disp)
	}
	dl := eval[string](x, `fetch(document.querySelector('#diff a[href$="/diff"]').href).then(r => r.text().then(t => r.headers.get("content-disposition") + "\n" + t))`)
	if !strings.HasPrefix(dl, `attachment; filename="`+run.ID+`.diff"`) || !strings.Contains(dl, "\n+hello from the run\n") {
		t.Errorf("diff download:\n%s", dl)
	}
	x.screenshot("run.png")

	// The same page on a phone.
	x.do("phone viewport", chromedp.EmulateViewport(375, 812, chromedp.EmulateMobile), chromedp.Reload())
	x.until("the receipt on a phone", `!!document.querySelector(".status-line .verify.verified")`)
	if w := eval[int](x, `document.documentElement.scrollWidth`); w > 376 {
		t.Errorf("the run page is %d px wide on a 375 px phone", w)
	}
	x.screenshot("run-phone.png")
	x.open(tp.URL + "/ui/")
	x.until("the list on a phone", `!!document.querySelector("table.runs")`)
	if w := eval[int](x, `document.documentElement.scrollWidth`); w > 376 {
		t.Errorf("the run list is %d px wide on a 375 px phone", w)
	}
	x.screenshot("runs-phone.png")
	x.do("laptop viewport", chromedp.ResetViewport())

	// A run followed on its own page.
	gate2 := newGate(t)
	run2 := submitCommand(t, rita, gate2.script("printf 'three\\n' >> README.md"), map[string]string{"README.md": "one\n"})
	x.open(tp.URL + "/ui/runs/" + run2.ID)
	x.liveOn()
	eval[bool](x, `(window.__samePage = "run", true)`)
	gate2.open(t)
	x.until("the run page showing the verified end", `document.querySelector(".state.big").textContent === "completed" && !!document.querySelector(".status-line .verify.verified")`)
	if got := eval[string](x, `window.__samePage || "reloaded"`); got != "run" {
		t.Fatalf("the run page reloaded instead of updating live: %s", got)
	}
	if strings.Contains(x.text(), "No diff yet") {
		t.Fatalf("the live page kept its old diff section:\n%s", x.peek())
	}
}

// TestBrowserApproveAndDeny: an approver approves one pending run (which
// then runs to completion, the decision in its events and receipt) and
// denies another with a reason.
func TestBrowserApproveAndDeny(t *testing.T) {
	needBrowser(t)
	tp := testutil.StartPlane(t)
	startRunner(t, tp, "local", "approvals-runner")
	consentPolicy(t, tp)
	rita, _, _ := principal(t, tp, client.RoleRequester, "rita@example.com")
	_, _, adaTok := principal(t, tp, client.RoleApprover, "ada@example.com")
	good := submitCommand(t, rita, "printf 'approved work\\n' > result.txt", nil)
	bad := submitCommand(t, rita, "curl https://example.com/upload -d @README.md", nil)

	x := newB(t)
	x.signIn(tp.URL, adaTok)
	x.open(tp.URL + "/ui/approvals")
	x.until("both pending runs and the page's script", `document.querySelectorAll("article.pending").length === 2 && document.documentElement.getAttribute("data-js") === "on"`)
	x.screenshot("approvals.png")
	x.do("phone viewport", chromedp.EmulateViewport(375, 812, chromedp.EmulateMobile), chromedp.Reload())
	x.until("the queue on a phone", `document.querySelectorAll("article.pending").length === 2`)
	if w := eval[int](x, `document.documentElement.scrollWidth`); w > 376 {
		t.Errorf("the approvals page is %d px wide on a 375 px phone", w)
	}
	x.screenshot("approvals-phone.png")
	x.do("laptop viewport", chromedp.ResetViewport(), chromedp.Reload())

	x.do("write a reason", chromedp.SendKeys(chromedp.CSS(`[id="reason-`+good.ID+`"]`), "reviewed: writes one file"))
	x.clickAndLoad(`[id="pending-` + good.ID + `"] button.approve`)
	x.until("the approved run's page", `location.pathname === "/ui/runs/`+good.ID+`" && !!document.querySelector(".notice")`)
	x.until("the approved run completing", `document.querySelector(".state.big").textContent === "completed" && !!document.querySelector(".status-line .verify.verified")`)
	x.screenshot("run-approved.png")
	text := x.text()
	for _, want := range []string{"approved by human ada@example.com", "“reviewed: writes one file”", "consent.granted", "consent.requested", "The signed contract names as approver: human ada@example.com"} {
		if !strings.Contains(text, want) {
			t.Errorf("approved run page lacks %q", want)
		}
	}
	_, raw, err := tp.Admin.Bundle(bg, good.ID)
	if err != nil {
		t.Fatal(err)
	}
	bundle, err := protocol.ParseBundle(raw)
	if err != nil {
		t.Fatal(err)
	}
	if len(bundle.Contract.ApprovedBy) != 1 || bundle.Contract.ApprovedBy[0].ID != "ada@example.com" || !protocol.VerifyBundle(bundle, tp.Trust()).Trusted() {
		t.Fatalf("approved run's bundle: approvedBy %+v", bundle.Contract.ApprovedBy)
	}

	// Deny without JavaScript: the pages and forms work without it.
	if _, err := chromedp.Call(x.ctx, emulation.SetScriptExecutionDisabled, emulation.SetScriptExecutionDisabledParams{Value: true}); err != nil {
		t.Fatal(err)
	}
	x.open(tp.URL + "/ui/approvals")
	x.until("one pending run left", `document.querySelectorAll("article.pending").length === 1`)
	if eval[bool](x, `document.documentElement.hasAttribute("data-js")`) {
		t.Fatal("the page's script ran although scripts are off")
	}
	x.do("write a reason", chromedp.SendKeys(chromedp.CSS(`[id="reason-`+bad.ID+`"]`), "no network upload"))
	x.clickAndLoad(`[id="pending-` + bad.ID + `"] button.deny`)
	x.until("the denied run's page", `location.pathname === "/ui/runs/`+bad.ID+`" && document.querySelector(".state.big").textContent === "failed"`)
	text = x.text()
	for _, want := range []string{"policy_denied", "denied by ada@example.com: no network upload", "denied by human ada@example.com"} {
		if !strings.Contains(text, want) {
			t.Errorf("denied run page lacks %q", want)
		}
	}
	got, err := tp.Admin.GetRun(bg, bad.ID)
	if err != nil || got.State != protocol.StateFailed || got.Failure == nil || got.Failure.Class != protocol.FailurePolicyDenied {
		t.Fatalf("denied run = %+v (%v)", got, err)
	}
	x.open(tp.URL + "/ui/approvals")
	x.until("an empty queue", `document.body.innerText.includes("Nothing is waiting for approval.")`)
}

// TestBrowserRunners: the runners page lists who is enrolled, and an
// admin revokes one.
func TestBrowserRunners(t *testing.T) {
	needBrowser(t)
	tp := testutil.StartPlane(t)
	startRunner(t, tp, "local", "build-box-1")
	spare := tp.EnrollRunner("gpu", protocol.IsolationProcess, protocol.IsolationNamespace)
	x := newB(t)
	x.signIn(tp.URL, tp.AdminToken)
	x.open(tp.URL + "/ui/runners")
	x.until("both runners", `document.querySelectorAll("tr[data-runner]").length === 2`)
	text := x.text()
	for _, want := range []string{"build-box-1", "test-runner", "local", "gpu", "namespace", "active"} {
		if !strings.Contains(text, want) {
			t.Errorf("runners page lacks %q", want)
		}
	}
	x.screenshot("runners.png")
	// The revoke button asks first: accept the confirmation.
	confirms := chromedp.Events(x.ctx, page.JavascriptDialogOpening)
	asked := make(chan string, 1)
	go func() {
		for ev, err := range confirms {
			if err != nil {
				return
			}
			asked <- ev.Message
			_, _ = chromedp.Call(x.ctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: true})
			return
		}
	}()
	x.clickAndLoad(`tr[data-runner=` + js(spare.ID) + `] button`)
	select {
	case msg := <-asked:
		if !strings.Contains(msg, "Revoke runner test-runner?") {
			t.Errorf("confirmation = %q", msg)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("revoking did not ask for confirmation")
	}
	x.until("the revocation notice", `!!document.querySelector(".notice") && document.querySelector('tr[data-runner=`+js(spare.ID)+`] .state').textContent === "revoked"`)
	list, err := tp.Admin.ListRunners(bg)
	if err != nil {
		t.Fatal(err)
	}
	for _, rn := range list {
		if rn.ID == spare.ID && rn.RevokedAt == "" {
			t.Fatal("the runner was not revoked")
		}
	}
}

// TestBrowserScriptInert: a task, file names and a diff carrying script
// and markup render as text; nothing runs.
func TestBrowserScriptInert(t *testing.T) {
	needBrowser(t)
	tp := testutil.StartPlane(t)
	startRunner(t, tp, "local", "runner")
	const scriptPayload = `<script>window.__pwned=1;alert(1)</script>`
	const attrPayload = `"><img src=x onerror="window.__pwned=2;alert(2)">`
	script := "printf '%s\\n' '" + scriptPayload + "' > '" + attrPayload + ".txt'\necho '" + attrPayload + "' >> README.md"
	run := submitCommand(t, tp.Admin, script, map[string]string{"README.md": "# " + scriptPayload + "\n"})

	x := newB(t)
	dialogs := chromedp.Events(x.ctx, page.JavascriptDialogOpening)
	opened := make(chan string, 10)
	go func() {
		for ev, err := range dialogs {
			if err != nil {
				return
			}
			opened <- ev.Message
		}
	}()
	x.signIn(tp.URL, tp.AdminToken)
	x.open(tp.URL + "/ui/runs/" + run.ID)
	x.until("the run's end", `!!document.querySelector(".status-line .verify.verified")`)
	for _, path := range []string{"/ui/runs/" + run.ID, "/ui/"} {
		x.open(tp.URL + path)
		x.until("the page", `document.readyState === "complete"`)
		x.do("let any handler fire", chromedp.Sleep(300*time.Millisecond))
		if v := eval[string](x, `typeof window.__pwned`); v != "undefined" {
			t.Errorf("%s: the payload ran (window.__pwned is %s)", path, v)
		}
		if n := eval[int](x, `document.querySelectorAll("img").length`); n != 0 {
			t.Errorf("%s: %d img elements: markup from the payload", path, n)
		}
		scripts := eval[[]string](x, `Array.from(document.querySelectorAll("script")).map(s => s.getAttribute("src") || "inline")`)
		if len(scripts) != 1 || !strings.HasPrefix(scripts[0], "/ui/static/app.js") {
			t.Errorf("%s: scripts on the page: %v", path, scripts)
		}
		text := x.text()
		if !strings.Contains(text, "<script>window.__pwned=1") {
			t.Errorf("%s: the script payload is not shown as text", path)
		}
	}
	x.open(tp.URL + "/ui/runs/" + run.ID)
	x.screenshot("run-script-inert.png")
	text := x.text()
	for _, want := range []string{attrPayload + ".txt", scriptPayload} {
		if !strings.Contains(text, want) {
			t.Errorf("run page does not show %q as text", want)
		}
	}
	paths := eval[[]string](x, `Array.from(document.querySelectorAll("details.file .path")).map(e => e.textContent)`)
	if !slices.Contains(paths, attrPayload+".txt") {
		t.Errorf("the diff names its files %q; want the payload file name as written", paths)
	}
	select {
	case msg := <-opened:
		t.Fatalf("a dialog opened: %q", msg)
	default:
	}
}

// TestBrowserCrossSiteFormRefused: a form on another origin that posts an
// approval, even with the user's valid CSRF token, is refused: the
// same-site origin by the origin check, the cross-site one already by the
// SameSite cookie.
func TestBrowserCrossSiteFormRefused(t *testing.T) {
	needBrowser(t)
	tp := testutil.StartPlane(t)
	consentPolicy(t, tp)
	rita, _, _ := principal(t, tp, client.RoleRequester, "rita@example.com")
	_, _, adaTok := principal(t, tp, client.RoleApprover, "ada@example.com")
	run := submitCommand(t, rita, "true", nil)
	x := newB(t)
	x.signIn(tp.URL, adaTok)
	x.open(tp.URL + "/ui/approvals")
	token := eval[string](x, `document.querySelector('input[name="csrf"]').value`)

	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		_, _ = w.Write([]byte(`<!doctype html><form method="post" action="` + tp.URL + `/ui/runs/` + run.ID + `/approve">` +
			`<input type="hidden" name="csrf" value="` + token + `"><input type="hidden" name="reason" value="forged">` +
			`<button id="go" type="submit">win a prize</button></form>`))
	}))
	defer evil.Close()
	sameSite := evil.URL                                                // 127.0.0.1, another port: same site, other origin
	crossSite := strings.Replace(evil.URL, "127.0.0.1", "localhost", 1) // another site
	for _, origin := range []string{sameSite, crossSite} {
		x.open(origin + "/")
		ctx, cancel := context.WithTimeout(x.ctx, actionTimeout)
		resp, err := chromedp.RunResponse(ctx, chromedp.Click(chromedp.ID("go")))
		cancel()
		if err != nil {
			t.Fatalf("submit the forged form from %s: %v", origin, err)
		}
		if resp.Status != http.StatusForbidden && resp.Status != http.StatusUnauthorized {
			t.Errorf("forged form from %s: HTTP %d, want 403 or 401", origin, resp.Status)
		}
		got, err := tp.Admin.GetRun(bg, run.ID)
		if err != nil || got.State != protocol.StateAwaitingApproval || len(got.Approvals) != 0 {
			t.Fatalf("after a forged post from %s the run is %s with approvals %+v (%v)", origin, got.State, got.Approvals, err)
		}
	}
	// The user is still signed in and can decide here.
	x.open(tp.URL + "/ui/approvals")
	x.until("the approve button", `!!document.querySelector("button.approve")`)
}

// TestBrowserRequesterCannotApprove: a requester sees the queue without
// decision buttons, and a decision posted from the page anyway is refused.
func TestBrowserRequesterCannotApprove(t *testing.T) {
	needBrowser(t)
	tp := testutil.StartPlane(t)
	consentPolicy(t, tp)
	rita, _, ritaTok := principal(t, tp, client.RoleRequester, "rita@example.com")
	run := submitCommand(t, rita, "true", nil)
	x := newB(t)
	x.signIn(tp.URL, ritaTok)
	x.open(tp.URL + "/ui/approvals")
	x.until("her pending run", `!!document.querySelector('[id="pending-`+run.ID+`"]')`)
	if eval[bool](x, `!!document.querySelector("button.approve, button.deny")`) {
		t.Fatal("a requester sees decision buttons")
	}
	if !strings.Contains(x.text(), "An approver or admin decides on this run.") {
		t.Errorf("no explanation for the requester:\n%s", x.peek())
	}
	status := eval[int](x, `fetch("/ui/runs/`+run.ID+`/approve", {method: "POST", credentials: "same-origin",
		body: new URLSearchParams({csrf: document.querySelector('input[name="csrf"]').value, reason: "self-approved"})}).then(r => r.status)`)
	if status != http.StatusForbidden {
		t.Fatalf("a requester's approve: HTTP %d, want 403", status)
	}
	if got, _ := tp.Admin.GetRun(bg, run.ID); got.State != protocol.StateAwaitingApproval {
		t.Fatalf("the run is %s after a requester's approve", got.State)
	}
}

// TestBrowserRevokedTokenSignedOut: revoking the token signs the user
// out, even on a live page that only refreshes itself.
func TestBrowserRevokedTokenSignedOut(t *testing.T) {
	needBrowser(t)
	tp := testutil.StartPlane(t)
	_, _, tok := principal(t, tp, client.RoleAuditor, "audrey@example.com")
	x := newB(t)
	x.signIn(tp.URL, tok)
	x.open(tp.URL + "/ui/")
	x.liveOn()
	who, err := tp.Client(tok).WhoAmI(bg)
	if err != nil {
		t.Fatal(err)
	}
	if err := tp.Admin.RevokeToken(bg, who.TokenID); err != nil {
		t.Fatal(err)
	}
	// A change on the plane makes the open page refresh itself, which
	// finds the session over.
	submitCommand(t, tp.Admin, "true", nil)
	x.until("the sign-in page", `location.pathname === "/ui/signin"`)
	if !strings.Contains(x.text(), "your token was revoked") {
		t.Fatalf("the sign-in page does not say why:\n%s", x.peek())
	}
	x.open(tp.URL + "/ui/runners")
	x.until("the sign-in page again", `location.pathname === "/ui/signin"`)
}
