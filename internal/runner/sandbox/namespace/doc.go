// Package namespace owns the "namespace" isolation tier on Linux: the
// harness runs in new user, mount, PID, IPC, UTS and network namespaces,
// under per-session cgroup limits (memory, pids, CPU), with the egress
// proxy as its only way out.
//
// The backend re-executes the warrant binary as the session's init
// (`warrant __sandbox-init`, see Init), which becomes PID 1 of the new PID
// namespace. The init receives its configuration, including the resolved
// environment with the released secret values, over a pipe (never argv or
// its own environment), then
//
//   - builds a new root on a tmpfs: the host's system directories (/usr,
//     /bin, /lib…, /etc with every entry that is not world-readable masked
//     and passwd, group, hosts and resolv.conf replaced) bound read-only,
//     nosuid and nodev; the workspace bound read-write at /workspace; the
//     session's scratch directories at /home/session and /tmp; a fresh
//     /proc of its own PID namespace (with /proc/sys read-only); a minimal
//     /dev; then pivot_root, so nothing else of the host (the runner's data
//     directory and key, other sessions, the plane's data) is reachable;
//   - brings up the loopback device, the only one its network namespace
//     has, and listens on a loopback port that bridges every connection to
//     the runner's egress proxy: for each one it asks the runner, over a
//     socket pair it inherited, for a fresh connected socket (passed with
//     SCM_RIGHTS), so the proxy has no address in the sandbox at all;
//   - starts the harness in a nested user namespace as uid 1000 with no
//     capabilities, no_new_privs set and a small seccomp filter, forwards
//     signals to its process group, reaps orphans, and exits with the
//     harness's status. When the init exits the kernel kills every process
//     left in the PID namespace.
//
// The runner side (Backend) puts the init into the session's cgroups
// before it may start the harness, supervises it with the session
// package's process-tree supervision (timeout, log cap, SIGTERM → grace →
// SIGKILL), watches the memory cgroup for OOM kills (which end the session
// MemoryLimit, so the run fails budget_exceeded) and serves the egress
// proxy, which records every decision as a network.connected event.
//
// Probe checks, by trying them, every kernel feature the tier needs, so a
// runner refuses the tier, saying exactly what is missing, instead of
// silently downgrading.
package namespace
