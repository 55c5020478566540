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
