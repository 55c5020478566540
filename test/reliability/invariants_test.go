package reliability_test

import (
	"bufio"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	_ "modernc.org/sqlite"

	"warrant.dev/warrant/client"
	"warrant.dev/warrant/internal/plane"
	"warrant.dev/warrant/protocol"
)

func bg(t testing.TB) context.Context { return t.Context() }

// newToken returns a fresh marker token; a run's script carries it, so the
// run's prompt names the marker lines it wrote.
func newToken() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return "tok-" + hex.EncodeToString(b)
}

var tokenPattern = regexp.MustCompile(`tok-[0-9a-f]{12}`)

// markerScript wraps body in two appends to the marker file, which lives
// outside every workspace and only the test reads: "TOKEN start NANOS"
// before the body and "TOKEN end NANOS" after it. Counting the lines per
// token counts executions.
func markerScript(markers, token, body string) string {
	q := shellQuote(markers)
	return fmt.Sprintf("echo \"%s start $(date +%%s%%N)\" >> %s\n%s\necho \"%s end $(date +%%s%%N)\" >> %s\n", token, q, body, token, q)
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// markerLines is what the marker file says about one token.
type markerLines struct {
	starts, ends []time.Time
}

func readMarkers(t testing.TB, path string) map[string]*markerLines {
	t.Helper()
	out := map[string]*markerLines{}
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return out
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) != 3 {
			t.Fatalf("marker file %s: malformed line %q", path, sc.Text())
		}
		ns, err := strconv.ParseInt(fields[2], 10, 64)
		if err != nil {
			t.Fatalf("marker file %s: line %q: %v", path, sc.Text(), err)
		}
		m := out[fields[0]]
		if m == nil {
			m = &markerLines{}
			out[fields[0]] = m
		}
		switch fields[1] {
		case "start":
			m.starts = append(m.starts, time.Unix(0, ns))
		case "end":
			m.ends = append(m.ends, time.Unix(0, ns))
		default:
			t.Fatalf("marker file %s: malformed line %q", path, sc.Text())
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// allRuns lists every run the plane holds.
func allRuns(ctx context.Context, c *client.Client) ([]client.Run, error) {
	var all []client.Run
	cursor := ""
	for {
		page, err := c.ListRuns(ctx, client.ListRunsOptions{Limit: 500, Cursor: cursor})
		if err != nil {
			return nil, err
		}
		all = append(all, page.Runs...)
		if page.Next == "" {
			return all, nil
		}
		cursor = page.Next
	}
}

func isTerminal(state string) bool {
	return state == protocol.StateCompleted || state == protocol.StateFailed || state == protocol.StateCancelled
}

// waitAllTerminal waits until every run the plane holds has ended (the
// reaper fails runs whose lease lapsed) and returns them.
func waitAllTerminal(t testing.TB, c *client.Client, d time.Duration) []client.Run {
	t.Helper()
	var runs []client.Run
	var live []string
	ok := eventually(d, func() bool {
		var err error
		runs, err = allRuns(bg(t), c)
		if err != nil {
			t.Logf("list runs: %v", err)
			return false
		}
		live = live[:0]
		for _, r := range runs {
			if !isTerminal(r.State) {
				live = append(live, r.ID+" ("+r.State+")")
			}
		}
		return len(live) == 0
	})
	if !ok {
		t.Fatalf("%d runs did not end within %s: %v", len(live), d, live)
	}
	return runs
}

// trustFromFiles pins the plane key (read from the plane's key file) and
// the runners' keys (read from their data directories): never keys a
// plane or a bundle handed over.
func trustFromFiles(t testing.TB, pp *planeProc, runners ...*runnerProc) *protocol.TrustStore {
	t.Helper()
	ts := protocol.NewTrustStore()
	pemText, err := os.ReadFile(filepath.Join(pp.data, plane.KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	key, err := protocol.ParsePrivateKeyPEM(string(pemText))
	if err != nil {
		t.Fatal(err)
	}
	ts.Add(protocol.SignerPlane, key.Public())
	for _, r := range runners {
		_, pub := r.identity(t)
		ts.Add(protocol.SignerRunner, pub)
	}
	return ts
}

// outcome sums up what the invariant check saw.
type outcome struct {
	total     int
	byState   map[string]int
	byFailure map[string]int // "class: message"
	verified  int            // bundles that verified with pinned keys
	executed  int            // tokens with a start line
}

func (o outcome) String() string {
	states := make([]string, 0, len(o.byState))
	for s, n := range o.byState {
		states = append(states, fmt.Sprintf("%s %d", s, n))
	}
	sort.Strings(states)
	fails := make([]string, 0, len(o.byFailure))
	for f, n := range o.byFailure {
		fails = append(fails, fmt.Sprintf("%d× %s", n, f))
	}
	sort.Strings(fails)
	return fmt.Sprintf("%d runs: %s; %d bundles verified; %d sessions started; failures: %s",
		o.total, strings.Join(states, ", "), o.verified, o.executed, strings.Join(fails, "; "))
}

// checkInvariants checks, for every run the plane holds:
//
//   - it ended: completed (with a receipt), failed (with a failure class
//     from the closed set and a message) or cancelled (with who);
//   - its chain has at most one run.claimed (exactly one if it completed),
//     exactly one terminal event, and that event is the last;
//   - its marker token has at most one start and one end line: it was
//     never executed twice; a completed run has exactly one of each;
//   - a run the plane failed itself (runner lost) shows no session
//     activity after the plane's run.failed event: its session was
//     stopped, not left running;
//   - every receipt's bundle verifies offline with the plane and runner
//     keys pinned from files (and a few with the real `warrant verify`);
//     bundles are kept for the leak scan.
func checkInvariants(t testing.TB, pp *planeProc, markers string, trust *protocol.TrustStore) outcome {
	t.Helper()
	ctx := bg(t)
	runs, err := allRuns(ctx, pp.admin)
	if err != nil {
		t.Fatal(err)
	}
	marks := readMarkers(t, markers)
	bundleDir := suiteDir(t, "bundles")
	out := outcome{total: len(runs), byState: map[string]int{}, byFailure: map[string]int{}}
	seenTokens := map[string]string{}
	results := make([]runCheck, len(runs))
	var wg sync.WaitGroup
	work := make(chan int)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				results[i] = checkRun(ctx, pp, runs[i], trust, bundleDir)
			}
		}()
	}
	go func() {
		for i := range runs {
			work <- i
		}
		close(work)
	}()
	wg.Wait()
	verifiedWithCLI := 0
	for i, r := range runs {
		res := results[i]
		out.byState[r.State]++
		if r.Failure != nil {
			out.byFailure[r.Failure.Class+": "+r.Failure.Message]++
		}
		if res.verified {
			out.verified++
			if verifiedWithCLI < 2 {
				verifyWithCLI(t, trust, filepath.Join(bundleDir, r.ID+".bundle.json"))
				verifiedWithCLI++
			}
		}
		for _, e := range res.errs {
			t.Errorf("run %s (%s): %s", r.ID, r.State, e)
		}
		tokens := tokenPattern.FindAllString(r.Prompt, -1)
		if len(tokens) == 0 {
			continue
		}
		tok := tokens[0]
		if other, dup := seenTokens[tok]; dup {
			t.Errorf("runs %s and %s carry the same marker token %s", other, r.ID, tok)
		}
		seenTokens[tok] = r.ID
		m := marks[tok]
		if m == nil {
			m = &markerLines{}
		}
		if len(m.starts) > 0 {
			out.executed++
		}
		if len(m.starts) > 1 || len(m.ends) > 1 {
			t.Errorf("run %s (%s) was executed more than once: %d start and %d end lines", r.ID, r.State, len(m.starts), len(m.ends))
		}
		if len(m.ends) > len(m.starts) {
			t.Errorf("run %s: an end line without a start line", r.ID)
		}
		if r.State == protocol.StateCompleted && (len(m.starts) != 1 || len(m.ends) != 1) {
			t.Errorf("run %s completed but its marker shows %d start and %d end lines", r.ID, len(m.starts), len(m.ends))
		}
		if !res.failedAt.IsZero() {
			for _, at := range append(m.starts, m.ends...) {
				if at.After(res.failedAt) {
					t.Errorf("run %s: its session wrote a marker at %s, after the plane failed the run at %s (%s)", r.ID,
						at.Format(time.RFC3339Nano), res.failedAt.Format(time.RFC3339Nano), r.Failure.Message)
				}
			}
		}
	}
	for tok := range marks {
		if _, ok := seenTokens[tok]; !ok {
			t.Errorf("marker token %s was executed but no run carries it", tok)
		}
	}
	return out
}

// planeFailureMessages are the run.failed messages only the plane writes.
var planeFailureMessages = []string{"runner lost: lease expired"}

// runCheck is what checkRun found about one run.
type runCheck struct {
	errs     []string
	verified bool
	failedAt time.Time // when the plane wrote run.failed itself (runner lost)
}

func checkRun(ctx context.Context, pp *planeProc, r client.Run, trust *protocol.TrustStore, bundleDir string) (res runCheck) {
	bad := func(format string, args ...any) { res.errs = append(res.errs, fmt.Sprintf(format, args...)) }
	switch r.State {
	case protocol.StateCompleted:
		if !r.HasReceipt {
			bad("completed without a receipt")
		}
	case protocol.StateFailed:
		if r.Failure == nil || !slices.Contains(protocol.FailureClasses, r.Failure.Class) || strings.TrimSpace(r.Failure.Message) == "" {
			bad("failed without a reason from the closed set: %+v", r.Failure)
		}
	case protocol.StateCancelled:
		if r.Cancellation == nil || r.Cancellation.Actor.ID == "" {
			bad("cancelled without saying who cancelled it")
		}
	default:
		bad("not ended")
		return res
	}
	evs, err := pp.admin.Events(ctx, r.ID, -1)
	if err != nil {
		bad("events: %v", err)
		return res
	}
	claims, terminals := 0, 0
	for i, e := range evs.Events {
		typ := e.Event.Type()
		switch typ {
		case protocol.EventRunClaimed:
			claims++
		case protocol.EventRunCompleted, protocol.EventRunFailed, protocol.EventRunCancelled:
			terminals++
			if i != len(evs.Events)-1 {
				bad("terminal event %s at seq %d is not the last", typ, e.Seq)
			}
			if typ == protocol.EventRunFailed {
				if pl, err := e.Event.Payload(); err == nil {
					if f, ok := pl.(protocol.RunFailed); ok && slices.Contains(planeFailureMessages, f.Message) {
						res.failedAt, _ = protocol.ParseTime(e.TS)
					}
				}
			}
		}
	}
	if claims > 1 {
		bad("claimed %d times", claims)
	}
	if r.State == protocol.StateCompleted && claims != 1 {
		bad("completed with %d run.claimed events", claims)
	}
	if len(evs.Events) > 0 && terminals != 1 {
		bad("%d terminal events", terminals)
	}
	if r.State == protocol.StateCompleted && len(evs.Events) == 0 {
		bad("completed with no events")
	}
	if len(evs.Events) > 0 {
		if err := protocol.VerifyChain(evs.Events, r.ContractHash); err != nil {
			bad("stored chain does not verify: %v", err)
		}
	}
	if !r.HasReceipt {
		return res
	}
	b, raw, err := pp.admin.Bundle(ctx, r.ID)
	if err != nil {
		bad("bundle: %v", err)
		return res
	}
	if err := os.WriteFile(filepath.Join(bundleDir, r.ID+".bundle.json"), raw, 0o600); err != nil {
		bad("keep bundle: %v", err)
	}
	rep := protocol.VerifyBundle(b, trust)
	if !rep.Trusted() {
		bad("bundle does not verify with pinned keys: %v", rep.Err())
		return res
	}
	if b.Receipt.Status != r.State {
		bad("receipt status %s, run state %s", b.Receipt.Status, r.State)
	}
	res.verified = true
	return res
}

// verifyWithCLI runs the real `warrant verify` on a bundle with a trust
// file of the pinned keys.
func verifyWithCLI(t testing.TB, trust *protocol.TrustStore, bundlePath string) {
	t.Helper()
	tf, err := json.Marshal(trust.File())
	if err != nil {
		t.Fatal(err)
	}
	trustPath := bundlePath + ".trust.json"
	if err := os.WriteFile(trustPath, tf, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(warrantBinary(t), "verify", "--trust", trustPath, bundlePath)
	cmd.Env = append(os.Environ(), "WARRANT_CONFIG_DIR="+filepath.Dir(bundlePath))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("warrant verify %s: %v\n%s", filepath.Base(bundlePath), err, out)
	}
}

// checkDatabase copies a SQLite database (and its WAL, if any) and runs
// PRAGMA integrity_check and foreign_key_check on the copy, so it can be
// called on the files a SIGKILLed plane left without touching them.
func checkDatabase(t testing.TB, dbPath string) {
	t.Helper()
	dir := t.TempDir()
	copyPath := filepath.Join(dir, filepath.Base(dbPath))
	for _, suffix := range []string{"", "-wal"} {
		if err := copyFile(dbPath+suffix, copyPath+suffix); err != nil && !(suffix != "" && os.IsNotExist(err)) {
			t.Fatalf("copy database: %v", err)
		}
	}
	db, err := sql.Open("sqlite", "file:"+copyPath)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.Query("PRAGMA integrity_check")
	if err != nil {
		t.Fatalf("integrity_check: %v", err)
	}
	var msgs []string
	for rows.Next() {
		var m string
		if err := rows.Scan(&m); err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, m)
	}
	rows.Close()
	if len(msgs) != 1 || msgs[0] != "ok" {
		t.Errorf("%s: PRAGMA integrity_check: %v", dbPath, msgs)
	}
	fk, err := db.Query("PRAGMA foreign_key_check")
	if err != nil {
		t.Fatalf("foreign_key_check: %v", err)
	}
	defer fk.Close()
	if fk.Next() {
		cols, _ := fk.Columns()
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		_ = fk.Scan(ptrs...)
		t.Errorf("%s: PRAGMA foreign_key_check found a violation: %v", dbPath, vals)
	}
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

func failureText(f *client.Failure) string {
	if f == nil {
		return ""
	}
	return f.Class + ": " + f.Message
}
