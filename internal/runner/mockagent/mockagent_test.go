package mockagent

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
)

func run(t *testing.T, env map[string]string, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := Main(context.Background(), args, Env{Getenv: func(k string) string { return env[k] }, Stdout: &out, Stderr: &errOut})
	return code, out.String(), errOut.String()
}

func TestMockAgent(t *testing.T) {
	t.Chdir(t.TempDir())
	code, out, _ := run(t, map[string]string{"MOCK_SECRET": "s3cr3t-value"}, "first task")
	if code != 0 || !strings.Contains(out, "mock agent received task: first task") || !strings.Contains(out, "mock agent done") {
		t.Fatalf("exit %d, out %q", code, out)
	}
	if strings.Contains(out, "s3cr3t") {
		t.Fatal("the mock agent printed the secret")
	}
	code, _, errOut := run(t, nil, "now fail")
	if code != 1 || !strings.Contains(errOut, "mock agent failing as instructed") {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	data, err := os.ReadFile("MOCK_AGENT.md")
	if err != nil {
		t.Fatal(err)
	}
	if want := "## task\nfirst task\n\nsecret:present\n## task\nnow fail\n\nsecret:absent\n"; string(data) != want {
		t.Fatalf("MOCK_AGENT.md = %q, want %q", data, want)
	}
}

func TestMockAgentProbesThroughTheProxy(t *testing.T) {
	t.Chdir(t.TempDir())
	var asked []string
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked = append(asked, r.Method+" "+r.URL.String())
		w.WriteHeader(http.StatusForbidden)
	}))
	defer proxy.Close()
	code, out, _ := run(t, map[string]string{"HTTP_PROXY": proxy.URL}, "check network")
	if code != 0 || !strings.Contains(out, "network probe status: 403") {
		t.Fatalf("exit %d, out %q", code, out)
	}
	if len(asked) != 1 || asked[0] != "GET http://denied.example.com/probe" {
		t.Fatalf("proxy saw %q", asked)
	}
	code, out, _ = run(t, map[string]string{"HTTP_PROXY": proxy.URL, "MOCK_PROBE_HOST": "other.example:8080"}, "network")
	if code != 0 || len(asked) != 2 || asked[1] != "GET http://other.example:8080/probe" {
		t.Fatalf("exit %d, out %q, proxy saw %q", code, out, asked)
	}
	if _, out, _ := run(t, nil, "network"); !strings.Contains(out, "no HTTP_PROXY") {
		t.Fatalf("out %q", out)
	}
}
