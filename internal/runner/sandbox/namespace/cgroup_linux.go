//go:build linux

package namespace

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// The resource controllers every session is limited by.
var limitedControllers = []string{"memory", "pids", "cpu"}

// hierarchy is one mounted cgroup hierarchy.
type hierarchy struct {
	version int    // 1 or 2
	mount   string // mount point, e.g. /sys/fs/cgroup/memory
	root    string // the mount's root within the hierarchy (not "/" under a cgroup namespace)
	own     string // this process's cgroup in the hierarchy, e.g. /system.slice/warrant.service
}

// dir is the directory of cgroup p (a hierarchy path) on the mount.
func (h *hierarchy) dir(p string) (string, error) {
	rel := p
	if h.root != "/" {
		r, ok := strings.CutPrefix(p, h.root)
		if !ok || (r != "" && !strings.HasPrefix(r, "/")) {
			return "", fmt.Errorf("cgroup %s lies outside the mount of %s", p, h.mount)
		}
		rel = r
	}
	return filepath.Join(h.mount, filepath.FromSlash(rel)), nil
}

// cgroupLayout says where each limited controller lives on this host.
type cgroupLayout struct {
	controllers map[string]*hierarchy // memory, pids, cpu → their hierarchy
	unified     *hierarchy            // the v2 hierarchy, if mounted
}

// Parent directories this process made for session cgroups are removed
// when its last session ends, so the host's cgroup tree is left as found.
// The bookkeeping is per process: every backend of a runner shares the
// same parents.
var parents struct {
	sync.Mutex
	live int             // sessions made and not yet removed
	made map[string]bool // parent directories made
}

// errNoController is wrapped by detectCgroups' reasons.
var errNoController = errors.New("cgroup controller not available")

// detectCgroups reads /proc/self/mountinfo and /proc/self/cgroup and picks,
// per controller, the v2 hierarchy when the controller is available there,
// else its v1 hierarchy. A controller on neither is reported in missing.
func detectCgroups() (layout *cgroupLayout, missing map[string]error, err error) {
	mountinfo, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, nil, fmt.Errorf("read mountinfo: %w", err)
	}
	membership, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return nil, nil, fmt.Errorf("read /proc/self/cgroup: %w", err)
	}
	layout, missing = layoutFrom(mountinfo, membership, func(dir string) []string {
		data, err := os.ReadFile(filepath.Join(dir, "cgroup.controllers"))
		if err != nil {
			return nil
		}
		return strings.Fields(string(data))
	})
	return layout, missing, nil
}

// layoutFrom is detectCgroups on given mountinfo and /proc/self/cgroup
// contents; available lists the controllers of a v2 cgroup directory.
func layoutFrom(mountinfo, membership []byte, available func(dir string) []string) (layout *cgroupLayout, missing map[string]error) {
	v1Paths, v2Path := parseProcCgroup(membership)
	layout = &cgroupLayout{controllers: map[string]*hierarchy{}}
	v1 := map[string]*hierarchy{}
	for _, m := range parseMountinfo(mountinfo) {
		switch m.fstype {
		case "cgroup2":
			if layout.unified == nil && v2Path != "" {
				layout.unified = &hierarchy{version: 2, mount: m.point, root: m.root, own: v2Path}
			}
		case "cgroup":
			for _, opt := range strings.Split(m.superOpts, ",") {
				if !slices.Contains(limitedControllers, opt) {
					continue
				}
				if own, ok := v1Paths[opt]; ok && v1[opt] == nil {
					v1[opt] = &hierarchy{version: 1, mount: m.point, root: m.root, own: own}
				}
			}
		}
	}
	var v2Available []string
	if layout.unified != nil {
		if d, err := layout.unified.dir(layout.unified.own); err == nil {
			v2Available = available(d)
		}
	}
	missing = map[string]error{}
	for _, c := range limitedControllers {
		switch {
		case slices.Contains(v2Available, c):
			layout.controllers[c] = layout.unified
		case v1[c] != nil:
			layout.controllers[c] = v1[c]
		default:
			missing[c] = fmt.Errorf("%w: %s is in neither a v2 nor a v1 hierarchy of this host", errNoController, c)
		}
	}
	return layout, missing
}

type mountEntry struct {
	root, point, fstype, superOpts string
}

// parseMountinfo parses the lines of /proc/self/mountinfo (proc(5)).
func parseMountinfo(data []byte) []mountEntry {
	var out []mountEntry
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		left, right, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		lf, rf := strings.Fields(left), strings.Fields(right)
		if len(lf) < 5 || len(rf) < 3 {
			continue
		}
		out = append(out, mountEntry{root: unescapeMount(lf[3]), point: unescapeMount(lf[4]), fstype: rf[0], superOpts: rf[2]})
	}
	return out
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// parseProcCgroup parses /proc/self/cgroup: v1 lines name their
// controllers, the v2 line is "0::/path".
func parseProcCgroup(data []byte) (v1 map[string]string, v2 string) {
	v1 = map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		if parts[0] == "0" && parts[1] == "" {
			v2 = parts[2]
			continue
		}
		for _, c := range strings.Split(parts[1], ",") {
			v1[c] = parts[2]
		}
	}
	return v1, v2
}

// parentPath resolves the configured parent within a hierarchy: absolute
// as given, relative under the runner's own cgroup.
func parentPath(h *hierarchy, parent string) string {
	if parent == "" {
		return h.own
	}
	if strings.HasPrefix(parent, "/") {
		return path.Clean(parent)
	}
	return path.Join(h.own, parent)
}

// sessionCgroup is one session's cgroups: a directory per hierarchy used.
type sessionCgroup struct {
	dirs     []string          // every directory, each once
	byCtl    map[string]string // controller → directory
	versions map[string]int    // controller → 1 or 2
	unified  string            // the v2 directory, if any
	parents  []string          // parent directories made for it, outermost first
	limits   Limits
}

// mkdirParents makes dir and its missing ancestors, recording the ones it
// made.
func (cg *sessionCgroup) mkdirParents(dir string) error {
	var missing []string
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(d); err == nil {
			break
		} else if !errors.Is(err, os.ErrNotExist) || d == filepath.Dir(d) {
			return err
		}
		missing = append(missing, d)
	}
	for i := len(missing) - 1; i >= 0; i-- {
		err := os.Mkdir(missing[i], 0o755)
		if err == nil {
			cg.parents = append(cg.parents, missing[i])
		} else if !errors.Is(err, os.ErrExist) {
			return err
		}
	}
	return nil
}

// createSession makes the session's cgroups under parent, named name, with
// the limits written. On error nothing is left behind.
//
// Parent directories it has to make are removed again when the process's
// last session ends. Another process's runner removing a parent
// just made is why making the directories is retried.
func (l *cgroupLayout) createSession(parent, name string, lim Limits) (*sessionCgroup, error) {
	parents.Lock()
	defer parents.Unlock()
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		var cg *sessionCgroup
		if cg, err = l.tryCreateSession(parent, name, lim); err == nil {
			parents.live++
			if parents.made == nil {
				parents.made = map[string]bool{}
			}
			for _, p := range cg.parents {
				parents.made[p] = true
			}
			return cg, nil
		}
		if !errors.Is(err, os.ErrNotExist) {
			break
		}
	}
	return nil, err
}

func (l *cgroupLayout) tryCreateSession(parent, name string, lim Limits) (*sessionCgroup, error) {
	cg := &sessionCgroup{byCtl: map[string]string{}, versions: map[string]int{}, limits: lim}
	made := false
	defer func() {
		if !made {
			_ = cg.removeDirs()
			for i := len(cg.parents) - 1; i >= 0; i-- {
				_ = syscall.Rmdir(cg.parents[i])
			}
		}
	}()
	v2Controllers := []string{}
	for _, c := range limitedControllers {
		if h := l.controllers[c]; h != nil && h.version == 2 {
			v2Controllers = append(v2Controllers, c)
		}
	}
	if l.unified != nil {
		d, err := l.makeUnified(cg, parent, name, v2Controllers)
		if err != nil {
			if len(v2Controllers) > 0 {
				return nil, err
			}
			// Limits all live in v1: the v2 directory is only a
			// convenience (cgroup.kill), not a requirement.
		} else {
			cg.unified = d
			cg.dirs = append(cg.dirs, d)
		}
	}
	for _, c := range limitedControllers {
		h := l.controllers[c]
		if h == nil {
			return nil, fmt.Errorf("cgroup %s: %w", c, errNoController)
		}
		cg.versions[c] = h.version
		if h.version == 2 {
			cg.byCtl[c] = cg.unified
			continue
		}
		d, err := h.dir(path.Join(parentPath(h, parent), name))
		if err != nil {
			return nil, err
		}
		if !slices.Contains(cg.dirs, d) {
			if err := cg.mkdirParents(filepath.Dir(d)); err != nil {
				return nil, fmt.Errorf("cgroup %s: %w", c, err)
			}
			if err := os.Mkdir(d, 0o755); err != nil {
				return nil, fmt.Errorf("cgroup %s: %w", c, err)
			}
			cg.dirs = append(cg.dirs, d)
		}
		cg.byCtl[c] = d
	}
	if err := cg.writeLimits(); err != nil {
		return nil, err
	}
	made = true
	return cg, nil
}

// makeUnified creates the session's v2 directory, enabling controllers on
// the way down from the runner's cgroup. A v2 cgroup that holds processes
// cannot pass controllers to children: if the runner's own cgroup does,
// the runner moves itself into a "runner" leaf beside the sessions (what a
// systemd unit with Delegate=yes expects).
func (l *cgroupLayout) makeUnified(cg *sessionCgroup, parent, name string, controllers []string) (string, error) {
	h := l.unified
	p := parentPath(h, parent)
	base := h.own
	if strings.HasPrefix(parent, "/") {
		base = "/"
	}
	enable := ""
	for _, c := range controllers {
		enable += "+" + c + " "
	}
	enable = strings.TrimSpace(enable)
	// Walk from base down to the parent, creating and enabling.
	rel := strings.TrimPrefix(strings.TrimPrefix(p, base), "/")
	levels := []string{base}
	cur := base
	if rel != "" {
		for _, part := range strings.Split(rel, "/") {
			cur = path.Join(cur, part)
			levels = append(levels, cur)
		}
	}
	for i, lvl := range levels {
		d, err := h.dir(lvl)
		if err != nil {
			return "", err
		}
		if i > 0 {
			err := os.Mkdir(d, 0o755)
			if err == nil {
				cg.parents = append(cg.parents, d)
			} else if !errors.Is(err, os.ErrExist) {
				return "", fmt.Errorf("cgroup v2 %s: %w", lvl, err)
			}
		}
		if enable == "" {
			continue
		}
		err = writeFile(filepath.Join(d, "cgroup.subtree_control"), enable)
		if errors.Is(err, syscall.EBUSY) && i == 0 && lvl == h.own && lvl != "/" {
			if err = l.moveSelfToLeaf(d); err == nil {
				err = writeFile(filepath.Join(d, "cgroup.subtree_control"), enable)
			}
		}
		if err != nil {
			return "", fmt.Errorf("cgroup v2: enable %s below %s: %w", enable, lvl, err)
		}
	}
	d, err := h.dir(path.Join(p, name))
	if err != nil {
		return "", err
	}
	if err := os.Mkdir(d, 0o755); err != nil {
		return "", fmt.Errorf("cgroup v2 %s: %w", name, err)
	}
	return d, nil
}

// moveSelfToLeaf moves this process into <dir>/runner, so dir holds no
// processes and may enable controllers for its children.
func (l *cgroupLayout) moveSelfToLeaf(dir string) error {
	leaf := filepath.Join(dir, "runner")
	if err := os.Mkdir(leaf, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	if err := writeFile(filepath.Join(leaf, "cgroup.procs"), strconv.Itoa(os.Getpid())); err != nil {
		return fmt.Errorf("move the runner into %s: %w", leaf, err)
	}
	l.unified.own = path.Join(l.unified.own, "runner")
	return nil
}

func (cg *sessionCgroup) writeLimits() error {
	lim := cg.limits
	if lim.MemoryBytes > 0 {
		d := cg.byCtl["memory"]
		if cg.versions["memory"] == 2 {
			if err := writeFile(filepath.Join(d, "memory.max"), strconv.FormatInt(lim.MemoryBytes, 10)); err != nil {
				return fmt.Errorf("cgroup memory limit: %w", err)
			}
			if err := writeIfExists(filepath.Join(d, "memory.swap.max"), "0"); err != nil {
				return fmt.Errorf("cgroup swap limit: %w", err)
			}
			// One OOM kill takes the whole session, not just its largest process.
			if err := writeIfExists(filepath.Join(d, "memory.oom.group"), "1"); err != nil {
				return fmt.Errorf("cgroup oom group: %w", err)
			}
		} else {
			if err := writeFile(filepath.Join(d, "memory.limit_in_bytes"), strconv.FormatInt(lim.MemoryBytes, 10)); err != nil {
				return fmt.Errorf("cgroup memory limit: %w", err)
			}
			// With swap accounting, memory+swap gets the same limit: no swap.
			if err := writeIfExists(filepath.Join(d, "memory.memsw.limit_in_bytes"), strconv.FormatInt(lim.MemoryBytes, 10)); err != nil {
				return fmt.Errorf("cgroup memory+swap limit: %w", err)
			}
		}
	}
	if lim.Pids > 0 {
		if err := writeFile(filepath.Join(cg.byCtl["pids"], "pids.max"), strconv.FormatInt(lim.Pids, 10)); err != nil {
			return fmt.Errorf("cgroup pids limit: %w", err)
		}
	}
	if lim.CPUs > 0 {
		const period = 100000
		quota := int64(lim.CPUs * period)
		d := cg.byCtl["cpu"]
		if cg.versions["cpu"] == 2 {
			if err := writeFile(filepath.Join(d, "cpu.max"), fmt.Sprintf("%d %d", quota, period)); err != nil {
				return fmt.Errorf("cgroup cpu limit: %w", err)
			}
		} else {
			if err := writeFile(filepath.Join(d, "cpu.cfs_period_us"), strconv.Itoa(period)); err != nil {
				return fmt.Errorf("cgroup cpu period: %w", err)
			}
			if err := writeFile(filepath.Join(d, "cpu.cfs_quota_us"), strconv.FormatInt(quota, 10)); err != nil {
				return fmt.Errorf("cgroup cpu limit: %w", err)
			}
		}
	}
	return nil
}

// attach moves pid into every session cgroup.
func (cg *sessionCgroup) attach(pid int) error {
	for _, d := range cg.dirs {
		if err := writeFile(filepath.Join(d, "cgroup.procs"), strconv.Itoa(pid)); err != nil {
			return fmt.Errorf("put the session into cgroup %s: %w", d, err)
		}
	}
	return nil
}

// oomKills is how many processes the kernel's OOM killer took in the
// session's memory cgroup.
func (cg *sessionCgroup) oomKills() int64 {
	d := cg.byCtl["memory"]
	if d == "" {
		return 0
	}
	file := "memory.oom_control"
	if cg.versions["memory"] == 2 {
		file = "memory.events"
	}
	return readKeyed(filepath.Join(d, file), "oom_kill")
}

// pidsLimitHits is how many forks the pids limit refused.
func (cg *sessionCgroup) pidsLimitHits() int64 {
	d := cg.byCtl["pids"]
	if d == "" {
		return 0
	}
	return readKeyed(filepath.Join(d, "pids.events"), "max")
}

// members lists the pids in the session's cgroups.
func (cg *sessionCgroup) members() []int {
	var out []int
	for _, d := range cg.dirs {
		data, err := os.ReadFile(filepath.Join(d, "cgroup.procs"))
		if err != nil {
			continue
		}
		for _, f := range strings.Fields(string(data)) {
			if pid, err := strconv.Atoi(f); err == nil && !slices.Contains(out, pid) {
				out = append(out, pid)
			}
		}
	}
	return out
}

// kill SIGKILLs every process in the session's cgroups and waits (briefly)
// until none is left.
func (cg *sessionCgroup) kill() {
	if cg.unified != "" {
		_ = writeIfExists(filepath.Join(cg.unified, "cgroup.kill"), "1")
	}
	deadline := time.Now().Add(2 * time.Second)
	for {
		pids := cg.members()
		if len(pids) == 0 || time.Now().After(deadline) {
			return
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// removeStale removes the empty session cgroups under parent, last
// changed before cutoff, that a runner which died left behind. A cgroup
// with processes cannot be removed, so a live session's is safe.
func (l *cgroupLayout) removeStale(parent string, cutoff time.Time) {
	seen := map[string]bool{}
	for _, h := range append([]*hierarchy{l.unified}, l.controllers["memory"], l.controllers["pids"], l.controllers["cpu"]) {
		if h == nil {
			continue
		}
		dir, err := h.dir(parentPath(h, parent))
		if err != nil || seen[dir] {
			continue
		}
		seen[dir] = true
		entries, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, e := range entries {
			if !e.IsDir() || !strings.HasPrefix(e.Name(), cgroupPrefix) {
				continue
			}
			if fi, err := e.Info(); err == nil && fi.ModTime().Before(cutoff) {
				_ = syscall.Rmdir(filepath.Join(dir, e.Name()))
			}
		}
	}
}

// remove deletes the session's cgroups, retrying while the kernel finishes
// tearing down their last processes, and, when it was the process's last
// session, the parent directories made for them.
func (cg *sessionCgroup) remove() error {
	err := cg.removeDirs()
	parents.Lock()
	defer parents.Unlock()
	parents.live--
	if parents.live == 0 {
		made := make([]string, 0, len(parents.made))
		for p := range parents.made {
			made = append(made, p)
		}
		// Deepest first; one still in use (another process's session)
		// stays, and is tried again next time.
		slices.SortFunc(made, func(a, b string) int { return len(b) - len(a) })
		for _, p := range made {
			if rmErr := syscall.Rmdir(p); rmErr == nil || errors.Is(rmErr, syscall.ENOENT) {
				delete(parents.made, p)
			}
		}
	}
	return err
}

func (cg *sessionCgroup) removeDirs() error {
	var errs []error
	for _, d := range cg.dirs {
		deadline := time.Now().Add(2 * time.Second)
		for {
			err := syscall.Rmdir(d)
			if err == nil || errors.Is(err, syscall.ENOENT) {
				break
			}
			if !errors.Is(err, syscall.EBUSY) || time.Now().After(deadline) {
				errs = append(errs, fmt.Errorf("remove cgroup %s: %w", d, err))
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	return errors.Join(errs...)
}

// readKeyed reads "key value" lines and returns key's value (0 if absent).
func readKeyed(file, key string) int64 {
	data, err := os.ReadFile(file)
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		k, v, ok := strings.Cut(line, " ")
		if ok && k == key {
			n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			return n
		}
	}
	return 0
}

func writeFile(file, value string) error {
	f, err := os.OpenFile(file, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return err
	}
	_, werr := f.WriteString(value)
	cerr := f.Close()
	if werr != nil {
		return werr
	}
	return cerr
}

func writeIfExists(file, value string) error {
	err := writeFile(file, value)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}
