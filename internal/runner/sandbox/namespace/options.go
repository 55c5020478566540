package namespace

import (
	"fmt"
	"net/netip"

	"warrant.dev/warrant/internal/runner/egress"
)

// Limits are a session's resource limits. A zero field takes its default;
// a negative one means no limit of that kind.
type Limits struct {
	// MemoryBytes caps the session's memory (and memory+swap where swap is
	// accounted). A session over it is killed: End MemoryLimit.
	MemoryBytes int64
	// Pids caps the number of processes and threads: forks past it fail.
	Pids int64
	// CPUs caps CPU time, in CPUs (1.5 = one and a half cores).
	CPUs float64
}

// Default limits.
const (
	DefaultMemoryBytes = 2 << 30
	DefaultPids        = 512
	DefaultCPUs        = 2.0
)

// normalize applies the defaults; a result of 0 means "no limit".
func (l Limits) normalize() Limits {
	pick := func(v, def int64) int64 {
		switch {
		case v == 0:
			return def
		case v < 0:
			return 0
		}
		return v
	}
	out := Limits{MemoryBytes: pick(l.MemoryBytes, DefaultMemoryBytes), Pids: pick(l.Pids, DefaultPids), CPUs: l.CPUs}
	switch {
	case l.CPUs == 0:
		out.CPUs = DefaultCPUs
	case l.CPUs < 0:
		out.CPUs = 0
	}
	return out
}

// DefaultReadOnlyPaths are the host directories a session sees, read-only.
// Paths a host lacks are skipped; symbolic links (/bin → usr/bin) are
// recreated as links.
var DefaultReadOnlyPaths = []string{"/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc"}

// DefaultSandboxID is the host uid and gid a root runner's sessions run as
// (nobody): a session never holds the runner's own identity.
const DefaultSandboxID = 65534

// DefaultCgroupParent is where session cgroups are made: "" puts them
// directly in the runner's own cgroup, in each hierarchy, so a runner
// shares no cgroup directory with any other process.
const DefaultCgroupParent = ""

// DefaultHostname is the session's host name (its own UTS namespace).
const DefaultHostname = "warrant-session"

// Options configures the backend.
type Options struct {
	// Executable is the warrant binary (absolute path); it must run Init
	// for InitArgs. The runner passes its own executable; tests build one
	// or pass the test binary.
	Executable string
	// InitArgs are the arguments after Executable that run Init; empty
	// means {InitCommand}.
	InitArgs []string
	// Path is the session's PATH; empty means the runner's PATH, else
	// FallbackPath. Only the read-only system directories exist inside.
	Path string
	// Resolver resolves names for the egress proxy; nil means the system
	// resolver.
	Resolver egress.Resolver
	// AllowPrefixes are address ranges the egress proxy may reach although
	// they are private (egress.Config.AllowPrefixes).
	AllowPrefixes []netip.Prefix
	// Limits are the sessions' resource limits.
	Limits Limits
	// CgroupParent is the cgroup, in every hierarchy, under which session
	// cgroups are made: relative to the runner's own cgroup, or absolute
	// (from the hierarchy's root) when it starts with "/". Empty means
	// the runner's own cgroup. A runner that is not root needs it
	// delegated. Directories the runner has to make for it are removed
	// when its last session ends.
	CgroupParent string
	// ReadOnlyPaths replaces DefaultReadOnlyPaths.
	ReadOnlyPaths []string
	// SandboxUID and SandboxGID are the host ids a root runner's harness
	// runs as (0 means DefaultSandboxID). A runner that is not root runs
	// its sessions as itself: it has no other id to give.
	SandboxUID, SandboxGID int
	// Hostname is the session's host name; empty means DefaultHostname.
	Hostname string
	// DisableSeccomp leaves out the seccomp filter.
	DisableSeccomp bool
}

// FallbackPath is the session's PATH when the runner has none.
const FallbackPath = "/usr/local/bin:/usr/bin:/bin"

// proxyEnv are the variables that point a session at the egress proxy.
var proxyEnv = []string{"HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"}

// formatBytes renders a byte count for a failure message.
func formatBytes(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return fmt.Sprintf("%d bytes", n)
}
