package reliability_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"warrant.dev/warrant/client"
	"warrant.dev/warrant/internal/plane"
	"warrant.dev/warrant/protocol"
)

// mountTmpfs mounts a tmpfs of size bytes at dir and unmounts it at
// cleanup (after everything started later has stopped). Root only.
func mountTmpfs(t *testing.T, dir string, size int64) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%d,mode=0700", size), "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v\n%s", dir, err, out)
			_ = exec.Command("umount", "-l", dir).Run()
		}
	})
}

// fillDisk writes dir/filler until the file system is full and returns
// the bytes written.
func fillDisk(t *testing.T, dir string) int64 {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(dir, "filler"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var total int64
	for chunk := 1 << 20; chunk >= 512; chunk /= 2 {
		buf := make([]byte, chunk)
		for {
			n, err := f.Write(buf)
			total += int64(n)
			if err != nil {
				if !errors.Is(err, syscall.ENOSPC) {
					t.Fatalf("fill: %v", err)
				}
				break
			}
		}
	}
	return total
}

// codeOf is the wire code of a client error, or "transport" / "ok".
func codeOf(err error) string {
	var api *client.APIError
	switch {
	case err == nil:
		return "ok"
	case errors.As(err, &api):
		return api.Code
	}
	return "transport"
}

// TestDiskFull runs the plane's data directory on a small tmpfs and fills
// it while runs are submitted and executed. While it is full, requests
// that must write fail with a code from the closed set that tells the
// caller to retry (unavailable, 503), never a misleading one, and the
// plane stays up; the runner keeps retrying. Once space is freed every
// run ends cleanly, new runs complete, and the database passes its
// integrity checks. Needs root (mount); under CI=true it must run.
func TestDiskFull(t *testing.T) {
	if testing.Short() {
		t.Skip("runs real plane and runner processes")
	}
	if os.Geteuid() != 0 {
		if isCI() {
			t.Fatal("TestDiskFull needs root to mount a tmpfs, and CI runs as root")
		}
		t.Skip("needs root to mount a tmpfs")
	}
	mnt := filepath.Join(suiteDir(t, "diskfull"), "mnt")
	mountTmpfs(t, mnt, 24<<20)
	data := filepath.Join(mnt, "data")
	w := newWorld(t, "diskfull", worldConfig{plane: planeConfig{data: data, leaseTTL: 5 * time.Second, heartbeat: time.Second}})
	t.Cleanup(func() {
		// Keep what the plane wrote for the leak scan: the tmpfs goes away.
		_ = exec.Command("cp", "-a", data, filepath.Join(filepath.Dir(mnt), "data-copy")).Run()
	})
	rn := w.startRunner("diskfull-runner", 2)
	trust := trustFromFiles(t, w.pp, rn)
	ctx, cancel := context.WithTimeout(bg(t), 3*time.Minute)
	defer cancel()
	for range 3 {
		r, _, err := w.submit(ctx, runSpec{body: bodyEcho})
		if err != nil {
			t.Fatal(err)
		}
		if end, err := w.waitEnd(ctx, w.req, r.ID, 30*time.Second); err != nil || end.State != protocol.StateCompleted {
			t.Fatalf("run before the disk filled: %v %+v", err, end)
		}
	}

	// Runs in flight when the disk fills: they sleep, then write output.
	var inflight []string
	for i := range 2 {
		r, _, err := w.submit(ctx, runSpec{body: bodySleep(2*time.Second) + "; " + bodyBig, secret: i == 0})
		if err != nil {
			t.Fatal(err)
		}
		inflight = append(inflight, r.ID)
	}
	filled := fillDisk(t, mnt)
	t.Logf("filled the plane's disk with %d MiB", filled>>20)

	// While full: what each kind of write answers.
	codes := map[string]map[string]int{}
	var mu sync.Mutex
	note := func(what string, err error) {
		mu.Lock()
		defer mu.Unlock()
		if codes[what] == nil {
			codes[what] = map[string]int{}
		}
		code := codeOf(err)
		codes[what][code]++
		if err != nil && code != client.CodeUnavailable {
			t.Logf("%s while the disk is full: %v", what, err)
		}
	}
	fullUntil := time.Now().Add(6 * time.Second)
	var submittedWhileFull []string
	for time.Now().Before(fullUntil) {
		blob := make([]byte, 512<<10)
		_, _ = rand.Read(blob)
		_, err := w.req.PutBlob(ctx, blob)
		note("PUT /v1/blobs/{hash} (512 KiB)", err)
		resp, err := w.req.SubmitRun(ctx, client.RunRequest{Agent: protocol.AgentSpec{Kind: protocol.AgentCommand}, Pool: "default", Workspace: w.ws,
			Prompt: markerScript(w.markers, newToken(), bodyEcho)})
		note("POST /v1/runs", err)
		if err == nil {
			submittedWhileFull = append(submittedWhileFull, resp.Run.ID)
		}
		_, err = w.pp.admin.CreatePrincipal(ctx, client.CreatePrincipalRequest{Name: fmt.Sprintf("full-%d", time.Now().UnixNano()), Role: client.RoleAuditor})
		note("POST /v1/principals", err)
		time.Sleep(300 * time.Millisecond)
	}
	if !w.pp.running() {
		t.Fatalf("the plane died on a full disk:\n%s", w.pp.tail(30))
	}
	var summary []string
	for what, m := range codes {
		for code, n := range m {
			summary = append(summary, fmt.Sprintf("%s → %s ×%d", what, code, n))
		}
	}
	sort.Strings(summary)
	t.Logf("while full:\n  %s", strings.Join(summary, "\n  "))
	for what, m := range codes {
		for code := range m {
			if code != "ok" && code != client.CodeUnavailable {
				t.Errorf("%s while the disk is full answered %s; want unavailable (retry later) or success", what, code)
			}
		}
	}
	if logs, _ := os.ReadFile(w.pp.logPath); !bytes.Contains(logs, []byte("no space left on device")) && !bytes.Contains(logs, []byte("disk is full")) {
		t.Errorf("the plane's log does not say the disk is full")
	}

	// Free the space: everything recovers.
	if err := os.Remove(filepath.Join(mnt, "filler")); err != nil {
		t.Fatal(err)
	}
	for _, id := range append(inflight, submittedWhileFull...) {
		r, err := w.waitEnd(ctx, w.pp.admin, id, 90*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("run %s (in flight or submitted while full): %s %s", id, r.State, failureText(r.Failure))
	}
	for range 3 {
		r, _, err := w.submit(ctx, runSpec{body: bodyEcho})
		if err != nil {
			t.Fatal(err)
		}
		if end, err := w.waitEnd(ctx, w.req, r.ID, 60*time.Second); err != nil || end.State != protocol.StateCompleted {
			t.Errorf("run after space was freed: %v %+v", err, end)
		}
	}
	waitAllTerminal(t, w.pp.admin, 60*time.Second)
	if !rn.stop(30 * time.Second) {
		t.Error("the runner did not drain on SIGTERM")
	}
	out := checkInvariants(t, w.pp, w.markers, trust)
	t.Logf("disk full: %s", out)
	w.pp.stop(10 * time.Second)
	checkDatabase(t, filepath.Join(data, plane.DatabaseFile))
}
