package fsutil

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

func TestWriteFileAtomic(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "config.toml")
	if err := WriteFileAtomic(p, []byte("one"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := WriteFileAtomic(p, []byte("two"), 0o600); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(p)
	if err != nil || string(b) != "two" {
		t.Fatalf("content %q, %v", b, err)
	}
	st, _ := os.Stat(p)
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %o", st.Mode().Perm())
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("temporary files left: %v", entries)
	}
	if err := WriteFileAtomic(filepath.Join(dir, "missing", "x"), nil, 0o600); err == nil {
		t.Fatal("wrote into a missing directory")
	}
}

func TestWriteFileExclusive(t *testing.T) {
	p := filepath.Join(t.TempDir(), "key.pem")
	if err := WriteFileExclusive(p, []byte("secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := WriteFileExclusive(p, []byte("other"), 0o600); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("overwrote an existing key: %v", err)
	}
	b, _ := os.ReadFile(p)
	st, _ := os.Stat(p)
	if string(b) != "secret" || st.Mode().Perm() != 0o600 {
		t.Fatalf("content %q mode %o", b, st.Mode().Perm())
	}
}
