package session

import (
	"errors"
	"fmt"
	"math"
	"os"
	"time"

	"warrant.dev/warrant/protocol"
)

// DefaultTimeout is the session's wall-clock ceiling when neither the
// execution spec nor the contract's budget sets one.
const DefaultTimeout = 10 * time.Minute

// Execution is a contract's execution intent prepared for a backend: the
// exact command line, where it runs, its limits and its environment
// policy. It is prepared once by the kernel and shared by every backend,
// so the semantics cannot drift between isolation tiers.
type Execution struct {
	// Kind is protocol.ExecArgv or protocol.ExecShell.
	Kind string
	// Cmd and Args: the argv of an argv execution.
	Cmd  string
	Args []string
	// Shell ("sh" or "bash") and Script: a shell execution.
	Shell  string
	Script string
	// Cwd is the workspace-relative working directory ("." by default).
	Cwd string
	// Agent is the contract's agent kind.
	Agent string
	// Timeout is the wall-clock ceiling of the session.
	Timeout time.Duration
	// LogMaxBytes caps the session log; 0 means no cap from the contract.
	LogMaxBytes int64
	// Env holds the literal variables: inherited from the runner's
	// environment (env.inherit), then env.vars.
	Env map[string]string
	// SecretEnv maps a variable name to the secret whose value it takes
	// (env.secrets). A mapping whose secret was not released is dropped by
	// ResolveEnv: the variable is absent, never set to a marker.
	SecretEnv map[string]string
	// EgressProxy says whether the session's traffic goes through the
	// egress proxy (env.egressProxy, default true).
	EgressProxy bool
}

// PrepareOptions configures Prepare.
type PrepareOptions struct {
	// MockAgent is the command line prefix of the built-in mock agent; the
	// prompt is appended. The runner uses the warrant executable's hidden
	// subcommand: {"/path/to/warrant", "agent", "mock"}.
	MockAgent []string
	// LookupEnv reads the runner's environment for env.inherit; nil means
	// os.LookupEnv.
	LookupEnv func(string) (string, bool)
}

// ErrNoMockAgent is returned when a mock-agent contract is prepared without
// PrepareOptions.MockAgent.
var ErrNoMockAgent = errors.New("the runner has no mock agent configured (set the warrant executable path)")

// AgentCommand returns the command line of a vendor harness for an agent
// kind, unmodified: these names and flags are the vendors' contract. The pi
// agent has no CLI: its argv is a placeholder that exists so the prepared
// execution has a stable shape to hash, and process backends refuse it.
func AgentCommand(kind, prompt string, mockAgent []string) (cmd string, args []string, err error) {
	switch kind {
	case protocol.AgentClaudeCode:
		return "claude", []string{"-p", prompt, "--permission-mode", "acceptEdits"}, nil
	case protocol.AgentCodex:
		return "codex", []string{"exec", "--skip-git-repo-check", prompt}, nil
	case protocol.AgentPi:
		return "pi", []string{"--harness-only"}, nil
	case protocol.AgentMock:
		if len(mockAgent) == 0 {
			return "", nil, ErrNoMockAgent
		}
		args := append(append([]string{}, mockAgent[1:]...), prompt)
		return mockAgent[0], args, nil
	case protocol.AgentCommand:
		return "sh", []string{"-c", prompt}, nil
	}
	return "", nil, &CapabilityError{Reason: fmt.Sprintf("unsupported agent kind %q", kind)}
}

// Prepare turns the contract's execution spec (explicit, or the default
// the protocol derives from agent and task) into an Execution.
func Prepare(c *protocol.Contract, opts PrepareOptions) (*Execution, error) {
	spec := c.EffectiveExecution()
	lookup := opts.LookupEnv
	if lookup == nil {
		lookup = os.LookupEnv
	}
	e := &Execution{
		Agent:       c.Agent.Kind,
		Cwd:         ".",
		Timeout:     timeoutFor(c, &spec),
		EgressProxy: true,
		Env:         map[string]string{},
		SecretEnv:   map[string]string{},
	}
	if spec.Log != nil && spec.Log.MaxBytes != nil {
		if *spec.Log.MaxBytes <= 0 {
			return nil, fmt.Errorf("prepare execution: log.maxBytes must be positive, got %d", *spec.Log.MaxBytes)
		}
		e.LogMaxBytes = *spec.Log.MaxBytes
	}
	switch spec.Kind {
	case protocol.ExecAgent:
		if spec.Agent == nil {
			return nil, errors.New("prepare execution: agent execution names no agent")
		}
		cmd, args, err := AgentCommand(spec.Agent.Kind, spec.Prompt, opts.MockAgent)
		if err != nil {
			return nil, fmt.Errorf("prepare execution: %w", err)
		}
		e.Kind, e.Cmd, e.Args = protocol.ExecArgv, cmd, args
	case protocol.ExecArgv:
		if spec.Command == "" {
			return nil, errors.New("prepare execution: argv execution has an empty command")
		}
		e.Kind, e.Cmd, e.Args = protocol.ExecArgv, spec.Command, append([]string{}, spec.Args...)
		if spec.Cwd != "" {
			e.Cwd = spec.Cwd
		}
	case protocol.ExecShell:
		e.Kind, e.Shell, e.Script = protocol.ExecShell, spec.Shell, spec.Script
		if e.Shell == "" {
			e.Shell = "sh"
		}
		if e.Shell != "sh" && e.Shell != "bash" {
			return nil, fmt.Errorf("prepare execution: shell must be sh or bash, got %q", e.Shell)
		}
		if spec.Cwd != "" {
			e.Cwd = spec.Cwd
		}
	default:
		return nil, fmt.Errorf("prepare execution: unsupported execution kind %q", spec.Kind)
	}
	if env := spec.Env; env != nil {
		for _, name := range env.Inherit {
			if v, ok := lookup(name); ok {
				e.Env[name] = v
			}
		}
		for k, v := range env.Vars {
			e.Env[k] = v
		}
		for _, s := range env.Secrets {
			// A secret mapping wins over a literal of the same name, and
			// is resolved (or dropped) only by ResolveEnv.
			delete(e.Env, s.Env)
			e.SecretEnv[s.Env] = s.SecretName
		}
		if env.EgressProxy != nil {
			e.EgressProxy = *env.EgressProxy
		}
	}
	for k := range e.Env {
		if err := checkEnvName(k); err != nil {
			return nil, fmt.Errorf("prepare execution: %w", err)
		}
	}
	for k := range e.SecretEnv {
		if err := checkEnvName(k); err != nil {
			return nil, fmt.Errorf("prepare execution: %w", err)
		}
	}
	return e, nil
}

// timeoutFor is the spec's timeoutMs, else the budget's maxDurationMin,
// else DefaultTimeout.
func timeoutFor(c *protocol.Contract, spec *protocol.ExecutionSpec) time.Duration {
	if spec.TimeoutMs != nil && *spec.TimeoutMs > 0 {
		return time.Duration(*spec.TimeoutMs) * time.Millisecond
	}
	if m := c.Budget.MaxDurationMin; m != nil && *m > 0 && !math.IsInf(*m, 0) {
		d := *m * float64(time.Minute)
		if d >= float64(math.MaxInt64) {
			return time.Duration(math.MaxInt64)
		}
		return time.Duration(d)
	}
	return DefaultTimeout
}

// Argv returns the command line to execute: the argv itself, or the shell
// with -c and the script.
func (e *Execution) Argv() []string {
	if e.Kind == protocol.ExecShell {
		return []string{e.Shell, "-c", e.Script}
	}
	return append([]string{e.Cmd}, e.Args...)
}

// Hash is the argvHash of the command.executed event: the protocol hash of
// {kind: "argv", cmd, args, cwd} or {kind: "shell", shell, script, cwd}, as
// the original runner computes it.
func (e *Execution) Hash() (string, error) {
	var (
		h   string
		err error
	)
	if e.Kind == protocol.ExecShell {
		h, err = protocol.Hash(struct {
			Kind   string `json:"kind"`
			Shell  string `json:"shell"`
			Script string `json:"script"`
			Cwd    string `json:"cwd"`
		}{e.Kind, e.Shell, e.Script, e.Cwd})
	} else {
		args := e.Args
		if args == nil {
			args = []string{}
		}
		h, err = protocol.Hash(struct {
			Kind string   `json:"kind"`
			Cmd  string   `json:"cmd"`
			Args []string `json:"args"`
			Cwd  string   `json:"cwd"`
		}{protocol.ExecArgv, e.Cmd, args, e.Cwd})
	}
	if err != nil {
		return "", fmt.Errorf("hash execution: %w", err)
	}
	return h, nil
}
