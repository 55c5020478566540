package ui_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"warrant.dev/warrant/internal/runner"
	"warrant.dev/warrant/internal/runner/sandbox/process"
	"warrant.dev/warrant/internal/runner/session"
	"warrant.dev/warrant/internal/testutil"
)

// The browser tests drive Debian's headless Chromium with chromedp: one
// browser per test binary, one isolated browser context (cookies, tabs)
// per test.

// chromiumPath is Debian's Chromium; WARRANT_TEST_CHROMIUM overrides it.
var chromiumPath = func() string {
	if p := os.Getenv("WARRANT_TEST_CHROMIUM"); p != "" {
		return p
	}
	return "/usr/bin/chromium"
}()

var browser struct {
	once    sync.Once
	ctx     context.Context
	stop    func()
	err     error
	dataDir string
}

func TestMain(m *testing.M) {
	code := m.Run()
	if browser.stop != nil {
		browser.stop()
	}
	os.Exit(code)
}

func startBrowser() {
	dir, err := os.MkdirTemp("", "warrant-ui-chromium-")
	if err != nil {
		browser.err = err
		return
	}
	browser.dataDir = dir
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromiumPath),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.UserDataDir(dir),
		chromedp.WindowSize(1280, 900),
		// This machine's network is closed: Chromium's own background
		// connections would only fail and slow it down.
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-default-apps", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-features", "Translate,MediaRouter,OptimizationHints,AutofillServerCommunication"),
		chromedp.Flag("hide-scrollbars", true),
		chromedp.Flag("mute-audio", true),
	}
	allocCtx, allocCancel := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(allocCtx)
	if err := chromedp.Do(ctx); err != nil { // starts the browser
		cancel()
		allocCancel()
		browser.err = fmt.Errorf("start %s: %w", chromiumPath, err)
		return
	}
	browser.ctx = ctx
	browser.stop = func() {
		cancel()
		allocCancel()
		_ = os.RemoveAll(dir)
	}
}

var skipNotice sync.Once

// needBrowser skips the test loudly without Chromium, or fails it under
// CI=true. Browser tests call it first.
func needBrowser(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err == nil {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("browser tests need %s (apt-get install chromium); CI must run them", chromiumPath)
	}
	msg := fmt.Sprintf("SKIPPED: the web UI's browser tests need %s (apt-get install chromium); under CI=true they fail", chromiumPath)
	skipNotice.Do(func() { fmt.Fprintln(os.Stderr, msg) })
	t.Skip(msg)
}

// tab opens a tab in a fresh browser context (its own cookies).
func tab(t *testing.T) context.Context {
	t.Helper()
	needBrowser(t)
	browser.once.Do(startBrowser)
	if browser.err != nil {
		t.Fatalf("browser: %v", browser.err)
	}
	ctx, cancel := chromedp.NewContext(browser.ctx, chromedp.WithNewBrowserContext())
	if err := chromedp.Do(ctx); err != nil {
		cancel()
		t.Fatalf("open tab: %v", err)
	}
	t.Cleanup(cancel)
	return ctx
}

// b wraps a tab with helpers that fail the test on error. Each action
// gets its own deadline.
type b struct {
	t   *testing.T
	ctx context.Context
}

func newB(t *testing.T) *b { return &b{t: t, ctx: tab(t)} }

const actionTimeout = 30 * time.Second

func (x *b) do(what string, actions ...chromedp.Action[chromedp.Void]) {
	x.t.Helper()
	ctx, cancel := context.WithTimeout(x.ctx, actionTimeout)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		x.t.Fatalf("%s: %v (page %s)", what, err, x.location())
	}
}

func (x *b) location() string {
	ctx, cancel := context.WithTimeout(x.ctx, 2*time.Second)
	defer cancel()
	loc, _ := chromedp.Run(ctx, chromedp.Location())
	return loc
}

// eval evaluates a JavaScript expression to T.
func eval[T any](x *b, expr string) T {
	x.t.Helper()
	ctx, cancel := context.WithTimeout(x.ctx, actionTimeout)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		x.t.Fatalf("evaluate %s: %v (page %s)", expr, err, x.location())
	}
	return v
}

// until waits for a JavaScript expression to be true. It evaluates it
// again and again, so a navigation on the way (a live page sent to
// sign-in) does not end the wait.
func (x *b) until(what, expr string) {
	x.t.Helper()
	deadline := time.Now().Add(actionTimeout)
	var lastErr error
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(x.ctx, 2*time.Second)
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](expr))
		cancel()
		if err == nil && ok {
			return
		}
		lastErr = err
		time.Sleep(50 * time.Millisecond)
	}
	x.t.Fatalf("waiting for %s (%s): last error %v\npage %s:\n%s", what, expr, lastErr, x.location(), x.peek())
}

// open navigates and waits for the page to load.
func (x *b) open(url string) {
	x.t.Helper()
	x.do("open "+url, chromedp.Navigate(url))
}

// click clicks a selector and waits for the page it leads to.
func (x *b) clickAndLoad(sel string) {
	x.t.Helper()
	ctx, cancel := context.WithTimeout(x.ctx, actionTimeout)
	defer cancel()
	if _, err := chromedp.Run(ctx, chromedp.WaitEvent(page.LoadEventFired, nil, chromedp.Click(chromedp.CSS(sel)))); err != nil {
		x.t.Fatalf("click %s: %v (page %s)", sel, err, x.location())
	}
}

// peek is the start of the page's text, for failure messages.
func (x *b) peek() string {
	ctx, cancel := context.WithTimeout(x.ctx, 2*time.Second)
	defer cancel()
	text, _ := chromedp.Run(ctx, chromedp.Evaluate[string]("document.body ? document.body.innerText : ''"))
	if len(text) > 3000 {
		text = text[:3000] + "…"
	}
	return text
}

// text is the visible text of the page.
func (x *b) text() string { return eval[string](x, "document.body.innerText") }

// screenshot saves a full-page PNG as a test artifact.
func (x *b) screenshot(name string) {
	x.t.Helper()
	ctx, cancel := context.WithTimeout(x.ctx, actionTimeout)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		x.t.Fatalf("screenshot %s: %v", name, err)
	}
	dir := os.Getenv("WARRANT_TEST_ARTIFACTS")
	if dir == "" {
		root, err := filepath.Abs("../../..")
		if err != nil {
			x.t.Fatal(err)
		}
		dir = filepath.Join(root, ".artifacts")
	}
	dir = filepath.Join(dir, "ui")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		x.t.Fatal(err)
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		x.t.Fatal(err)
	}
	x.t.Logf("screenshot: %s", path)
}

// signIn signs in through the form.
func (x *b) signIn(planeURL, token string) {
	x.t.Helper()
	x.open(planeURL + "/ui/signin")
	x.do("type the token", chromedp.WaitVisible(chromedp.ID("token")), chromedp.SendKeys(chromedp.ID("token"), token))
	x.clickAndLoad(`.signin button[type="submit"]`)
	if loc := x.location(); strings.Contains(loc, "/ui/signin") {
		x.t.Fatalf("still on the sign-in page after signing in: %s\n%s", loc, x.text())
	}
}

// liveOn waits for the page's live stream to be open.
func (x *b) liveOn() {
	x.t.Helper()
	x.until("the live stream", `document.documentElement.getAttribute("data-live") === "on"`)
}

// startRunner starts a real runner (process backend) for pool in this
// process.
func startRunner(t *testing.T, tp *testutil.TestPlane, pool, name string) {
	t.Helper()
	r, err := runner.New(runner.Options{
		PlaneURL: tp.URL, Pool: pool, Name: name, DataDir: t.TempDir(), EnrollToken: tp.EnrollToken(pool),
		Backends: []session.Backend{process.New(process.Options{})},
		Logger:   testutil.NewLogger(t), ClaimWait: time.Second, KillGrace: time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	testutil.RunRunner(t, r, 10*time.Second)
}

// gated is a shell script that waits for a file before doing work, so a
// test can open a page while the run is still going.
type gated struct {
	path string
}

func newGate(t *testing.T) gated { return gated{path: filepath.Join(t.TempDir(), "go")} }

func (g gated) script(work string) string {
	return "while [ ! -e " + strconv.Quote(g.path) + " ]; do sleep 0.05; done\n" + work
}

func (g gated) open(t *testing.T) {
	if err := os.WriteFile(g.path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
}

// js quotes s as a JavaScript string literal.
func js(s string) string { return strconv.Quote(s) }
