//go:build linux

package namespace

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// This host's shape: memory, pids and cpu on v1, a v2 mount holding only
// hugetlb, and the process in a nested memory cgroup.
const hybridMountinfo = `22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
`

const hybridCgroup = `9:name=systemd:/
8:pids:/
4:memory:/process_api/abc
1:cpu:/
0::/
`

// A pure v2 host under systemd, with a space in the mount point to check
// the unescaping.
const v2Mountinfo = `30 25 0:26 / /sys/fs/cgroup\040root rw,nosuid - cgroup2 cgroup2 rw,nsdelegate
`

const v2Cgroup = "0::/system.slice/warrant.service\n"

// An older v1 host: cpu and cpuacct co-mounted, memory under a cgroup
// namespace whose root is /ns.
const comountMountinfo = `32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 /ns /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids
`

const comountCgroup = "5:cpu,cpuacct:/a\n4:memory:/ns/b\n3:pids:/c\n"

func TestLayoutPerController(t *testing.T) {
	none := func(string) []string { return nil }

	l, missing := layoutFrom([]byte(hybridMountinfo), []byte(hybridCgroup), func(d string) []string {
		if d == "/sys/fs/cgroup/unified" {
			return []string{"hugetlb"}
		}
		return nil
	})
	if len(missing) != 0 {
		t.Fatalf("missing %v", missing)
	}
	for c, want := range map[string]string{"memory": "/sys/fs/cgroup/memory", "pids": "/sys/fs/cgroup/pids", "cpu": "/sys/fs/cgroup/cpu"} {
		if h := l.controllers[c]; h == nil || h.version != 1 || h.mount != want {
			t.Errorf("%s: %+v, want v1 at %s", c, h, want)
		}
	}
	if d, _ := l.controllers["memory"].dir(parentPath(l.controllers["memory"], "warrant")); d != "/sys/fs/cgroup/memory/process_api/abc/warrant" {
		t.Errorf("memory sessions under %s: not below the runner's own cgroup", d)
	}
	if l.unified == nil || l.unified.mount != "/sys/fs/cgroup/unified" {
		t.Errorf("unified %+v", l.unified)
	}

	l, missing = layoutFrom([]byte(v2Mountinfo), []byte(v2Cgroup), func(d string) []string {
		if d == "/sys/fs/cgroup root/system.slice/warrant.service" {
			return []string{"cpuset", "cpu", "io", "memory", "pids"}
		}
		return nil
	})
	if len(missing) != 0 {
		t.Fatalf("missing %v", missing)
	}
	for _, c := range limitedControllers {
		if h := l.controllers[c]; h == nil || h.version != 2 || h != l.unified {
			t.Errorf("%s: %+v, want the v2 hierarchy", c, h)
		}
	}
	if d, _ := l.unified.dir(parentPath(l.unified, "/warrant")); d != "/sys/fs/cgroup root/warrant" {
		t.Errorf("absolute parent resolves to %s", d)
	}

	// v2 mounted without the controllers, and no v1 hierarchy: nothing
	// can limit the sessions.
	_, missing = layoutFrom([]byte(v2Mountinfo), []byte(v2Cgroup), none)
	if len(missing) != 3 {
		t.Errorf("missing %v, want all three", missing)
	}

	l, missing = layoutFrom([]byte(comountMountinfo), []byte(comountCgroup), none)
	if len(missing) != 0 {
		t.Fatalf("missing %v", missing)
	}
	if h := l.controllers["cpu"]; h == nil || h.mount != "/sys/fs/cgroup/cpu,cpuacct" || h.own != "/a" {
		t.Errorf("cpu %+v", h)
	}
	// Under a cgroup namespace the mount's root is not "/": paths are
	// relative to it.
	if d, err := l.controllers["memory"].dir("/ns/b/warrant"); err != nil || d != "/sys/fs/cgroup/memory/b/warrant" {
		t.Errorf("memory dir %s %v", d, err)
	}
	if _, err := l.controllers["memory"].dir("/elsewhere"); err == nil {
		t.Error("a cgroup outside the mount's root was accepted")
	}
	if l.unified != nil {
		t.Errorf("unified %+v on a host without cgroup2", l.unified)
	}
}

func TestWriteLimits(t *testing.T) {
	lim := Limits{MemoryBytes: 256 << 20, Pids: 64, CPUs: 0.5}
	files := func(t *testing.T, names ...string) string {
		d := t.TempDir()
		for _, n := range names {
			if err := os.WriteFile(filepath.Join(d, n), nil, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		return d
	}
	read := func(t *testing.T, d, name string) string {
		data, err := os.ReadFile(filepath.Join(d, name))
		if err != nil {
			t.Fatal(err)
		}
		return string(data)
	}
	t.Run("v2", func(t *testing.T) {
		d := files(t, "memory.max", "memory.swap.max", "memory.oom.group", "pids.max", "cpu.max")
		cg := &sessionCgroup{byCtl: map[string]string{"memory": d, "pids": d, "cpu": d}, versions: map[string]int{"memory": 2, "pids": 2, "cpu": 2}, limits: lim}
		if err := cg.writeLimits(); err != nil {
			t.Fatal(err)
		}
		for name, want := range map[string]string{"memory.max": "268435456", "memory.swap.max": "0", "memory.oom.group": "1", "pids.max": "64", "cpu.max": "50000 100000"} {
			if got := read(t, d, name); got != want {
				t.Errorf("%s = %q, want %q", name, got, want)
			}
		}
	})
	t.Run("v1", func(t *testing.T) {
		mem, pids, cpu := files(t, "memory.limit_in_bytes", "memory.memsw.limit_in_bytes"), files(t, "pids.max"), files(t, "cpu.cfs_period_us", "cpu.cfs_quota_us")
		cg := &sessionCgroup{byCtl: map[string]string{"memory": mem, "pids": pids, "cpu": cpu}, versions: map[string]int{"memory": 1, "pids": 1, "cpu": 1}, limits: lim}
		if err := cg.writeLimits(); err != nil {
			t.Fatal(err)
		}
		for _, c := range []struct{ dir, name, want string }{
			{mem, "memory.limit_in_bytes", "268435456"}, {mem, "memory.memsw.limit_in_bytes", "268435456"},
			{pids, "pids.max", "64"}, {cpu, "cpu.cfs_period_us", "100000"}, {cpu, "cpu.cfs_quota_us", "50000"},
		} {
			if got := read(t, c.dir, c.name); got != c.want {
				t.Errorf("%s = %q, want %q", c.name, got, c.want)
			}
		}
	})
	t.Run("a missing limit file is an error", func(t *testing.T) {
		d := files(t, "memory.limit_in_bytes")
		cg := &sessionCgroup{byCtl: map[string]string{"memory": d, "pids": d, "cpu": d}, versions: map[string]int{"memory": 1, "pids": 1, "cpu": 1}, limits: lim}
		if err := cg.writeLimits(); err == nil {
			t.Fatal("no error although pids.max does not exist")
		}
	})
}

// TestSessionCgroupOnThisHost makes a real session cgroup (every hierarchy
// this host has, the v2 one included), puts a process in it, and kills
// and removes it.
func TestSessionCgroupOnThisHost(t *testing.T) {
	requireNamespaces(t)
	layout, missing, err := detectCgroups()
	if err != nil || len(missing) > 0 {
		t.Fatal(err, missing)
	}
	cg, err := layout.createSession(DefaultCgroupParent, cgroupName("run_cgtest"), Limits{MemoryBytes: 64 << 20, Pids: 8, CPUs: 1})
	if err != nil {
		t.Fatal(err)
	}
	sleep := exec.Command("sleep", "1000")
	if err := sleep.Start(); err != nil {
		t.Fatal(err)
	}
	defer sleep.Process.Kill()
	if err := cg.attach(sleep.Process.Pid); err != nil {
		t.Fatal(err)
	}
	if m := cg.members(); !slices.Equal(m, []int{sleep.Process.Pid}) {
		t.Fatalf("members %v", m)
	}
	own, _ := os.ReadFile("/proc/" + strconv.Itoa(sleep.Process.Pid) + "/cgroup")
	for _, d := range cg.dirs {
		name := filepath.Base(d)
		if !strings.Contains(string(own), name) {
			t.Errorf("the process is not in %s:\n%s", d, own)
		}
	}
	if cg.oomKills() != 0 || cg.pidsLimitHits() != 0 {
		t.Fatal("counters of a fresh cgroup are not zero")
	}
	cg.kill()
	done := make(chan error, 1)
	go func() { done <- sleep.Wait() }()
	select {
	case err := <-done:
		if ws, ok := sleep.ProcessState.Sys().(syscall.WaitStatus); !ok || ws.Signal() != syscall.SIGKILL {
			t.Fatalf("sleep ended %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("kill left the process running")
	}
	if err := cg.remove(); err != nil {
		t.Fatal(err)
	}
	for _, d := range append(cg.dirs, cg.parents...) {
		if _, err := os.Stat(d); !os.IsNotExist(err) {
			t.Errorf("%s still exists: %v (the host's cgroup tree must be left as found)", d, err)
		}
	}
}

// TestStaleSessionCgroupsAreRemoved: what a runner that died left behind
// goes; a fresh one (a session being set up) and a populated one stay.
func TestStaleSessionCgroupsAreRemoved(t *testing.T) {
	requireNamespaces(t)
	layout, _, err := detectCgroups()
	if err != nil {
		t.Fatal(err)
	}
	h := layout.controllers["pids"]
	own, err := h.dir(h.own)
	if err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-time.Hour)
	mk := func(name string, at time.Time) string {
		d := filepath.Join(own, name)
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = syscall.Rmdir(d) })
		if err := os.Chtimes(d, at, at); err != nil {
			t.Fatal(err)
		}
		return d
	}
	stale := mk(cgroupName("run_stale"), old)
	fresh := mk(cgroupName("run_fresh"), time.Now())
	busy := mk(cgroupName("run_busy"), old)
	other := mk("someone-elses-"+cgroupName("x"), old)
	sleep := exec.Command("sleep", "1000")
	if err := sleep.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { sleep.Process.Kill(); sleep.Wait() }()
	if err := writeFile(filepath.Join(busy, "cgroup.procs"), strconv.Itoa(sleep.Process.Pid)); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(busy, old, old); err != nil {
		t.Fatal(err)
	}

	layout.removeStale(DefaultCgroupParent, time.Now().Add(-staleAfter))
	for d, want := range map[string]bool{stale: false, fresh: true, busy: true, other: true} {
		if _, err := os.Stat(d); (err == nil) != want {
			t.Errorf("%s exists: %v, want %v", filepath.Base(d), err == nil, want)
		}
	}
}
