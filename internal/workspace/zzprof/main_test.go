package prof

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"warrant.dev/warrant/internal/workspace"
	"warrant.dev/warrant/internal/workspace/workspacetest"
)

func TestWarm(t *testing.T) {
	repo := os.Getenv("REPO")
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	store := &workspacetest.MemStore{}
	if os.Getenv("COLD") != "" {
		for i := 0; i < 3; i++ {
			os.Remove(filepath.Join(repo, ".git/warrant/hashcache"))
			store = &workspacetest.MemStore{}
			start := time.Now()
			c, err := workspace.Capture(context.Background(), workspace.CaptureOptions{Dir: repo, Logger: log})
			if err != nil {
				t.Fatal(err)
			}
			mid := time.Now()
			st, _ := workspace.Upload(context.Background(), c, store)
			t.Logf("COLD capture %v upload %v uploaded %d hashed %d", mid.Sub(start), time.Since(mid), st.Uploaded, c.Stats.Hashed)
		}
		return
	}
	c, _ := workspace.Capture(context.Background(), workspace.CaptureOptions{Dir: repo})
	workspace.Upload(context.Background(), c, store)
	for i := 0; i < 5; i++ {
		start := time.Now()
		c, err := workspace.Capture(context.Background(), workspace.CaptureOptions{Dir: repo, Logger: log})
		if err != nil {
			t.Fatal(err)
		}
		mid := time.Now()
		st, _ := workspace.Upload(context.Background(), c, store)
		t.Logf("capture %v upload %v uploaded %d hashed %d", mid.Sub(start), time.Since(mid), st.Uploaded, c.Stats.Hashed)
	}
}
