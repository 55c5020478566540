//go:build linux && (amd64 || arm64)

package namespace

import (
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// seccompSupported says installSeccomp works on this architecture.
const seccompSupported = true

// deniedSyscalls fail with EPERM in the sandbox. Namespaces do not cover
// them: the kernel keyrings are shared by every process of a host user,
// and bpf, perf_event_open, userfaultfd, io_uring, kexec and module
// loading are kernel-wide attack surface no coding agent needs.
var deniedSyscalls = []uintptr{
	unix.SYS_KEYCTL, unix.SYS_ADD_KEY, unix.SYS_REQUEST_KEY,
	unix.SYS_BPF, unix.SYS_PERF_EVENT_OPEN, unix.SYS_USERFAULTFD,
	unix.SYS_IO_URING_SETUP, unix.SYS_IO_URING_ENTER, unix.SYS_IO_URING_REGISTER,
	unix.SYS_KEXEC_LOAD, unix.SYS_KEXEC_FILE_LOAD,
	unix.SYS_INIT_MODULE, unix.SYS_FINIT_MODULE, unix.SYS_DELETE_MODULE,
	unix.SYS_OPEN_BY_HANDLE_AT,
}

// seccompArch is the AUDIT_ARCH of the native system call ABI.
func seccompArch() uint32 {
	if runtime.GOARCH == "arm64" {
		return unix.AUDIT_ARCH_AARCH64
	}
	return unix.AUDIT_ARCH_X86_64
}

// x32SyscallBit marks x86_64's x32 ABI system calls, whose numbers would
// otherwise slip past a filter written for the native numbers.
const x32SyscallBit = 0x40000000

// seccompProgram builds the classic BPF filter: a foreign architecture or
// ABI, or a denied call, returns EPERM; everything else is allowed.
func seccompProgram() []unix.SockFilter {
	stmt := func(code uint16, k uint32) unix.SockFilter { return unix.SockFilter{Code: code, K: k} }
	jump := func(code uint16, k uint32, jt, jf uint8) unix.SockFilter {
		return unix.SockFilter{Code: code, K: k, Jt: jt, Jf: jf}
	}
	const (
		offNr   = 0 // struct seccomp_data: int nr; __u32 arch; ...
		offArch = 4
		eperm   = unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM)
	)
	n := len(deniedSyscalls)
	// Layout: [0] load arch, [1] arch check, [2] load nr, [3] x32 check,
	// [4..4+n) denied checks, [4+n] allow, [5+n] deny.
	deny := uint8(n + 5)
	prog := []unix.SockFilter{
		stmt(unix.BPF_LD|unix.BPF_W|unix.BPF_ABS, offArch),
		jump(unix.BPF_JMP|unix.BPF_JEQ|unix.BPF_K, seccompArch(), 0, deny-2),
		stmt(unix.BPF_LD|unix.BPF_W|unix.BPF_ABS, offNr),
	}
	if runtime.GOARCH == "amd64" {
		prog = append(prog, jump(unix.BPF_JMP|unix.BPF_JGE|unix.BPF_K, x32SyscallBit, deny-4, 0))
	} else {
		prog = append(prog, jump(unix.BPF_JMP|unix.BPF_JEQ|unix.BPF_K, 0xffffffff, 0, 0)) // keeps the layout
	}
	for i, nr := range deniedSyscalls {
		prog = append(prog, jump(unix.BPF_JMP|unix.BPF_JEQ|unix.BPF_K, uint32(nr), uint8(n-i), 0))
	}
	prog = append(prog, stmt(unix.BPF_RET|unix.BPF_K, unix.SECCOMP_RET_ALLOW), stmt(unix.BPF_RET|unix.BPF_K, eperm))
	return prog
}

// installSeccomp installs the filter on every thread of the calling
// process (children inherit it). no_new_privs must already be set.
func installSeccomp() error {
	prog := seccompProgram()
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	_, _, errno := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, unix.SECCOMP_FILTER_FLAG_TSYNC, uintptr(unsafe.Pointer(&fprog)))
	runtime.KeepAlive(prog)
	if errno != 0 {
		return errno
	}
	return nil
}
