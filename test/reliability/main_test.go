package reliability_test

import (
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	flagLoad = flag.Bool("reliability.load", false, "run the 1,000-run load test (warrant bench, separate plane process) and print its figures")
	flagSoak = flag.Duration("reliability.soak", 0, "run a steady-rate soak this long (e.g. 30m), printing memory and goroutines at intervals")
	flagCut  = flag.Duration("reliability.cut", 0, "length of the runner–plane connection cut (default 6s against 3s leases; 30s for the on-demand run)")
	flagKeep = flag.Bool("reliability.keep", false, "keep the suite directory (data dirs, logs, bundles) after the run")
	flagRace = flag.Bool("reliability.race", false, "build the warrant binary under test with -race")
)

// suite is the state shared by the package's tests. Every plane data
// directory, runner data directory, process log, receipt and bundle lives
// under root, so the leak scan after the last test (TestMain) sees all of
// it.
var suite struct {
	root string

	binOnce sync.Once
	bin     string
	binErr  error

	mu      sync.Mutex
	secrets map[string]string // secret value → where it was used
	tokens  map[string]string // bearer token → what it is
}

func TestMain(m *testing.M) {
	flag.Parse()
	if fuzzing() {
		// Fuzz workers run no suite test and may be stopped without
		// returning here: leave nothing behind.
		os.Exit(m.Run())
	}
	root, err := os.MkdirTemp("", "warrant-reliability-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "reliability: suite directory:", err)
		os.Exit(2)
	}
	suite.root = root
	suite.secrets = map[string]string{}
	suite.tokens = map[string]string{}
	code := m.Run()
	// The leak scan sees what every test left behind, whatever their
	// outcome (a failed test's data is evidence too).
	if scanCode := leakScanAfterSuite(os.Stdout); scanCode != 0 && code == 0 {
		code = scanCode
	}
	if *flagKeep || code != 0 {
		fmt.Fprintf(os.Stderr, "reliability: suite directory kept: %s\n", root)
	} else {
		os.RemoveAll(root)
	}
	os.Exit(code)
}

// fuzzing reports whether this process fuzzes (or is a fuzz worker).
func fuzzing() bool {
	if f := flag.Lookup("test.fuzz"); f != nil && f.Value.String() != "" {
		return true
	}
	f := flag.Lookup("test.fuzzworker")
	return f != nil && f.Value.String() == "true"
}

// warrantBinary builds the real warrant binary once per test process.
func warrantBinary(t testing.TB) string {
	t.Helper()
	if suite.root == "" {
		t.Skip("the suite's scenarios do not run while fuzzing (use -run='^$' with -fuzz)")
	}
	suite.binOnce.Do(func() {
		path := filepath.Join(suite.root, "bin", "warrant")
		args := []string{"build", "-o", path}
		if *flagRace {
			args = append(args, "-race")
		}
		out, err := exec.Command("go", append(args, "warrant.dev/warrant/cmd/warrant")...).CombinedOutput()
		if err != nil {
			suite.binErr = fmt.Errorf("go build: %v\n%s", err, out)
			return
		}
		suite.bin = path
	})
	if suite.binErr != nil {
		t.Fatalf("build warrant: %v", suite.binErr)
	}
	return suite.bin
}

var unsafeName = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

// suiteDir makes a fresh directory under the suite root for the test,
// kept until the leak scan after the last test.
func suiteDir(t testing.TB, name string) string {
	t.Helper()
	if suite.root == "" {
		t.Skip("the suite's scenarios do not run while fuzzing (use -run='^$' with -fuzz)")
	}
	base := filepath.Join(suite.root, unsafeName.ReplaceAllString(t.Name(), "_"))
	if err := os.MkdirAll(base, 0o700); err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp(base, unsafeName.ReplaceAllString(name, "_")+"-")
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// newSecret returns a fresh random secret value and registers it for the
// leak scan. The value is long enough that its encodings are redacted too
// (redact.MinEncodedLen) and random enough never to occur by chance.
func newSecret(t testing.TB, use string) string {
	b := make([]byte, 18)
	_, _ = rand.Read(b)
	v := "s3cr3t-" + hex.EncodeToString(b)
	suite.mu.Lock()
	suite.secrets[v] = t.Name() + ": " + use
	suite.mu.Unlock()
	return v
}

// registerToken records a bearer token for the leak scan: tokens must
// never appear in a log, a blob or the database (which keeps only their
// hashes).
func registerToken(t testing.TB, token, what string) {
	if token == "" {
		return
	}
	suite.mu.Lock()
	suite.tokens[token] = t.Name() + ": " + what
	suite.mu.Unlock()
}

// isCI reports whether the suite runs in CI, where tests that need root
// must not skip.
func isCI() bool { return strings.EqualFold(os.Getenv("CI"), "true") }

// eventually polls cond every 100 ms until it returns true or d passes.
func eventually(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(100 * time.Millisecond)
	}
}
