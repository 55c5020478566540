package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestReadmeQuickstart follows the README's quick start literally, on a
// clean HOME: the first command must produce a verified receipt. The
// second command (the test suite) is what CI runs through .ci/run; this
// test checks that .ci/run runs it.
func TestReadmeQuickstart(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the README's first command; skipped with -short")
	}
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	blocks := quickstartCommands(t, string(readme))
	if len(blocks) < 2 {
		t.Fatalf("the README's quick start must show two commands, found %q", blocks)
	}
	first, second := blocks[0], blocks[1]
	if first != "go run ./cmd/warrant demo" || second != "go test ./..." {
		t.Fatalf("quick start commands changed (%q, %q): update this test with the README", first, second)
	}
	ci, err := os.ReadFile(filepath.Join(root, ".ci", "run"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(ci), "go test -race") || !strings.Contains(string(ci), "./...") {
		t.Fatal(".ci/run does not run the README's test command (with -race)")
	}

	home := t.TempDir()
	cmd := exec.Command("sh", "-c", first)
	cmd.Dir = root
	cmd.Env = cleanEnv(home)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s: %v\n%s", first, err, out.String())
	}
	text := out.String()
	for _, want := range []string{"VERIFIED", "✓ pinned-keys", "blocked denied.example.com", "MOCK_SECRET (pool:local) released", "WHAT MOVED", "withheld   1 path matched deny patterns: .env"} {
		if !strings.Contains(text, want) {
			t.Errorf("the demo's output lacks %q:\n%s", want, text)
		}
	}
	if regexp.MustCompile(`demo-[0-9a-f]{32}`).MatchString(text) {
		t.Error("the demo printed its secret's value")
	}
	// The demo leaves the user's HOME as it found it, apart from the go
	// command's own settings (~/.config/go, e.g. telemetry).
	_ = filepath.WalkDir(home, func(p string, d os.DirEntry, err error) error {
		rel, _ := filepath.Rel(home, p)
		switch {
		case err != nil || rel == "." || rel == ".config":
			return err
		case rel == filepath.Join(".config", "go"):
			return filepath.SkipDir
		}
		t.Errorf("the demo left %s in HOME", rel)
		return nil
	})
}

// quickstartCommands returns the sh code blocks of the README's "Quick
// start" section.
func quickstartCommands(t *testing.T, readme string) []string {
	t.Helper()
	start := strings.Index(readme, "## Quick start")
	if start < 0 {
		t.Fatal("the README has no \"## Quick start\" section")
	}
	section := readme[start+len("## Quick start"):]
	if end := strings.Index(section, "\n## "); end >= 0 {
		section = section[:end]
	}
	var cmds []string
	for _, m := range regexp.MustCompile("(?s)```sh\n(.*?)```").FindAllStringSubmatch(section, -1) {
		cmds = append(cmds, strings.TrimSpace(m[1]))
	}
	return cmds
}

// cleanEnv is a minimal environment with a fresh HOME; Go's caches stay
// where they are so the build is warm.
func cleanEnv(home string) []string {
	env := []string{"HOME=" + home, "PATH=" + os.Getenv("PATH")}
	for _, k := range []string{"GOCACHE", "GOMODCACHE", "GOPATH", "GOFLAGS", "GOPROXY", "GOTOOLCHAIN"} {
		v := os.Getenv(k)
		if v == "" {
			if out, err := exec.Command("go", "env", k).Output(); err == nil {
				v = strings.TrimSpace(string(out))
			}
		}
		if v != "" {
			env = append(env, k+"="+v)
		}
	}
	return env
}
