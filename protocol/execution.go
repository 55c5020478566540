package protocol

import (
	"fmt"
	"reflect"
)

// Execution kinds.
const (
	ExecShell = "shell"
	ExecArgv  = "argv"
	ExecAgent = "agent"
)

// ExecutionSpec is a contract's durable machine intent, one of:
//
//	{kind: "shell", script, shell?, cwd?, timeoutMs?, env?, log?}
//	{kind: "argv", command, args, cwd?, timeoutMs?, env?, log?}
//	{kind: "agent", agent, prompt, timeoutMs?, env?, log?}
type ExecutionSpec struct {
	Kind string

	Script string // shell
	Shell  string // shell: "sh" (default) or "bash"

	Command string   // argv
	Args    []string // argv

	Agent  *AgentSpec // agent
	Prompt string     // agent

	Cwd       string // shell, argv: workspace-relative, default "."
	TimeoutMs *int64
	Env       *ExecutionEnv
	Log       *ExecutionLog
}

// ExecutionEnv is the environment policy of an execution.
type ExecutionEnv struct {
	Inherit     []string          `json:"inherit,omitempty"`
	Vars        map[string]string `json:"vars,omitempty"`
	Secrets     []EnvSecret       `json:"secrets,omitempty"`
	EgressProxy *bool             `json:"egressProxy,omitempty"`
}

// EnvSecret maps a released secret onto an environment variable.
type EnvSecret struct {
	Env        string `json:"env"`
	SecretName string `json:"secretName"`
}

// ExecutionLog is the log capture policy of an execution.
type ExecutionLog struct {
	Stdout   string `json:"stdout"`
	Stderr   string `json:"stderr"`
	MaxBytes *int64 `json:"maxBytes,omitempty"`
}

type execShell struct {
	Kind      string        `json:"kind"`
	Script    string        `json:"script"`
	Shell     string        `json:"shell,omitempty"`
	Cwd       string        `json:"cwd,omitempty"`
	TimeoutMs *int64        `json:"timeoutMs,omitempty"`
	Env       *ExecutionEnv `json:"env,omitempty"`
	Log       *ExecutionLog `json:"log,omitempty"`
}

type execArgv struct {
	Kind      string        `json:"kind"`
	Command   string        `json:"command"`
	Args      []string      `json:"args"`
	Cwd       string        `json:"cwd,omitempty"`
	TimeoutMs *int64        `json:"timeoutMs,omitempty"`
	Env       *ExecutionEnv `json:"env,omitempty"`
	Log       *ExecutionLog `json:"log,omitempty"`
}

type execAgent struct {
	Kind      string        `json:"kind"`
	Agent     AgentSpec     `json:"agent"`
	Prompt    string        `json:"prompt"`
	TimeoutMs *int64        `json:"timeoutMs,omitempty"`
	Env       *ExecutionEnv `json:"env,omitempty"`
	Log       *ExecutionLog `json:"log,omitempty"`
}

func (e ExecutionSpec) encodeTree() (any, error) {
	switch e.Kind {
	case ExecShell:
		return encodeValue(reflect.ValueOf(execShell{e.Kind, e.Script, e.Shell, e.Cwd, e.TimeoutMs, e.Env, e.Log}))
	case ExecArgv:
		return encodeValue(reflect.ValueOf(execArgv{e.Kind, e.Command, e.Args, e.Cwd, e.TimeoutMs, e.Env, e.Log}))
	case ExecAgent:
		if e.Agent == nil {
			return nil, fmt.Errorf("agent execution has no agent")
		}
		return encodeValue(reflect.ValueOf(execAgent{e.Kind, *e.Agent, e.Prompt, e.TimeoutMs, e.Env, e.Log}))
	default:
		return nil, fmt.Errorf("unknown execution kind %q", e.Kind)
	}
}

func (e *ExecutionSpec) decodeTree(path string, v any) error {
	obj, ok := v.(Object)
	if !ok {
		return typeError(path, "an object", v)
	}
	k, _ := obj.Get("kind")
	kind, _ := k.(string)
	switch kind {
	case ExecShell:
		var s execShell
		if err := fromTree(path, v, reflect.ValueOf(&s).Elem()); err != nil {
			return err
		}
		*e = ExecutionSpec{Kind: kind, Script: s.Script, Shell: s.Shell, Cwd: s.Cwd, TimeoutMs: s.TimeoutMs, Env: s.Env, Log: s.Log}
		if s.Shell != "" && s.Shell != "sh" && s.Shell != "bash" {
			return &FieldError{Path: path + ".shell", Reason: fmt.Sprintf("shell must be \"sh\" or \"bash\", got %q", s.Shell)}
		}
	case ExecArgv:
		var a execArgv
		if err := fromTree(path, v, reflect.ValueOf(&a).Elem()); err != nil {
			return err
		}
		*e = ExecutionSpec{Kind: kind, Command: a.Command, Args: a.Args, Cwd: a.Cwd, TimeoutMs: a.TimeoutMs, Env: a.Env, Log: a.Log}
	case ExecAgent:
		var a execAgent
		if err := fromTree(path, v, reflect.ValueOf(&a).Elem()); err != nil {
			return err
		}
		agent := a.Agent
		*e = ExecutionSpec{Kind: kind, Agent: &agent, Prompt: a.Prompt, TimeoutMs: a.TimeoutMs, Env: a.Env, Log: a.Log}
	default:
		return &FieldError{Path: path + ".kind", Reason: fmt.Sprintf("execution kind must be \"shell\", \"argv\" or \"agent\", got %q", kind)}
	}
	if e.TimeoutMs != nil && *e.TimeoutMs <= 0 {
		return &FieldError{Path: path + ".timeoutMs", Reason: "must be positive"}
	}
	return nil
}

// MarshalJSON renders the canonical JSON of the execution spec.
func (e ExecutionSpec) MarshalJSON() ([]byte, error) { return Canonical(e) }

// UnmarshalJSON strictly decodes an execution spec.
func (e *ExecutionSpec) UnmarshalJSON(b []byte) error { return decodeJSON(b, "execution", e) }
