//go:build linux

package namespace

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// newRootDir is where the init mounts the tmpfs that becomes the session's
// root. It is a mount point in the init's private mount namespace only;
// every host path the sandbox shows is opened before it is covered.
const newRootDir = "/tmp"

// Directories of the new root that are not host binds.
const (
	runDir      = "/run/warrant"
	syntheticRO = runDir + "/etc"   // files bound over /etc entries
	maskFile    = runDir + "/mask"  // empty, mode 0: covers a hidden file
	maskDir     = runDir + "/maskd" // empty, mode 0: covers a hidden directory
)

// devices are the host device nodes the sandbox's /dev binds.
var devices = []string{"null", "zero", "full", "random", "urandom", "tty"}

// procReadOnly are /proc entries re-bound read-only over the session's own
// /proc: kernel-wide knobs the harness must not write even if it could.
var procReadOnly = []string{"sys", "sysrq-trigger", "irq", "bus", "fs"}

// stageError names the setup stage that failed, for the runner's report.
type stageError struct {
	stage string
	err   error
}

func (e *stageError) Error() string { return e.stage + ": " + e.err.Error() }
func (e *stageError) Unwrap() error { return e.err }

func stage(name string, err error) error {
	if err == nil {
		return nil
	}
	return &stageError{stage: name, err: err}
}

// source is a host path opened before the new root covers anything, bound
// by its /proc/self/fd link.
type source struct {
	path string
	fd   int
	dir  bool
	link string // symlink target, when path is a symbolic link
}

func openSource(path string) (*source, error) {
	fi, err := os.Lstat(path)
	if err != nil {
		return nil, err
	}
	if fi.Mode()&fs.ModeSymlink != 0 {
		target, err := os.Readlink(path)
		if err != nil {
			return nil, err
		}
		return &source{path: path, fd: -1, link: target}, nil
	}
	fd, err := unix.Open(path, unix.O_PATH|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	return &source{path: path, fd: fd, dir: fi.IsDir()}, nil
}

// bindSpec is one bind mount of the new root.
type bindSpec struct {
	src    *source
	target string // inside the sandbox
	attr   uint64
}

func (s *source) procPath() string { return "/proc/self/fd/" + strconv.Itoa(s.fd) }

func (s *source) close() {
	if s.fd >= 0 {
		unix.Close(s.fd)
	}
}

// Mount attributes.
const (
	attrSystem = unix.MOUNT_ATTR_RDONLY | unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV
	attrRW     = unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV
)

// bind mounts src (recursively) at target, creating target as a directory
// or an empty file, then applies attr to the whole bound tree.
func bind(src *source, target string, attr uint64) error {
	if src.link != "" {
		if err := os.Symlink(src.link, target); err != nil {
			return fmt.Errorf("symlink %s: %w", target, err)
		}
		return nil
	}
	if err := makeMountPoint(target, src.dir); err != nil {
		return err
	}
	if err := unix.Mount(src.procPath(), target, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind %s at %s: %w", src.path, target, err)
	}
	return setattr(target, attr, true)
}

func setattr(target string, attr uint64, recursive bool) error {
	if attr == 0 {
		return nil
	}
	var flags uint
	if recursive {
		flags = unix.AT_RECURSIVE
	}
	if err := unix.MountSetattr(unix.AT_FDCWD, target, flags, &unix.MountAttr{Attr_set: attr}); err != nil {
		return fmt.Errorf("set mount attributes of %s: %w", target, err)
	}
	return nil
}

func makeMountPoint(target string, dir bool) error {
	if dir {
		if err := os.MkdirAll(target, 0o755); err != nil {
			return fmt.Errorf("mount point %s: %w", target, err)
		}
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
		return fmt.Errorf("mount point %s: %w", target, err)
	}
	f, err := os.OpenFile(target, os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return fmt.Errorf("mount point %s: %w", target, err)
	}
	return f.Close()
}

// buildRoot makes the session's root file system and pivots into it. It
// runs in the init's fresh mount namespace, before the harness exists.
func buildRoot(cfg *initConfig) error {
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return stage("make mounts private", err)
	}
	// Open every host path first: the new root's tmpfs covers newRootDir,
	// which may hold some of them (a workspace under /tmp).
	var sources []*source
	defer func() {
		for _, s := range sources {
			s.close()
		}
	}()
	open := func(path string) (*source, error) {
		s, err := openSource(path)
		if err != nil {
			return nil, err
		}
		sources = append(sources, s)
		return s, nil
	}
	var system []bindSpec
	for _, p := range cfg.ReadOnly {
		s, err := open(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue // this host has no such directory
		}
		if err != nil {
			return stage("open system path", err)
		}
		system = append(system, bindSpec{s, p, attrSystem})
	}
	var own []bindSpec
	for _, b := range []struct{ host, inner string }{
		{cfg.Workspace, SandboxWorkspace},
		{cfg.Home, SandboxHome},
		{cfg.Tmp, SandboxTmp},
	} {
		s, err := open(b.host)
		if err != nil {
			return stage("open session directory", err)
		}
		if !s.dir {
			return stage("open session directory", fmt.Errorf("%s is not a directory", b.host))
		}
		own = append(own, bindSpec{s, b.inner, attrRW})
	}
	if cfg.Executable != "" {
		s, err := open(cfg.Executable)
		if err != nil {
			return stage("open warrant executable", err)
		}
		own = append(own, bindSpec{s, SandboxExecutable, attrSystem})
	}
	var devs []bindSpec
	for _, d := range devices {
		s, err := open("/dev/" + d)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return stage("open device", err)
		}
		devs = append(devs, bindSpec{s, "/dev/" + d, unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NOEXEC})
	}

	if err := unix.Mount("tmpfs", newRootDir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=0755,size=4m"); err != nil {
		return stage("mount the root tmpfs", err)
	}
	if err := os.Chdir(newRootDir); err != nil {
		return stage("enter the new root", err)
	}
	// From here on paths are relative to the new root ("usr", not "/usr").
	rel := func(p string) string { return "." + p }

	if err := writeSynthetic(cfg); err != nil {
		return stage("write sandbox files", err)
	}
	for _, b := range system {
		if b.src.dir && b.target == "/etc" {
			if err := bindEtc(b.src, rel(b.target)); err != nil {
				return stage("bind /etc", err)
			}
			continue
		}
		if err := bind(b.src, rel(b.target), b.attr); err != nil {
			return stage("bind system path", err)
		}
	}
	for _, b := range own {
		if err := bind(b.src, rel(b.target), b.attr); err != nil {
			return stage("bind session directory", err)
		}
	}
	if err := buildDev(devs, rel); err != nil {
		return stage("build /dev", err)
	}
	if err := buildProc(); err != nil {
		return stage("mount /proc", err)
	}
	if err := os.MkdirAll("./sys", 0o555); err != nil {
		return stage("build root", err)
	}

	// pivot_root(".", ".") stacks the old root on top of the new one;
	// detaching it leaves the new root alone, and no path leads back.
	if err := unix.PivotRoot(".", "."); err != nil {
		return stage("pivot_root", err)
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return stage("detach the host root", err)
	}
	if err := os.Chdir("/"); err != nil {
		return stage("enter the new root", err)
	}
	if err := setattr("/", attrSystem, false); err != nil {
		return stage("make the root read-only", err)
	}
	return nil
}

// writeSynthetic writes the files the sandbox shows instead of the host's:
// its own passwd, group, hosts, hostname and resolv.conf, and the empty
// masks that cover hidden /etc entries.
func writeSynthetic(cfg *initConfig) error {
	files := map[string]string{
		"passwd": fmt.Sprintf("root:x:0:0:root:/root:/bin/sh\nsession:x:%d:%d:warrant session:%s:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
			SandboxUser, SandboxGroup, SandboxHome),
		"group":       fmt.Sprintf("root:x:0:\nsession:x:%d:\nnogroup:x:65534:\n", SandboxGroup),
		"hosts":       "127.0.0.1\tlocalhost\n::1\tlocalhost\n127.0.1.1\t" + cfg.Hostname + "\n",
		"hostname":    cfg.Hostname + "\n",
		"resolv.conf": "# A warrant namespace session has no DNS: reach the network through the\n# HTTP(S) proxy in HTTP_PROXY / HTTPS_PROXY.\n",
	}
	if err := os.MkdirAll("."+syntheticRO, 0o755); err != nil {
		return err
	}
	for name, body := range files {
		if err := os.WriteFile("."+syntheticRO+"/"+name, []byte(body), 0o644); err != nil {
			return err
		}
	}
	if err := os.WriteFile("."+maskFile, nil, 0); err != nil {
		return err
	}
	if err := os.Mkdir("."+maskDir, 0); err != nil {
		return err
	}
	return os.Chmod("."+maskFile, 0)
}

// bindEtc binds the host's /etc read-only with every entry that is not
// world-readable covered by an empty mask (the sandbox sees only what any
// user of the host may read: no shadow, no TLS private keys, no service
// credentials), and with the synthetic files over their host versions.
func bindEtc(src *source, target string) error {
	if err := makeMountPoint(target, true); err != nil {
		return err
	}
	if err := unix.Mount(src.procPath(), target, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind %s: %w", src.path, err)
	}
	var masks []string
	err := filepath.WalkDir(target, func(p string, d fs.DirEntry, err error) error {
		if p == target {
			return err
		}
		if err != nil {
			// Unreadable to the init: hide it from the harness too.
			masks = append(masks, p)
			if d != nil && d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		if d.Type()&fs.ModeSymlink != 0 {
			return nil // the target is checked where it lives
		}
		fi, err := d.Info()
		if err != nil {
			masks = append(masks, p)
			return nil
		}
		need := fs.FileMode(0o004)
		if fi.IsDir() {
			need = 0o005
		}
		if fi.Mode().Perm()&need != need {
			masks = append(masks, p)
			if fi.IsDir() {
				return fs.SkipDir
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("scan /etc: %w", err)
	}
	for _, p := range masks {
		fi, err := os.Lstat(p)
		if err != nil {
			continue
		}
		mask := "." + maskFile
		if fi.IsDir() {
			mask = "." + maskDir
		}
		if err := unix.Mount(mask, p, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("mask %s: %w", strings.TrimPrefix(p, "."), err)
		}
	}
	for _, name := range []string{"passwd", "group", "hosts", "hostname", "resolv.conf"} {
		p := target + "/" + name
		fi, err := os.Lstat(p)
		if err != nil || !fi.Mode().IsRegular() {
			continue // absent, or a symlink leading out of /etc: nothing to cover
		}
		if err := unix.Mount("."+syntheticRO+"/"+name, p, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("replace /etc/%s: %w", name, err)
		}
	}
	return setattr(target, attrSystem, true)
}

// buildDev makes a minimal /dev: the harmless host devices, the standard
// links, a private devpts and /dev/shm. /dev itself ends read-only.
func buildDev(devs []bindSpec, rel func(string) string) error {
	if err := os.Mkdir("./dev", 0o755); err != nil {
		return err
	}
	if err := unix.Mount("tmpfs", "./dev", "tmpfs", unix.MS_NOSUID|unix.MS_NOEXEC, "mode=0755,size=64k"); err != nil {
		return fmt.Errorf("mount tmpfs: %w", err)
	}
	for _, d := range devs {
		if err := bind(d.src, rel(d.target), d.attr); err != nil {
			return err
		}
	}
	for link, target := range map[string]string{
		"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1",
		"stderr": "/proc/self/fd/2", "ptmx": "pts/ptmx",
	} {
		if err := os.Symlink(target, "./dev/"+link); err != nil {
			return err
		}
	}
	for _, dir := range []string{"pts", "shm"} {
		if err := os.Mkdir("./dev/"+dir, 0o755); err != nil {
			return err
		}
	}
	if err := unix.Mount("devpts", "./dev/pts", "devpts", unix.MS_NOSUID|unix.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620"); err != nil {
		return fmt.Errorf("mount devpts: %w", err)
	}
	if err := unix.Mount("tmpfs", "./dev/shm", "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=1777"); err != nil {
		return fmt.Errorf("mount /dev/shm: %w", err)
	}
	return setattr("./dev", unix.MOUNT_ATTR_RDONLY|unix.MOUNT_ATTR_NOSUID|unix.MOUNT_ATTR_NOEXEC, false)
}

// buildProc mounts the PID namespace's own /proc and re-binds the
// kernel-wide knobs in it read-only.
func buildProc() error {
	if err := os.Mkdir("./proc", 0o555); err != nil {
		return err
	}
	if err := unix.Mount("proc", "./proc", "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return err
	}
	for _, name := range procReadOnly {
		p := "./proc/" + name
		if _, err := os.Lstat(p); err != nil {
			continue
		}
		if err := unix.Mount(p, p, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("bind /proc/%s: %w", name, err)
		}
		if err := setattr(p, attrSystem|unix.MOUNT_ATTR_NOEXEC, true); err != nil {
			return err
		}
	}
	return nil
}
