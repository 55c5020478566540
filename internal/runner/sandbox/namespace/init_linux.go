//go:build linux

package namespace

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"syscall"

	"golang.org/x/sys/unix"

	"warrant.dev/warrant/internal/runner/session"
)

// initFailedExitCode is the init's exit code when it could not set the
// sandbox up; the runner reads the reason from the status pipe.
const initFailedExitCode = 125

// maxConfigBytes bounds the configuration the init reads.
const maxConfigBytes = 16 << 20

// forwardedSignals are passed from the init to the harness's process
// group: the runner signals the init, the init its harness.
var forwardedSignals = []os.Signal{
	syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT,
	syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGWINCH,
}

// Init is the body of `warrant __sandbox-init`: the session's PID 1. It
// reads its configuration from the pipe the backend passed, builds the
// sandbox, runs the harness and returns the harness's exit code (128+N
// when a signal N killed it), which the caller passes to os.Exit. It must
// only ever run as a process the backend started.
func Init() int {
	for _, fd := range []int{fdConfig, fdStatus, fdEgress} {
		syscall.CloseOnExec(fd) // nothing of the init's reaches the harness
	}
	status := os.NewFile(fdStatus, "status")
	report := func(m statusMessage) {
		b, _ := json.Marshal(m)
		_, _ = status.Write(append(b, '\n'))
	}
	fail := func(err error) int {
		var se *stageError
		if errors.As(err, &se) {
			report(statusMessage{Stage: se.stage, Error: se.err.Error()})
		} else {
			report(statusMessage{Stage: "init", Error: err.Error()})
		}
		return initFailedExitCode
	}
	cfg, err := readConfig(os.NewFile(fdConfig, "config"))
	if err != nil {
		return fail(stage("read configuration", err))
	}
	if cfg.Mode == modeProbe {
		report(statusMessage{Started: true})
		return 0
	}
	if cfg.Mode != modeSession {
		return fail(stage("read configuration", fmt.Errorf("unknown mode %q", cfg.Mode)))
	}
	// Everything below changes mounts: it must never run in the host's
	// namespaces, whoever started it.
	if os.Getpid() != 1 {
		return fail(stage("check namespaces", errors.New("the session init must be PID 1 of a new PID namespace (only the runner starts it)")))
	}
	// The harness must not be able to read the init's memory (it holds
	// the configuration) even where /proc would let it try.
	_ = unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0)
	umask := unix.Umask(0o022)

	if err := buildRoot(cfg); err != nil {
		return fail(err)
	}
	if err := unix.Sethostname([]byte(cfg.Hostname)); err != nil {
		return fail(stage("set the host name", err))
	}
	if err := loopbackUp(); err != nil {
		return fail(stage("bring up loopback", err))
	}
	env := cfg.Env
	if cfg.Egress {
		ln, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			return fail(stage("listen for the egress bridge", err))
		}
		ctl, err := net.FileConn(os.NewFile(fdEgress, "egress"))
		if err != nil {
			return fail(stage("egress control socket", err))
		}
		uc, ok := ctl.(*net.UnixConn)
		if !ok {
			return fail(stage("egress control socket", errors.New("not a unix socket")))
		}
		go serveBridge(ln, &fdDialer{ctl: uc})
		url := "http://" + ln.Addr().String()
		for _, k := range cfg.ProxyEnv {
			env[k] = url
		}
	}

	// The harness: a nested user namespace in which it is SandboxUser with
	// no capabilities, in its own process group, with no_new_privs and the
	// seccomp filter inherited from here.
	argv := cfg.Argv
	cmd := &exec.Cmd{
		Path:   argv[0],
		Args:   argv,
		Env:    session.Environ(env),
		Dir:    cfg.Cwd,
		Stdout: os.Stdout,
		Stderr: os.Stderr,
		SysProcAttr: &syscall.SysProcAttr{
			Setpgid:                    true,
			Pdeathsig:                  syscall.SIGKILL,
			Cloneflags:                 syscall.CLONE_NEWUSER,
			UidMappings:                []syscall.SysProcIDMap{{ContainerID: SandboxUser, HostID: cfg.HarnessUID, Size: 1}},
			GidMappings:                []syscall.SysProcIDMap{{ContainerID: SandboxGroup, HostID: cfg.HarnessGID, Size: 1}},
			GidMappingsEnableSetgroups: false,
			Credential:                 &syscall.Credential{Uid: SandboxUser, Gid: SandboxGroup, NoSetGroups: true},
		},
	}
	path, err := session.LookPath(argv[0], env["PATH"], cfg.Cwd)
	if err != nil {
		// As the process backend reports it: the session's log says why,
		// the exit code is the shell's "command not found".
		fmt.Fprintf(os.Stderr, "spawn error: %v\n", err)
		return session.SpawnFailedExitCode
	}
	cmd.Path = path
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fail(stage("set no_new_privs", err))
	}
	if cfg.Seccomp {
		if err := installSeccomp(); err != nil {
			return fail(stage("install seccomp filter", err))
		}
	}
	signals := make(chan os.Signal, 8)
	signal.Notify(signals, forwardedSignals...)
	unix.Umask(umask)
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(os.Stderr, "spawn error: %v\n", err)
		return session.SpawnFailedExitCode
	}
	report(statusMessage{Started: true})
	status.Close()
	pid := cmd.Process.Pid

	exited := make(chan int, 1)
	go func() { exited <- reap(pid) }()
	for {
		select {
		case sig := <-signals:
			_ = unix.Kill(-pid, sig.(syscall.Signal))
		case code := <-exited:
			return code
		}
	}
}

func readConfig(r io.ReadCloser) (*initConfig, error) {
	defer r.Close()
	data, err := io.ReadAll(io.LimitReader(r, maxConfigBytes+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxConfigBytes {
		return nil, errors.New("configuration too large")
	}
	var cfg initConfig
	if err := json.Unmarshal(data, &cfg); err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	if cfg.Mode == modeSession && len(cfg.Argv) == 0 {
		return nil, errors.New("no command to run")
	}
	if cfg.Env == nil {
		cfg.Env = map[string]string{}
	}
	return &cfg, nil
}

// reap waits for every child of the init (as PID 1 it inherits orphans)
// until the harness exits, and returns the harness's exit code.
func reap(harness int) int {
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, 0, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return initFailedExitCode // ECHILD: the harness is gone unseen
		}
		if pid != harness {
			continue
		}
		switch {
		case ws.Exited():
			return ws.ExitStatus()
		case ws.Signaled():
			return 128 + int(ws.Signal())
		}
	}
}

// loopbackUp brings up lo, the network namespace's only device.
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return err
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP | unix.IFF_RUNNING)
	return unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr)
}
