package workspace_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"warrant.dev/warrant/internal/workspace"
	"warrant.dev/warrant/internal/workspace/workspacetest"
	"warrant.dev/warrant/protocol"
)

// The end-to-end benchmark with percentiles and peak memory, on 100k and
// 10k file repositories, is the command in ./bench. These benchmarks give
// the same measurement on a 10k-file repository for `go test -bench`.

var (
	benchRepoOnce sync.Once
	benchRepoDir  string
)

const benchFiles = 10_000

func benchRepo(b *testing.B) string {
	benchRepoOnce.Do(func() {
		dir, err := os.MkdirTemp("", "workspace-bench-")
		if err != nil {
			b.Fatal(err)
		}
		cleanups = append(cleanups, func() { os.RemoveAll(dir) })
		git(b, dir, "init", "-q", "-b", "main")
		rng := rand.New(rand.NewPCG(1, 2))
		var list strings.Builder
		for i := range benchFiles {
			rel := fmt.Sprintf("pkg%02d/file%05d.txt", i/100, i)
			write(b, dir, rel, strings.Repeat(fmt.Sprintf("line %x\n", rng.Uint64()), 1+rng.IntN(12)))
			list.WriteString(rel + "\n")
		}
		git(b, dir, "add", "-A")
		git(b, dir, "-c", "gc.auto=0", "commit", "-q", "-m", "bench")
		benchRepoDir = dir
	})
	return benchRepoDir
}

func BenchmarkCaptureUpload(b *testing.B) {
	repo := benchRepo(b)
	ctx := context.Background()
	b.Run("cold-10k", func(b *testing.B) {
		for b.Loop() {
			b.StopTimer()
			os.RemoveAll(filepath.Join(repo, ".git", "warrant"))
			store := &workspacetest.MemStore{}
			b.StartTimer()
			c, err := workspace.Capture(ctx, workspace.CaptureOptions{Dir: repo})
			if err != nil {
				b.Fatal(err)
			}
			if _, err := workspace.Upload(ctx, c, store); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("warm-10k-10-changed", func(b *testing.B) {
		store := &workspacetest.MemStore{}
		c, err := workspace.Capture(ctx, workspace.CaptureOptions{Dir: repo})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := workspace.Upload(ctx, c, store); err != nil {
			b.Fatal(err)
		}
		rng := rand.New(rand.NewPCG(3, 4))
		gen := 0
		for b.Loop() {
			b.StopTimer()
			gen++
			for range 10 {
				i := rng.IntN(benchFiles)
				write(b, repo, fmt.Sprintf("pkg%02d/file%05d.txt", i/100, i), fmt.Sprintf("changed %d %d\n", gen, i))
			}
			b.StartTimer()
			c, err := workspace.Capture(ctx, workspace.CaptureOptions{Dir: repo})
			if err != nil {
				b.Fatal(err)
			}
			st, err := workspace.Upload(ctx, c, store)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(st.Uploaded), "blobs-uploaded/op")
		}
	})
}

// smallManifest is the shape `warrant bench` runs: three small files.
func smallManifest(store *workspacetest.MemStore) *protocol.Manifest {
	return rawManifest(store,
		rawEntry{protocol.ModeFile, "README.md", "# bench\n"},
		rawEntry{protocol.ModeFile, "main.go", "package main\n\nfunc main() {}\n"},
		rawEntry{protocol.ModeFile, "notes.txt", "notes\n"})
}

// benchManifest captures the 10k-file bench repository once.
func benchManifest(b *testing.B) (*protocol.Manifest, *workspacetest.MemStore) {
	repo := benchRepo(b)
	store := &workspacetest.MemStore{}
	c, err := workspace.Capture(context.Background(), workspace.CaptureOptions{Dir: repo})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := workspace.Upload(context.Background(), c, store); err != nil {
		b.Fatal(err)
	}
	return &c.Manifest, store
}

// BenchmarkMaterialize times what a runner does before a session: fetch
// from an in-memory store, write the files, make the repository.
func BenchmarkMaterialize(b *testing.B) {
	run := func(b *testing.B, m *protocol.Manifest, store *workspacetest.MemStore) {
		var dirs []string
		defer func() {
			for _, d := range dirs {
				os.RemoveAll(d)
			}
		}()
		git0 := workspace.GitCommands()
		for b.Loop() {
			base, err := os.MkdirTemp("", "bench-mat-")
			if err != nil {
				b.Fatal(err)
			}
			dirs = append(dirs, base)
			if _, err := workspace.Materialize(context.Background(), workspace.MaterializeOptions{
				Dir: filepath.Join(base, "ws"), StateDir: filepath.Join(base, "state"), Manifest: m, Source: store}); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(workspace.GitCommands()-git0)/float64(b.N), "git-procs/op")
	}
	b.Run("3-files", func(b *testing.B) {
		store := &workspacetest.MemStore{}
		run(b, smallManifest(store), store)
	})
	b.Run("10k-files", func(b *testing.B) {
		m, store := benchManifest(b)
		run(b, m, store)
	})
}

// BenchmarkCollect times Collect after a session that changed nothing
// and after one that changed files.
func BenchmarkCollect(b *testing.B) {
	run := func(b *testing.B, m *protocol.Manifest, store *workspacetest.MemStore, edit func(ws string)) {
		base := b.TempDir()
		w, err := workspace.Materialize(context.Background(), workspace.MaterializeOptions{
			Dir: filepath.Join(base, "ws"), StateDir: filepath.Join(base, "state"), Manifest: m, Source: store})
		if err != nil {
			b.Fatal(err)
		}
		edit(w.Dir)
		git0 := workspace.GitCommands()
		for b.Loop() {
			if _, err := workspace.Collect(context.Background(), w); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(workspace.GitCommands()-git0)/float64(b.N), "git-procs/op")
	}
	unchanged := func(string) {}
	b.Run("3-files-unchanged", func(b *testing.B) {
		store := &workspacetest.MemStore{}
		run(b, smallManifest(store), store, unchanged)
	})
	b.Run("3-files-1-changed", func(b *testing.B) {
		store := &workspacetest.MemStore{}
		run(b, smallManifest(store), store, func(ws string) {
			os.WriteFile(filepath.Join(ws, "notes.txt"), []byte("changed\n"), 0o644)
		})
	})
	b.Run("10k-files-unchanged", func(b *testing.B) {
		m, store := benchManifest(b)
		run(b, m, store, unchanged)
	})
	b.Run("10k-files-10-changed", func(b *testing.B) {
		m, store := benchManifest(b)
		run(b, m, store, func(ws string) {
			for i := range 10 {
				os.WriteFile(filepath.Join(ws, fmt.Sprintf("pkg%02d/file%05d.txt", i, i*100)), []byte("changed\n"), 0o644)
			}
		})
	})
}
