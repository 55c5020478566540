//go:build linux

package namespace

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"warrant.dev/warrant/internal/runner/session"
	"warrant.dev/warrant/protocol"
)

// unprivilegedArg runs the test binary as an ordinary user's runner: it
// probes the tier and runs one session, printing an unprivilegedResult.
const unprivilegedArg = "namespace-test-unprivileged"

// unprivilegedUID is the ordinary user the test runs as (it needs no
// account: the kernel only needs the number).
const unprivilegedUID = 4242

type unprivilegedResult struct {
	ProbeErr string `json:"probeErr"`
	RunErr   string `json:"runErr"`
	Exit     int    `json:"exit"`
	Log      string `json:"log"`
}

func unprivilegedMain(args []string) int {
	// Wait until the test has put this process into its delegated cgroups.
	if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
		return 2
	}
	ws, scratch := args[0], args[1]
	self, _ := os.Executable()
	out := unprivilegedResult{}
	ctx := context.Background()
	opts := Options{Executable: self, Limits: Limits{MemoryBytes: 256 << 20}}
	if err := Probe(ctx, opts).Err(); err != nil {
		out.ProbeErr = err.Error()
	}
	b, err := New(opts)
	if err == nil {
		c := &protocol.Contract{RunID: "run_unpriv", Network: protocol.NetworkPolicy{DefaultDeny: true}}
		e := &session.Execution{Kind: protocol.ExecShell, Shell: "sh", Cwd: ".", Timeout: 30 * time.Second, EgressProxy: true,
			Script: `id -u; echo written > /workspace/by-session; (echo x > /usr/x) 2>/dev/null && echo WROTE-USR; grep CapEff /proc/self/status; curl -sS -o /dev/null -w '%{http_code}\n' http://denied.example.com/`}
		var log lockedBuffer
		var res session.Result
		res, err = b.Run(ctx, &session.Session{RunID: "run_unpriv", Contract: c, Execution: e, Workspace: ws,
			ScratchDir: scratch, Log: &log, Record: func(protocol.EventPayload) error { return nil }, KillGrace: time.Second})
		out.Exit, out.Log = res.ExitCode, log.String()
	}
	if err != nil {
		out.RunErr = err.Error()
	}
	_ = json.NewEncoder(os.Stdout).Encode(out)
	return 0
}

func TestUnprivilegedRunner(t *testing.T) {
	requireNamespaces(t)
	if os.Geteuid() != 0 {
		t.Skip("the test needs root to make an ordinary user and delegate cgroups to it")
	}
	dir, err := os.MkdirTemp("", "warrant-unpriv-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	self, _ := os.Executable()
	bin := filepath.Join(dir, "namespace.test")
	copyFile(t, self, bin)
	ws, scratch := filepath.Join(dir, "ws"), filepath.Join(dir, "scratch")
	for _, d := range []string{dir, ws, scratch} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(d, unprivilegedUID, unprivilegedUID); err != nil {
			t.Fatal(err)
		}
	}

	// Delegate a cgroup in every hierarchy, as a system would for a runner
	// user (systemd's Delegate=yes): the directory and its cgroup.procs.
	layout, missing, err := detectCgroups()
	if err != nil || len(missing) > 0 {
		t.Fatalf("cgroups: %v %v", err, missing)
	}
	tag := make([]byte, 4)
	_, _ = rand.Read(tag)
	name := "wtest-unpriv-" + hex.EncodeToString(tag)
	var delegated []string
	hs := []*hierarchy{layout.controllers["memory"], layout.controllers["pids"], layout.controllers["cpu"]}
	if layout.unified != nil {
		hs = append(hs, layout.unified)
	}
	for _, h := range hs {
		d, err := h.dir(parentPath(h, name))
		if err != nil {
			t.Fatal(err)
		}
		if containsString(delegated, d) {
			continue
		}
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		delegated = append(delegated, d)
		for _, p := range []string{d, filepath.Join(d, "cgroup.procs")} {
			if err := os.Chown(p, unprivilegedUID, unprivilegedUID); err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Cleanup(func() {
		for _, d := range delegated {
			_ = syscall.Rmdir(d)
		}
	})

	cmd := exec.Command(bin, unprivilegedArg, ws, scratch)
	cmd.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=" + dir}
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: unprivilegedUID, Gid: unprivilegedUID, Groups: []uint32{}}}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	for _, d := range delegated {
		if err := writeFile(filepath.Join(d, "cgroup.procs"), strconv.Itoa(cmd.Process.Pid)); err != nil {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatal(err)
		}
	}
	io.WriteString(stdin, "go\n")
	stdin.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("unprivileged runner: %v\n%s\n%s", err, stdout.String(), stderr.String())
	}
	var res unprivilegedResult
	if err := json.Unmarshal([]byte(stdout.String()), &res); err != nil {
		t.Fatalf("%v: %q %q", err, stdout.String(), stderr.String())
	}
	t.Logf("unprivileged session: %+v", res)
	if res.ProbeErr != "" || res.RunErr != "" || res.Exit != 0 {
		t.Fatalf("unprivileged runner failed: %+v", res)
	}
	if !strings.HasPrefix(res.Log, "1000\n") || strings.Contains(res.Log, "WROTE-USR") || !strings.Contains(res.Log, "0000000000000000") || !strings.Contains(res.Log, "403") {
		t.Fatalf("log %q", res.Log)
	}
	fi, err := os.Stat(filepath.Join(ws, "by-session"))
	if err != nil {
		t.Fatal(err)
	}
	if st := fi.Sys().(*syscall.Stat_t); st.Uid != unprivilegedUID {
		t.Fatalf("the session's file belongs to uid %d, want the runner user %d", st.Uid, unprivilegedUID)
	}
}

func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, data, 0o755); err != nil {
		t.Fatal(err)
	}
}

func containsString(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

var _ = fmt.Sprint
