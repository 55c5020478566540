// Package mockagent owns the built-in mock agent: a tiny stand-in for a
// vendor coding agent, used by tests and demos that have no vendor CLI or
// API key. The warrant binary runs it as the hidden subcommand
// `warrant agent mock PROMPT`. It
//
//   - appends its task to MOCK_AGENT.md in its working directory,
//   - reports whether the MOCK_SECRET variable was injected (never its
//     value),
//   - when the task mentions "network", makes one HTTP request through the
//     session proxy (HTTP_PROXY) to http://denied.example.com/probe, or to
//     the host MOCK_PROBE_HOST names, so egress enforcement can be seen,
//   - exits 1 when the task mentions "fail".
package mockagent

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

// DefaultProbeHost is never on a test or demo allowlist, so the probe
// deterministically meets deny-by-default egress.
const DefaultProbeHost = "denied.example.com"

// probeTimeout bounds the network probe.
const probeTimeout = 15 * time.Second

// Env is the mock agent's view of its process.
type Env struct {
	Getenv         func(string) string
	Stdout, Stderr io.Writer
}

// Main runs the mock agent with args (the prompt is the first) and returns
// its exit code.
func Main(ctx context.Context, args []string, env Env) int {
	prompt := ""
	if len(args) > 0 {
		prompt = args[0]
	}
	secret := "absent"
	if env.Getenv("MOCK_SECRET") != "" {
		secret = "present"
	}
	if err := appendFile("MOCK_AGENT.md", fmt.Sprintf("## task\n%s\n\nsecret:%s\n", prompt, secret)); err != nil {
		fmt.Fprintf(env.Stderr, "mock agent: %v\n", err)
		return 1
	}
	fmt.Fprintf(env.Stdout, "mock agent received task: %s\n", prompt)
	if strings.Contains(prompt, "network") {
		probe(ctx, env)
	}
	if strings.Contains(prompt, "fail") {
		fmt.Fprintln(env.Stderr, "mock agent failing as instructed")
		return 1
	}
	fmt.Fprintln(env.Stdout, "mock agent done")
	return 0
}

func appendFile(name, text string) error {
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(text); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// probe makes one request through the session proxy, as an agent calling
// an API would, and prints the status it got.
func probe(ctx context.Context, env Env) {
	proxy := env.Getenv("HTTP_PROXY")
	if proxy == "" {
		fmt.Fprintln(env.Stdout, "network probe skipped: no HTTP_PROXY")
		return
	}
	proxyURL, err := url.Parse(proxy)
	if err != nil {
		fmt.Fprintln(env.Stdout, "network probe failed to reach proxy")
		return
	}
	host := env.Getenv("MOCK_PROBE_HOST")
	if host == "" {
		host = DefaultProbeHost
	}
	client := &http.Client{
		Transport: &http.Transport{Proxy: http.ProxyURL(proxyURL)},
		Timeout:   probeTimeout,
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+host+"/probe", nil)
	if err != nil {
		fmt.Fprintf(env.Stdout, "network probe: %v\n", err)
		return
	}
	resp, err := client.Do(req)
	if err != nil {
		fmt.Fprintln(env.Stdout, "network probe failed to reach proxy")
		return
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	fmt.Fprintf(env.Stdout, "network probe status: %d\n", resp.StatusCode)
}
