package workspace_test

import (
	"errors"
	"strings"
	"testing"

	"warrant.dev/warrant/internal/workspace"
	"warrant.dev/warrant/protocol"
)

func TestPatternSemantics(t *testing.T) {
	cases := []struct {
		patterns []string
		fold     bool
		path     string
		want     string // the matching pattern, "" for no match
	}{
		// No slash: matches the base name, or any directory on the way.
		{[]string{".env"}, true, ".env", ".env"},
		{[]string{".env"}, true, "config/.env", ".env"},
		{[]string{".env"}, true, ".env/inner.txt", ".env"},
		{[]string{".env"}, true, "x.env", ""},
		{[]string{".env.*"}, true, "app/.env.local", ".env.*"},
		{[]string{".env.*"}, true, ".env", ""},
		{[]string{"*.pem"}, true, "certs/a/b/server.PEM", "*.pem"},
		{[]string{"*.pem"}, false, "server.PEM", ""},
		{[]string{"id_rsa*"}, true, "home/.ssh/id_rsa.pub", "id_rsa*"},
		{[]string{"id_rsa*"}, true, "my_id_rsa", ""},
		{[]string{"*.key"}, true, "keys.key/readme", "*.key"},
		{[]string{"secret?.txt"}, true, "a/secret1.txt", "secret?.txt"},
		{[]string{"[st]mp"}, false, "x/tmp", "[st]mp"},
		{[]string{"**/name"}, false, "a/b/name", "**/name"},
		// A trailing slash matches directories only.
		{[]string{"build/"}, false, "build/out.o", "build/"},
		{[]string{"build/"}, false, "src/build/out.o", "build/"},
		{[]string{"build/"}, false, "build", ""},
		// A slash anywhere else anchors the pattern at the root.
		{[]string{"docs/*.md"}, false, "docs/a.md", "docs/*.md"},
		{[]string{"docs/*.md"}, false, "docs/deep/a.md", ""},
		{[]string{"docs/*.md"}, false, "x/docs/a.md", ""},
		{[]string{"/TODO"}, false, "TODO", "/TODO"},
		{[]string{"/TODO"}, false, "a/TODO", ""},
		{[]string{"config/secrets"}, false, "config/secrets/db.yml", "config/secrets"},
		{[]string{"docs/**"}, false, "docs/a/b/c.md", "docs/**"},
		{[]string{"docs/**/*.md"}, false, "docs/a.md", "docs/**/*.md"},
		{[]string{"docs/**/*.md"}, false, "docs/a/b/c.md", "docs/**/*.md"},
		{[]string{"docs/**/*.md"}, false, "docs/a/b/c.txt", ""},
		{[]string{"**/testdata/*.json"}, false, "pkg/x/testdata/v.json", "**/testdata/*.json"},
		{[]string{"a/*/c"}, false, "a/b/c", "a/*/c"},
		{[]string{"a/*/c"}, false, "a/b/x/c", ""},
		// Case folding applies to anchored patterns too.
		{[]string{"Config/Prod.yml"}, true, "config/prod.YML", "Config/Prod.yml"},
		// First match wins.
		{[]string{"*.txt", "a.*"}, false, "a.txt", "*.txt"},
	}
	for _, tc := range cases {
		got, ok, err := workspace.MatchPattern(tc.patterns, tc.fold, tc.path)
		if err != nil {
			t.Fatalf("%q: %v", tc.patterns, err)
		}
		if got != tc.want || ok != (tc.want != "") {
			t.Errorf("patterns %q fold=%v path %q: got %q (%v), want %q", tc.patterns, tc.fold, tc.path, got, ok, tc.want)
		}
	}
}

func TestBadPatterns(t *testing.T) {
	for _, p := range []string{"", "  ", "!keep.me", "a//b", "../x", "a/./b", "[", "a\nb"} {
		if _, _, err := workspace.MatchPattern([]string{p}, false, "x"); !errors.Is(err, workspace.ErrBadPattern) {
			t.Errorf("pattern %q: error %v, want ErrBadPattern", p, err)
		}
	}
}

func FuzzValidPathAgreesWithProtocol(f *testing.F) {
	for _, s := range []string{"a", "a/b", "/a", "a//b", "./a", "a/..", ".git/x", "x/.GiT", "a\\b", "a\tb", "", ".gitx/a", "a/.git", strings.Repeat("a", 5000)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		if got, want := workspace.ValidPath(p), protocol.ValidatePath(p) == nil; got != want {
			t.Fatalf("validPath(%q) = %v, protocol.ValidatePath says %v", p, got, want)
		}
	})
}
