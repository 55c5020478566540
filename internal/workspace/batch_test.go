package workspace_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"testing"

	"warrant.dev/warrant/internal/workspace"
	"warrant.dev/warrant/internal/workspace/workspacetest"
	"warrant.dev/warrant/protocol"
)

// TestMaterializeThroughABatchSource: with a source that fetches many
// blobs per call, Materialize writes the same tree and commit as with one
// call per blob, asking one by one only for the snapshot and the large
// files.
func TestMaterializeThroughABatchSource(t *testing.T) {
	const f, x, l = protocol.ModeFile, protocol.ModeExecutable, protocol.ModeSymlink
	store := &workspacetest.MemStore{}
	entries := []rawEntry{
		{f, "big.bin", strings.Repeat("0123456789abcdef", 1<<17)}, // 2 MiB: fetched alone
		{x, "bin/run", "#!/bin/sh\necho hi\n"},
		{l, "link1", "src/d00/f0000.txt"},
		{l, "link2", "src/d00/f0000.txt"}, // the same target blob
	}
	for i := range 1200 {
		entries = append(entries, rawEntry{f, fmt.Sprintf("src/d%02d/f%04d.txt", i/100, i), fmt.Sprintf("file %d\n", i%1100)}) // some contents shared
	}
	entries = append(entries, rawEntry{l, "up", "src/.."})
	m := rawManifest(store, entries...)
	one := materialize(t, m, store)
	store.ResetCounts()
	batch := materialize(t, m, workspacetest.BatchStore{MemStore: store})
	if one.BaseCommit != batch.BaseCommit || one.Files != batch.Files {
		t.Fatalf("one by one: commit %s, %d files; in batches: %s, %d", one.BaseCommit, one.Files, batch.BaseCommit, batch.Files)
	}
	if d := diffTrees(readTree(t, one.Dir), readTree(t, batch.Dir)); d != "" {
		t.Fatalf("the trees differ:\n%s", d)
	}
	c := store.Counts()
	if c.Gets != 2 {
		t.Errorf("%d single fetches, want 2 (the snapshot and big.bin)", c.Gets)
	}
	// 1,101 distinct small file blobs in batches of 1,000, plus one call
	// for the 2 distinct symlink targets.
	if c.GetManys != 3 || c.GotMany != 1101+2 {
		t.Errorf("%d batch calls delivering %d blobs, want 3 delivering 1,103", c.GetManys, c.GotMany)
	}
}

// misbehaving is a batch source that lies in one way.
type misbehaving struct {
	*workspacetest.MemStore
	how string
}

func (m misbehaving) GetMany(ctx context.Context, hashes []string, fn func(string, io.Reader) error) error {
	send := func(h string) error {
		data, _ := m.Bytes(h)
		return fn(h, bytes.NewReader(data))
	}
	switch m.how {
	case "leaves one out":
		hashes = hashes[1:]
	case "sends one twice":
		hashes = append(hashes, hashes[0])
	case "sends one not asked for":
		if err := fn(protocol.HashBytes([]byte("stowaway")), strings.NewReader("stowaway")); err != nil {
			return err
		}
	case "sends other bytes":
		for _, h := range hashes {
			if err := fn(h, strings.NewReader("tampered\n")); err != nil {
				return err
			}
		}
		return nil
	case "fails":
		return fmt.Errorf("connection reset")
	}
	for _, h := range hashes {
		if err := send(h); err != nil {
			return err
		}
	}
	return nil
}

// TestMaterializeDistrustsABatchSource: whatever a batch source does
// wrong, Materialize fails with an error that says so, and writes nothing
// outside its target.
func TestMaterializeDistrustsABatchSource(t *testing.T) {
	cases := map[string]error{
		"leaves one out":          workspace.ErrBlobNotFound,
		"sends one twice":         workspace.ErrBlobMismatch,
		"sends one not asked for": workspace.ErrBlobMismatch,
		"sends other bytes":       workspace.ErrBlobMismatch,
		"fails":                   nil,
	}
	for how, want := range cases {
		for _, what := range []string{"files", "symlinks"} {
			t.Run(how+"/"+what, func(t *testing.T) {
				store := &workspacetest.MemStore{}
				m := rawManifest(store, rawEntry{protocol.ModeFile, "a.txt", "genuine a\n"}, rawEntry{protocol.ModeFile, "b.txt", "genuine b\n"})
				if what == "symlinks" {
					m = rawManifest(store, rawEntry{protocol.ModeSymlink, "la", "a.txt"}, rawEntry{protocol.ModeSymlink, "lb", "b.txt"})
				}
				parent := t.TempDir()
				_, err := workspace.Materialize(context.Background(), workspace.MaterializeOptions{
					Dir: filepath.Join(parent, "ws"), Manifest: m, Source: misbehaving{store, how}})
				if err == nil {
					t.Fatal("Materialize accepted it")
				}
				if want != nil && !errors.Is(err, want) {
					t.Errorf("error %v does not wrap %v", err, want)
				}
				assertOnlyChild(t, parent, "ws")
			})
		}
	}
}
