package namespace

// InitCommand is the hidden subcommand of the warrant binary that runs
// Init: the backend starts `<executable> __sandbox-init` as the session's
// PID 1.
const InitCommand = "__sandbox-init"

// Paths inside the sandbox.
const (
	// SandboxWorkspace is where the workspace is mounted read-write.
	SandboxWorkspace = "/workspace"
	// SandboxHome is the session's HOME, backed by its scratch directory.
	SandboxHome = "/home/session"
	// SandboxTmp is the session's TMPDIR, backed by its scratch directory.
	SandboxTmp = "/tmp"
	// SandboxExecutable is where the warrant binary is mounted read-only,
	// so the built-in mock agent can run inside.
	SandboxExecutable = "/run/warrant/bin/warrant"
	// SandboxUser and SandboxGroup are the harness's ids inside its
	// namespaces.
	SandboxUser  = 1000
	SandboxGroup = 1000
)

// File descriptors the init inherits, after stdin, stdout and stderr.
const (
	fdConfig = 3 // read: the JSON initConfig, then EOF
	fdStatus = 4 // write: statusMessage lines
	fdEgress = 5 // a SOCK_SEQPACKET socket: one byte asks for a proxy connection
)

// Init modes.
const (
	modeSession = "session" // build the sandbox and run the harness
	modeProbe   = "probe"   // exit 0 at once: the namespaces could be made
)

// initConfig is what the runner sends the init over fdConfig. Env holds
// secret values: it travels only over that pipe and into the harness's
// execve.
type initConfig struct {
	Mode string `json:"mode"`
	// Argv is the harness's command line; Argv[0] is resolved in Env's
	// PATH inside the sandbox.
	Argv []string          `json:"argv"`
	Env  map[string]string `json:"env"`
	// ProxyEnv names the variables set to the in-sandbox proxy URL once
	// the init has its loopback port (they win over Env).
	ProxyEnv []string `json:"proxyEnv,omitempty"`
	// Cwd is the harness's working directory inside the sandbox.
	Cwd string `json:"cwd"`
	// Host paths the init mounts.
	Workspace  string   `json:"workspace"`
	Home       string   `json:"home"`
	Tmp        string   `json:"tmp"`
	Executable string   `json:"executable,omitempty"`
	ReadOnly   []string `json:"readOnly"`
	Hostname   string   `json:"hostname"`
	// HarnessUID and HarnessGID are the ids, in the init's user namespace,
	// that the harness's nested user namespace maps SandboxUser and
	// SandboxGroup to.
	HarnessUID int `json:"harnessUid"`
	HarnessGID int `json:"harnessGid"`
	// Egress says fdEgress is open and the proxy bridge must run.
	Egress bool `json:"egress"`
	// Seccomp installs the harness's syscall filter.
	Seccomp bool `json:"seccomp"`
}

// statusMessage is one line the init writes on fdStatus: Started once the
// harness runs, or the setup Stage that failed and why.
type statusMessage struct {
	Started bool   `json:"started,omitempty"`
	Stage   string `json:"stage,omitempty"`
	Error   string `json:"error,omitempty"`
}
