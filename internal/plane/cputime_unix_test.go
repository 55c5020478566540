//go:build unix

package plane_test

import (
	"syscall"
	"time"
)

// cpuTime is the CPU time (user and system) this process used so far: a
// machine shared with other work changes a benchmark's wall time more than
// its CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
