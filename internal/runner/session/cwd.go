package session

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// ErrCwdEscape is returned when an execution's working directory would lie
// outside the workspace.
var ErrCwdEscape = errors.New("working directory escapes the workspace")

// ResolveCwd resolves a workspace-relative working directory to an
// absolute path inside the workspace. It refuses absolute paths, any ".."
// that climbs out, and symbolic links that lead out; the directory must
// exist.
func ResolveCwd(workspace, rel string) (string, error) {
	if rel == "" {
		rel = "."
	}
	if filepath.IsAbs(rel) || strings.HasPrefix(rel, "/") {
		return "", fmt.Errorf("cwd %q: %w (it must be relative to the workspace)", rel, ErrCwdEscape)
	}
	clean := filepath.Clean(filepath.FromSlash(rel))
	if clean == ".." || strings.HasPrefix(clean, ".."+string(filepath.Separator)) {
		return "", fmt.Errorf("cwd %q: %w", rel, ErrCwdEscape)
	}
	root, err := filepath.EvalSymlinks(workspace)
	if err != nil {
		return "", fmt.Errorf("resolve workspace: %w", err)
	}
	root, err = filepath.Abs(root)
	if err != nil {
		return "", fmt.Errorf("resolve workspace: %w", err)
	}
	real, err := filepath.EvalSymlinks(filepath.Join(root, clean))
	if err != nil {
		return "", fmt.Errorf("cwd %q: %w", rel, err)
	}
	if !within(root, real) {
		return "", fmt.Errorf("cwd %q: %w (through a symbolic link)", rel, ErrCwdEscape)
	}
	fi, err := os.Stat(real)
	if err != nil {
		return "", fmt.Errorf("cwd %q: %w", rel, err)
	}
	if !fi.IsDir() {
		return "", fmt.Errorf("cwd %q is not a directory", rel)
	}
	return real, nil
}

// within reports whether path is root or lies under it; both are clean
// absolute paths.
func within(root, path string) bool {
	if path == root {
		return true
	}
	return strings.HasPrefix(path, strings.TrimSuffix(root, string(filepath.Separator))+string(filepath.Separator))
}
