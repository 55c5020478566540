//go:build linux

package namespace

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"warrant.dev/warrant/internal/runner/session"
	"warrant.dev/warrant/protocol"
)

// probeTimeout bounds each trial process.
const probeTimeout = 20 * time.Second

// namespaceFlags names the namespaces besides the user namespace.
var namespaceFlags = []struct {
	name string
	flag uintptr
}{
	{"mount namespace", syscall.CLONE_NEWNS},
	{"PID namespace", syscall.CLONE_NEWPID},
	{"network namespace", syscall.CLONE_NEWNET},
	{"IPC namespace", syscall.CLONE_NEWIPC},
	{"UTS namespace", syscall.CLONE_NEWUTS},
}

// Probe checks, by trying each, every feature the namespace tier needs on
// this host with these options: user namespaces (and the sysctls that
// gate them), the mount, PID, network, IPC and UTS namespaces, the memory,
// pids and cpu cgroup controllers and a writable session cgroup, and
// finally a whole tiny session (new root, /proc, loopback, egress bridge,
// seccomp, nested user namespace) running `sh -c 'exit 0'`.
func Probe(ctx context.Context, opts Options) *Report {
	r := &Report{}
	var uts unix.Utsname
	release := "unknown"
	if unix.Uname(&uts) == nil {
		release = unix.ByteSliceToString(uts.Release[:])
	}
	r.add("linux", nil, "kernel "+release)
	if !r.add("warrant executable", checkExecutable(opts.Executable), opts.Executable) {
		r.skip("user namespaces", "no executable to start")
		return r
	}

	nsOK := r.add("user namespaces", userNamespaceSysctls(), userNamespaceMode())
	if nsOK {
		err := tryInit(ctx, opts, 0)
		if err != nil {
			r.Features[len(r.Features)-1] = Feature{Name: "user namespaces", Detail: err.Error()}
			nsOK = false
		}
	}
	all := true
	for _, ns := range namespaceFlags {
		if !nsOK {
			r.skip(ns.name, "user namespaces unavailable")
			all = false
			continue
		}
		if !r.add(ns.name, tryInit(ctx, opts, ns.flag), "created") {
			all = false
		}
	}

	backendOK := false
	b, err := New(opts)
	switch {
	case err != nil && errors.Is(err, ErrUnavailable):
		layout, missing, derr := detectCgroups()
		for _, c := range limitedControllers {
			if derr != nil {
				r.add("cgroup "+c, derr, "")
				continue
			}
			r.add("cgroup "+c, missing[c], describeController(layout, c, opts.CgroupParent))
		}
	case err != nil:
		r.add("backend", err, "")
	default:
		for _, c := range limitedControllers {
			r.add("cgroup "+c, nil, describeController(b.layout, c, b.opts.CgroupParent))
		}
		cg, err := b.layout.createSession(b.opts.CgroupParent, cgroupName("probe"), b.limits)
		if err == nil {
			cg.kill()
			err = cg.remove()
		}
		if errors.Is(err, fs.ErrPermission) && !b.rootMode {
			err = fmt.Errorf("%w (a runner that is not root needs a cgroup subtree delegated to its user, as systemd's Delegate=yes does, and --cgroup-parent pointing into it)", err)
		}
		backendOK = r.add("session cgroup", err, fmt.Sprintf("created and removed with memory %s, %d pids, %g CPUs",
			formatBytes(b.limits.MemoryBytes), b.limits.Pids, b.limits.CPUs))
	}
	if !all || !backendOK {
		r.skip("sandbox trial", "a feature above is missing")
		return r
	}
	if r.add("sandbox trial", trySession(ctx, b), "a session ran `sh -c 'exit 0'` in a new root with loopback, the egress bridge, seccomp and its own user") {
		r.Available = true
	}
	return r
}

func checkExecutable(p string) error {
	if p == "" || !filepath.IsAbs(p) {
		return fmt.Errorf("needs an absolute path, got %q", p)
	}
	fi, err := os.Stat(p)
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() || fi.Mode()&0o111 == 0 {
		return fmt.Errorf("%s is not an executable file", p)
	}
	return nil
}

func userNamespaceMode() string {
	if os.Geteuid() == 0 {
		return "as root: sessions run as the sandbox id, never as root"
	}
	return fmt.Sprintf("unprivileged (uid %d): sessions run as this user", os.Geteuid())
}

// userNamespaceSysctls reads the knobs that can forbid user namespaces.
func userNamespaceSysctls() error {
	if n, ok := readSysctl("/proc/sys/user/max_user_namespaces"); ok && n == 0 {
		return errors.New("user.max_user_namespaces is 0")
	}
	if os.Geteuid() == 0 {
		return nil
	}
	if n, ok := readSysctl("/proc/sys/kernel/unprivileged_userns_clone"); ok && n == 0 {
		return errors.New("kernel.unprivileged_userns_clone is 0: unprivileged user namespaces are disabled (run the runner as root, or set it to 1)")
	}
	if n, ok := readSysctl("/proc/sys/kernel/apparmor_restrict_unprivileged_userns"); ok && n != 0 {
		return errors.New("kernel.apparmor_restrict_unprivileged_userns is set: AppArmor forbids unprivileged user namespaces to this binary (add an AppArmor profile allowing userns, or run as root)")
	}
	return nil
}

func readSysctl(p string) (int64, bool) {
	data, err := os.ReadFile(p)
	if err != nil {
		return 0, false
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(data)), 10, 64)
	return n, err == nil
}

func describeController(l *cgroupLayout, c, parent string) string {
	if l == nil || l.controllers[c] == nil {
		return ""
	}
	h := l.controllers[c]
	d, err := h.dir(parentPath(h, parent))
	if err != nil {
		d = err.Error()
	}
	return fmt.Sprintf("v%d, sessions under %s", h.version, d)
}

// tryInit starts the init in probe mode in a new user namespace plus
// extra, and reports what stopped it.
func tryInit(ctx context.Context, opts Options, extra uintptr) error {
	b := &Backend{rootMode: os.Geteuid() == 0, uid: DefaultSandboxID, gid: DefaultSandboxID}
	if !b.rootMode {
		b.uid, b.gid = os.Geteuid(), os.Getegid()
	}
	attr := b.sysProcAttr()
	attr.Cloneflags = syscall.CLONE_NEWUSER | extra
	attr.Pdeathsig = syscall.SIGKILL
	args := opts.InitArgs
	if len(args) == 0 {
		args = []string{InitCommand}
	}
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	cfgR, cfgW, err := os.Pipe()
	if err != nil {
		return err
	}
	defer cfgR.Close()
	defer cfgW.Close()
	stR, stW, err := os.Pipe()
	if err != nil {
		return err
	}
	defer stR.Close()
	defer stW.Close()
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, opts.Executable, args...)
	cmd.Env = []string{}
	cmd.ExtraFiles = []*os.File{cfgR, stW}
	cmd.SysProcAttr = attr
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("the kernel refused: %w", err)
	}
	cfgR.Close()
	stW.Close()
	_ = json.NewEncoder(cfgW).Encode(initConfig{Mode: modeProbe})
	cfgW.Close()
	started := false
	sc := bufio.NewScanner(stR)
	for sc.Scan() {
		var m statusMessage
		if json.Unmarshal(sc.Bytes(), &m) == nil && m.Started {
			started = true
		}
	}
	werr := cmd.Wait()
	if !started || werr != nil {
		msg := strings.TrimSpace(out.String())
		if len(msg) > 300 {
			msg = msg[:300] + "…"
		}
		return fmt.Errorf("the trial init failed (%v): %s", werr, msg)
	}
	return nil
}

// trySession runs a whole session through the backend.
func trySession(ctx context.Context, b *Backend) error {
	dir, err := os.MkdirTemp("", "warrant-probe-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	ws := filepath.Join(dir, "workspace")
	if err := os.Mkdir(ws, 0o755); err != nil {
		return err
	}
	c := &protocol.Contract{RunID: "probe", Network: protocol.NetworkPolicy{DefaultDeny: true}}
	e := &session.Execution{
		Kind: protocol.ExecArgv, Cmd: "sh", Args: []string{"-c", "exit 0"}, Cwd: ".",
		Timeout: probeTimeout, EgressProxy: true,
	}
	var log lockedBuffer
	res, err := b.Run(ctx, &session.Session{
		RunID: "probe", Contract: c, Execution: e, Workspace: ws,
		ScratchDir: filepath.Join(dir, "scratch"), Log: &log,
		Record:    func(protocol.EventPayload) error { return nil },
		KillGrace: time.Second,
	})
	if err != nil {
		return err
	}
	if res.ExitCode != 0 || res.End != session.Exited {
		return fmt.Errorf("the trial session ended %s with code %d: %s", res.End, res.ExitCode, strings.TrimSpace(log.String()))
	}
	return nil
}

// lockedBuffer is a bytes.Buffer safe for the session log's writer.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
