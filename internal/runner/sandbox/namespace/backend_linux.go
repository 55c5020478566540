//go:build linux

package namespace

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"warrant.dev/warrant/internal/runner/egress"
	"warrant.dev/warrant/internal/runner/session"
	"warrant.dev/warrant/protocol"
)

// Timings of the runner's side.
const (
	proxyShutdownTimeout = 5 * time.Second
	oomPollInterval      = 50 * time.Millisecond
)

// cloneFlags are the namespaces every session gets.
const cloneFlags = syscall.CLONE_NEWUSER | syscall.CLONE_NEWNS | syscall.CLONE_NEWPID |
	syscall.CLONE_NEWIPC | syscall.CLONE_NEWUTS | syscall.CLONE_NEWNET

// Backend is the namespace tier. Create it with New.
type Backend struct {
	opts     Options
	initArgs []string
	path     string
	limits   Limits
	readOnly []string
	layout   *cgroupLayout
	rootMode bool
	uid, gid int // the harness's host ids
}

// ErrUnavailable is wrapped by New when this host cannot run the tier.
var ErrUnavailable = errors.New("namespace isolation unavailable")

// New returns the backend. It checks the executable and finds the cgroup
// controllers; it does not try the namespaces (Probe does).
func New(opts Options) (*Backend, error) {
	if !filepath.IsAbs(opts.Executable) {
		return nil, fmt.Errorf("namespace backend: the warrant executable must be an absolute path, got %q", opts.Executable)
	}
	if fi, err := os.Stat(opts.Executable); err != nil || !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("namespace backend: warrant executable %s: not a file (%v)", opts.Executable, err)
	}
	layout, missing, err := detectCgroups()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	for _, c := range limitedControllers {
		if err := missing[c]; err != nil {
			return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
		}
	}
	b := &Backend{
		opts:     opts,
		initArgs: opts.InitArgs,
		path:     opts.Path,
		limits:   opts.Limits.normalize(),
		readOnly: opts.ReadOnlyPaths,
		layout:   layout,
		rootMode: os.Geteuid() == 0,
	}
	if len(b.initArgs) == 0 {
		b.initArgs = []string{InitCommand}
	}
	if b.path == "" {
		b.path = os.Getenv("PATH")
	}
	if b.path == "" {
		b.path = FallbackPath
	}
	if b.readOnly == nil {
		b.readOnly = DefaultReadOnlyPaths
	}
	layout.removeStale(b.opts.CgroupParent, time.Now().Add(-staleAfter))
	if b.opts.Hostname == "" {
		b.opts.Hostname = DefaultHostname
	}
	if b.rootMode {
		b.uid, b.gid = opts.SandboxUID, opts.SandboxGID
		if b.uid == 0 {
			b.uid = DefaultSandboxID
		}
		if b.gid == 0 {
			b.gid = DefaultSandboxID
		}
	} else {
		b.uid, b.gid = os.Geteuid(), os.Getegid()
	}
	return b, nil
}

// Isolation implements session.Backend.
func (b *Backend) Isolation() string { return protocol.IsolationNamespace }

// Limits returns the limits every session gets.
func (b *Backend) Limits() Limits { return b.limits }

// Check implements session.Backend: like the process tier, every execution
// except the pi agent, which runs only in a harness backend.
func (b *Backend) Check(c *protocol.Contract, e *session.Execution) error {
	if c.Agent.Kind == protocol.AgentPi || e.Agent == protocol.AgentPi {
		return &session.CapabilityError{Reason: "the pi agent runs only in a harness backend; the namespace backend cannot spawn it"}
	}
	return nil
}

// Run implements session.Backend.
func (b *Backend) Run(ctx context.Context, s *session.Session) (session.Result, error) {
	log := s.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	e := s.Execution
	hostCwd, err := session.ResolveCwd(s.Workspace, e.Cwd)
	if err != nil {
		return session.Result{}, err
	}
	wsRoot, err := filepath.EvalSymlinks(s.Workspace)
	if err != nil {
		return session.Result{}, fmt.Errorf("resolve workspace: %w", err)
	}
	rel, err := filepath.Rel(wsRoot, hostCwd)
	if err != nil {
		return session.Result{}, fmt.Errorf("resolve cwd: %w", err)
	}
	home := filepath.Join(s.ScratchDir, "home")
	tmp := filepath.Join(s.ScratchDir, "tmp")
	for _, d := range []string{home, tmp} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return session.Result{}, fmt.Errorf("session scratch directory: %w", err)
		}
	}
	if b.rootMode {
		// The harness runs as the sandbox id, not as root: what it must
		// write becomes its own.
		for _, d := range []string{wsRoot, home, tmp} {
			if err := chownTree(d, b.uid, b.gid); err != nil {
				return session.Result{}, fmt.Errorf("hand the session its directories: %w", err)
			}
		}
	}

	env := map[string]string{"PATH": b.path, "HOME": SandboxHome, "TMPDIR": SandboxTmp}
	for k, v := range session.ResolveEnv(e, s.Secrets) {
		env[k] = v
	}
	argv := e.Argv()
	if argv[0] == b.opts.Executable {
		argv[0] = SandboxExecutable // the mock agent: the warrant binary, mounted inside
	}
	cfg := &initConfig{
		Mode:       modeSession,
		Argv:       argv,
		Env:        env,
		Cwd:        path.Join(SandboxWorkspace, filepath.ToSlash(rel)),
		Workspace:  wsRoot,
		Home:       home,
		Tmp:        tmp,
		Executable: b.opts.Executable,
		ReadOnly:   b.readOnly,
		Hostname:   b.opts.Hostname,
		HarnessUID: 0,
		HarnessGID: 0,
		Seccomp:    seccompSupported && !b.opts.DisableSeccomp,
	}
	if b.rootMode {
		cfg.HarnessUID, cfg.HarnessGID = SandboxUser, SandboxGroup
	}

	var bridge *bridgeListener
	if e.EgressProxy {
		bridge, err = newBridgeListener()
		if err != nil {
			return session.Result{}, err
		}
		defer bridge.Close()
		proxy, err := egress.New(egress.Config{
			AllowHosts:    s.Contract.Network.AllowHosts,
			DefaultDeny:   s.Contract.Network.DefaultDeny,
			AllowPrefixes: b.opts.AllowPrefixes,
			Resolver:      b.opts.Resolver,
			Record:        session.RecordEgress(s),
			// No Logger: a decision names the host asked for, which may
			// carry a secret; the redacted network.connected event is the
			// record, as in the process tier.
		})
		if err != nil {
			return session.Result{}, fmt.Errorf("start egress proxy: %w", err)
		}
		served := make(chan struct{})
		go bridge.serve()
		go func() {
			defer close(served)
			_ = proxy.Serve(bridge)
		}()
		defer func() {
			sctx, cancel := context.WithTimeout(context.Background(), proxyShutdownTimeout)
			defer cancel()
			if err := proxy.Shutdown(sctx); err != nil {
				log.Warn("egress proxy shutdown", "run", s.RunID, "err", err)
			}
			bridge.Close()
			<-served
		}()
		cfg.Egress = true
		cfg.ProxyEnv = proxyEnv
	} else {
		log.Warn("session runs without the egress proxy (execution.env.egressProxy is false): in the namespace tier it has no network at all", "run", s.RunID)
	}

	cg, err := b.layout.createSession(b.opts.CgroupParent, cgroupName(s.RunID), b.limits)
	if err != nil {
		return session.Result{}, fmt.Errorf("session cgroup: %w", err)
	}
	defer func() {
		cg.kill()
		if err := cg.remove(); err != nil {
			log.Warn("session cgroup cleanup", "run", s.RunID, "err", err)
		}
	}()

	res, st, err := b.start(ctx, s, cfg, bridge, cg)
	if err != nil {
		return session.Result{}, err
	}
	if st.setupErr != nil {
		return session.Result{}, st.setupErr
	}
	if cg.oomKills() > 0 {
		res.End = session.MemoryLimit
		res.Detail = formatBytes(b.limits.MemoryBytes)
		fmt.Fprintf(s.Log, "\n[warrant: the session went over its memory limit of %s and was killed]\n", res.Detail)
	}
	if n := cg.pidsLimitHits(); n > 0 {
		fmt.Fprintf(s.Log, "\n[warrant: the session reached its limit of %d processes; %d forks were refused]\n", b.limits.Pids, n)
	}
	return res, nil
}

// startState is what the runner learns from the init while it runs.
type startState struct {
	started  bool
	setupErr error
}

// start runs the init under session.Supervise: once it exists (blocked on
// its configuration) it joins the session's cgroups, then receives its
// configuration; the OOM watcher kills it if the memory cgroup's OOM
// killer fires.
func (b *Backend) start(ctx context.Context, s *session.Session, cfg *initConfig, bridge *bridgeListener, cg *sessionCgroup) (session.Result, *startState, error) {
	cfgR, cfgW, err := os.Pipe()
	if err != nil {
		return session.Result{}, nil, fmt.Errorf("init config pipe: %w", err)
	}
	defer cfgR.Close()
	defer cfgW.Close()
	stR, stW, err := os.Pipe()
	if err != nil {
		return session.Result{}, nil, fmt.Errorf("init status pipe: %w", err)
	}
	defer stR.Close()
	defer stW.Close()
	extra := []*os.File{cfgR, stW, nil}
	if bridge != nil {
		extra[2] = bridge.child
	}
	cmd := &exec.Cmd{
		Path:        b.opts.Executable,
		Args:        append([]string{b.opts.Executable}, b.initArgs...),
		Env:         []string{},
		ExtraFiles:  extra,
		SysProcAttr: b.sysProcAttr(),
	}

	st := &startState{}
	var (
		wg          sync.WaitGroup
		stopOOM     = make(chan struct{})
		writeErr    error
		initStarted bool
	)
	onStart := func(pid int) {
		initStarted = true
		// The init's ends belong to the init alone now.
		cfgR.Close()
		stW.Close()
		if bridge != nil {
			bridge.child.Close()
		}
		wg.Add(2)
		go func() {
			defer wg.Done()
			b.readStatus(stR, st, s, pid)
		}()
		go func() {
			defer wg.Done()
			watchOOM(cg, pid, stopOOM)
		}()
		if err := cg.attach(pid); err != nil {
			writeErr = err
			_ = syscall.Kill(pid, syscall.SIGKILL)
			return
		}
		err := json.NewEncoder(cfgW).Encode(cfg)
		cfgW.Close()
		if err != nil {
			writeErr = fmt.Errorf("send the init its configuration: %w", err)
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	e := s.Execution
	res, err := session.Supervise(ctx, cmd, s.Log, session.Limits{
		Timeout:     e.Timeout,
		LogMaxBytes: e.LogMaxBytes,
		KillGrace:   s.KillGrace,
	}, onStart)
	close(stopOOM)
	// The init has exited, so its status pipe is at EOF; a read still
	// pending after a second means something kept the pipe open.
	readersDone := make(chan struct{})
	go func() {
		wg.Wait()
		close(readersDone)
	}()
	select {
	case <-readersDone:
	case <-time.After(time.Second):
		stR.Close()
		<-readersDone
	}
	if err != nil {
		return session.Result{}, nil, err
	}
	if !initStarted {
		return session.Result{}, nil, fmt.Errorf("namespace sandbox: the session init could not be started (see the session log); run `warrant runner doctor`")
	}
	if writeErr != nil {
		st.setupErr = fmt.Errorf("namespace sandbox: %w", writeErr)
	}
	if !st.started && st.setupErr == nil && res.ExitCode != session.SpawnFailedExitCode && res.End == session.Exited {
		st.setupErr = fmt.Errorf("namespace sandbox: the session init exited with code %d before starting the harness", res.ExitCode)
	}
	return res, st, nil
}

// readStatus follows the init's status pipe until it closes.
func (b *Backend) readStatus(r *os.File, st *startState, s *session.Session, pid int) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		var m statusMessage
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			continue
		}
		switch {
		case m.Started:
			st.started = true
			if s.Started != nil {
				s.Started(pid)
			}
		case m.Error != "":
			st.setupErr = fmt.Errorf("namespace sandbox: %s: %s", m.Stage, m.Error)
		}
	}
}

// watchOOM kills the session (its init, and with it the PID namespace)
// as soon as the OOM killer has taken any of its processes: a session is
// not left running with a piece missing.
func watchOOM(cg *sessionCgroup, pid int, stop <-chan struct{}) {
	t := time.NewTicker(oomPollInterval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			if cg.oomKills() > 0 {
				_ = syscall.Kill(pid, syscall.SIGKILL)
				return
			}
		}
	}
}

// sysProcAttr is how the init is created. A root runner maps the init to
// root (it must open the session's directories in the runner's private
// data directory) and the harness's id to the sandbox id; a runner that is
// not root can map only itself.
func (b *Backend) sysProcAttr() *syscall.SysProcAttr {
	attr := &syscall.SysProcAttr{Cloneflags: cloneFlags}
	if b.rootMode {
		attr.UidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: 0, Size: 1}, {ContainerID: SandboxUser, HostID: b.uid, Size: 1}}
		attr.GidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: 0, Size: 1}, {ContainerID: SandboxGroup, HostID: b.gid, Size: 1}}
		attr.GidMappingsEnableSetgroups = true
		// No supplementary groups: the runner's must not reach the session.
		attr.Credential = &syscall.Credential{Uid: 0, Gid: 0, Groups: []uint32{}}
	} else {
		attr.UidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Geteuid(), Size: 1}}
		attr.GidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getegid(), Size: 1}}
	}
	return attr
}

// chownTree gives a directory tree to uid:gid without following links.
func chownTree(root string, uid, gid int) error {
	return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, uid, gid)
	})
}

// cgroupPrefix starts every session cgroup's name.
const cgroupPrefix = "warrant-"

// staleAfter is the age past which an empty session cgroup is taken for
// the leftover of a runner that died (a live session's is never empty for
// longer than its set-up takes).
const staleAfter = time.Minute

// cgroupName is the session's cgroup name: the prefix, the run id (for
// whoever reads the cgroup tree) and a random suffix (two sessions never
// share one).
func cgroupName(runID string) string {
	var b strings.Builder
	for _, r := range runID {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-' {
			b.WriteRune(r)
		}
		if b.Len() >= 64 {
			break
		}
	}
	suffix := make([]byte, 6)
	_, _ = rand.Read(suffix)
	name := b.String()
	if name == "" {
		name = "session"
	}
	return cgroupPrefix + name + "-" + hex.EncodeToString(suffix)
}

var _ session.Backend = (*Backend)(nil)
