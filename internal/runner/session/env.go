package session

import (
	"fmt"
	"sort"
	"strings"
)

// checkEnvName refuses variable names execve cannot carry.
func checkEnvName(name string) error {
	if name == "" || strings.ContainsAny(name, "=\x00") {
		return fmt.Errorf("invalid environment variable name %q", name)
	}
	return nil
}

// ResolveEnv resolves an execution's environment against the released
// secrets, as every backend must: each released secret is injected under
// its own name; then the literal variables (inherited and env.vars) apply;
// then each env.secrets mapping takes its secret's value, or, when that
// secret was not released, the variable is left out entirely. Nothing
// else is added: the backend supplies its own base (PATH, HOME, proxy
// variables).
func ResolveEnv(e *Execution, secrets []Secret) map[string]string {
	out := make(map[string]string, len(secrets)+len(e.Env)+len(e.SecretEnv))
	byName := make(map[string]string, len(secrets))
	for _, s := range secrets {
		if _, dup := byName[s.Name]; !dup {
			byName[s.Name] = s.Value
		}
		if checkEnvName(s.Name) == nil {
			out[s.Name] = s.Value
		}
	}
	for k, v := range e.Env {
		out[k] = v
	}
	for k, name := range e.SecretEnv {
		if v, ok := byName[name]; ok {
			out[k] = v
		} else {
			delete(out, k)
		}
	}
	return out
}

// Environ renders a variable map as a sorted execve environment, leaving
// out values execve cannot carry (a NUL byte).
func Environ(vars map[string]string) []string {
	env := make([]string, 0, len(vars))
	for k, v := range vars {
		if checkEnvName(k) != nil || strings.IndexByte(v, 0) >= 0 {
			continue
		}
		env = append(env, k+"="+v)
	}
	sort.Strings(env)
	return env
}
