package session

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestResolveCwd(t *testing.T) {
	root := t.TempDir()
	ws := filepath.Join(root, "ws")
	outside := filepath.Join(root, "outside")
	for _, d := range []string{filepath.Join(ws, "src", "pkg"), outside} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(outside, filepath.Join(ws, "escape")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("src/pkg", filepath.Join(ws, "inside")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(ws, "file"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	realWS, _ := filepath.EvalSymlinks(ws)
	for _, tc := range []struct {
		rel, want string
	}{
		{".", realWS},
		{"", realWS},
		{"src", filepath.Join(realWS, "src")},
		{"src/pkg/..", filepath.Join(realWS, "src")},
		{"inside", filepath.Join(realWS, "src", "pkg")},
	} {
		got, err := ResolveCwd(ws, tc.rel)
		if err != nil || got != tc.want {
			t.Errorf("ResolveCwd(%q) = %q, %v; want %q", tc.rel, got, err, tc.want)
		}
	}
	for _, rel := range []string{"..", "../outside", "src/../../outside", "/etc", "escape", "escape/."} {
		if _, err := ResolveCwd(ws, rel); !errors.Is(err, ErrCwdEscape) {
			t.Errorf("ResolveCwd(%q) err = %v, want ErrCwdEscape", rel, err)
		}
	}
	for _, rel := range []string{"missing", "file"} {
		if _, err := ResolveCwd(ws, rel); err == nil {
			t.Errorf("ResolveCwd(%q) succeeded", rel)
		}
	}
}
