package testutil

import (
	"bytes"
	"runtime"
	"strings"
	"testing"
	"time"
)

// CheckGoroutines fails the test if, at its end, goroutines are running
// that were not running when CheckGoroutines was called (after giving them
// a few seconds to finish). Call it first in a test, before starting
// anything, so its cleanup runs last.
func CheckGoroutines(t testing.TB) {
	t.Helper()
	before := goroutineIDs()
	t.Cleanup(func() {
		deadline := time.Now().Add(5 * time.Second)
		var leaked []string
		for {
			leaked = leaked[:0]
			for id, stack := range goroutines() {
				if !before[id] && !benign(stack) {
					leaked = append(leaked, stack)
				}
			}
			if len(leaked) == 0 || time.Now().After(deadline) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if len(leaked) > 0 {
			t.Errorf("%d goroutine(s) leaked:\n\n%s", len(leaked), strings.Join(leaked, "\n\n"))
		}
	})
}

// benign goroutines belong to the runtime or the test framework.
func benign(stack string) bool {
	for _, s := range []string{"testing.(*T).Run", "testing.tRunner", "testing.runTests", "runtime.goexit0", "os/signal.signal_recv", "testing.(*M).", "created by runtime."} {
		if strings.Contains(stack, s) && !strings.Contains(stack, "warrant.dev/") {
			return true
		}
	}
	return false
}

func goroutineIDs() map[string]bool {
	out := map[string]bool{}
	for id := range goroutines() {
		out[id] = true
	}
	return out
}

func goroutines() map[string]string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	out := map[string]string{}
	for _, g := range bytes.Split(buf, []byte("\n\n")) {
		s := string(g)
		head, _, _ := strings.Cut(s, "\n")
		f := strings.Fields(head) // "goroutine 12 [running]:"
		if len(f) >= 2 && f[0] == "goroutine" {
			out[f[1]] = s
		}
	}
	return out
}
