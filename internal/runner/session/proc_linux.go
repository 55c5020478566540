package session

import (
	"bytes"
	"os"
	"strconv"
	"syscall"
)

// setDeathSignal asks the kernel to SIGKILL the session leader if the
// runner dies, so a crashed runner does not leave its harness running.
func setDeathSignal(attr *syscall.SysProcAttr) { attr.Pdeathsig = syscall.SIGKILL }

// liveMember scans /proc for a process of group pgid that is not a zombie.
func liveMember(pgid int) bool {
	d, err := os.Open("/proc")
	if err != nil {
		return true // cannot tell: assume alive, the caller bounds its wait
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return true
	}
	want := []byte(strconv.Itoa(pgid))
	for _, name := range names {
		if name[0] < '0' || name[0] > '9' {
			continue
		}
		stat, err := os.ReadFile("/proc/" + name + "/stat")
		if err != nil {
			continue // gone meanwhile
		}
		state, pgrp, ok := parseStat(stat)
		if ok && bytes.Equal(pgrp, want) && state != 'Z' && state != 'X' {
			return true
		}
	}
	return false
}

// parseStat reads the state and process group of /proc/PID/stat:
// "pid (comm) state ppid pgrp ...", where comm may hold spaces and parens.
func parseStat(stat []byte) (state byte, pgrp []byte, ok bool) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 || i+2 >= len(stat) {
		return 0, nil, false
	}
	fields := bytes.Fields(stat[i+1:])
	if len(fields) < 3 || len(fields[0]) != 1 {
		return 0, nil, false
	}
	return fields[0][0], fields[2], true
}

// KillStrays SIGKILLs every process whose environment carries
// MarkerEnv naming a session directory under root: what is left of the
// process-tier sessions of a runner that died (only the harness itself
// gets the parent-death signal; its children do not). The runner calls it
// when it starts, before it removes its old session directories. It
// returns how many processes it killed.
func KillStrays(root string) int {
	prefix := []byte(MarkerEnv + "=" + root + string(os.PathSeparator))
	killed := 0
	// Killing a parent can leave children that were mid-fork: look again
	// until a pass finds nothing.
	for pass := 0; pass < 5; pass++ {
		found := 0
		d, err := os.Open("/proc")
		if err != nil {
			return killed
		}
		names, _ := d.Readdirnames(-1)
		d.Close()
		self := os.Getpid()
		for _, name := range names {
			pid, err := strconv.Atoi(name)
			if err != nil || pid == self {
				continue
			}
			env, err := os.ReadFile("/proc/" + name + "/environ")
			if err != nil {
				continue // gone, or not ours to read
			}
			for _, kv := range bytes.Split(env, []byte{0}) {
				if bytes.HasPrefix(kv, prefix) {
					if syscall.Kill(pid, syscall.SIGKILL) == nil {
						found++
					}
					break
				}
			}
		}
		killed += found
		if found == 0 {
			break
		}
	}
	return killed
}
