// Command bench measures workspace capture and upload end to end on a
// generated repository, in fresh processes, and prints percentiles and
// peak memory.
//
//	go run ./internal/workspace/bench -files 100000 -packed -runs 10
//	go run ./internal/workspace/bench -files 10000 -runs 10
//	go run ./internal/workspace/bench -files 10000 -runs 5 -materialize
//
// It generates the repository in a temporary directory (small text files,
// 100 per directory, one commit; packed with git gc when -packed, loose
// objects otherwise), then runs -runs cold captures (no hash cache, empty
// sink) and -runs warm ones (10 files changed since the previous capture;
// the sink holds every earlier blob), each in a child process that
// reports its wall time and VmHWM. With -materialize it then times, in
// this process, Materialize (-runs times) and Collect of the result,
// untouched and after 10 edits.
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"warrant.dev/warrant/internal/workspace"
	"warrant.dev/warrant/internal/workspace/workspacetest"
)

func main() {
	var (
		files   = flag.Int("files", 10_000, "files in the generated repository")
		packed  = flag.Bool("packed", false, "pack the repository with git gc (otherwise loose objects)")
		runs    = flag.Int("runs", 10, "measured runs of each kind")
		repo    = flag.String("repo", "", "use (or generate into) this directory and keep it")
		sink    = flag.String("sink", "mem", "mem: keep uploaded blobs in memory; discard: verify and drop them")
		child   = flag.String("child", "", "internal: run one measurement (cold or warm)")
		known   = flag.String("known", "", "internal: file of hashes the sink already holds")
		changed = flag.Int("changed", 10, "files changed before each warm run")
		profile = flag.String("cpuprofile", "", "write a CPU profile of each child's measured part to this file prefix")
		commit  = flag.Bool("warm-commit", false, "commit the changed files after each warm run (so the next one also sees a new index)")
		mat     = flag.Bool("materialize", false, "also time Materialize (-runs times) and Collect (untouched, then after 10 edits)")
	)
	flag.Parse()
	warmCommit = *commit
	materializeToo = *mat
	profilePrefix = *profile
	if *child != "" {
		if err := runChild(*child, *repo, *known, *sink); err != nil {
			fmt.Fprintln(os.Stderr, "bench child:", err)
			os.Exit(1)
		}
		return
	}
	if err := runParent(*files, *packed, *runs, *repo, *sink, *changed); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

var (
	profilePrefix  string
	warmCommit     bool
	materializeToo bool
)

// report is what a child prints.
type report struct {
	Mode      string         `json:"mode"`
	Files     int            `json:"files"`
	Hashed    int            `json:"hashed"`
	Blobs     int            `json:"blobs"`
	Uploaded  int            `json:"uploaded"`
	PutCalls  int            `json:"putCalls"`
	CaptureMS float64        `json:"captureMs"`
	UploadMS  float64        `json:"uploadMs"`
	TotalMS   float64        `json:"totalMs"`
	VmHWMKB   int64          `json:"vmHWMKB"`
	GitMaxKB  int64          `json:"gitMaxRSSKB"`
	CPUMS     float64        `json:"cpuMs"`    // user+system CPU of this process
	GitCPUMS  float64        `json:"gitCpuMs"` // user+system CPU of its git children
	MinFlt    int64          `json:"minflt"`   // minor page faults of this process
	Phases    map[string]any `json:"phases"`
}

func runParent(files int, packed bool, runs int, repo, sink string, changed int) error {
	keep := repo != ""
	if repo == "" {
		tmp, err := os.MkdirTemp("", "workspace-bench-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(tmp)
		repo = filepath.Join(tmp, "repo")
	}
	if _, err := os.Stat(filepath.Join(repo, ".git")); err != nil {
		start := time.Now()
		if err := generate(repo, files, packed); err != nil {
			return fmt.Errorf("generate: %w", err)
		}
		fmt.Fprintf(os.Stderr, "generated %d files (%s) in %s\n", files, map[bool]string{true: "packed", false: "loose objects"}[packed], time.Since(start).Round(time.Millisecond))
	} else if keep {
		fmt.Fprintf(os.Stderr, "using existing repository %s\n", repo)
	}
	knownFile := filepath.Join(filepath.Dir(repo), "known-hashes")
	defer os.Remove(knownFile)
	self, err := os.Executable()
	if err != nil {
		return err
	}
	var cold, warm []report
	for i := range runs {
		os.RemoveAll(filepath.Join(repo, ".git", "warrant")) // no hash or listing cache
		r, err := child(self, "cold", repo, knownFile, sink, i == runs-1)
		if err != nil {
			return err
		}
		cold = append(cold, r)
	}
	rng := rand.New(rand.NewPCG(7, 7))
	for i := range runs {
		restore, err := changeFiles(repo, files, changed, rng, i)
		if err != nil {
			return err
		}
		r, err := child(self, "warm", repo, knownFile, sink, true)
		if err != nil {
			return err
		}
		warm = append(warm, r)
		// Untimed: so that each warm run sees exactly -changed files
		// changed since the previous capture, either commit them (the
		// index changes) or put their content back (the index does not).
		if warmCommit {
			err = gitIn(repo, nil, "commit", "-q", "-a", "-m", "bench change")
		} else {
			err = restore()
		}
		if err != nil {
			return err
		}
	}
	kind := "loose"
	if packed {
		kind = "packed"
	}
	var matLine string
	if materializeToo {
		var err error
		if matLine, err = measureMaterialize(repo, runs); err != nil {
			return err
		}
	}
	warmKind := "edits only, index unchanged"
	if warmCommit {
		warmKind = "previous changes committed, new index"
	}
	fmt.Printf("workspace capture+upload, %d files (%s), sink %s, %d runs each, warm after %d changed files (%s), GOMAXPROCS=%d\n",
		files, kind, sink, runs, changed, warmKind, runtime.GOMAXPROCS(0))
	summarize("cold", cold)
	summarize("warm", warm)
	if matLine != "" {
		fmt.Println(matLine)
	}
	return nil
}

// measureMaterialize times, in this process, what a runner does with the
// same workspace: Materialize from an in-memory store (runs times, each
// into a fresh directory), Collect of an untouched workspace, and Collect
// after a session that changed 10 files.
func measureMaterialize(repo string, runs int) (string, error) {
	ctx := context.Background()
	store := &workspacetest.MemStore{}
	c, err := workspace.Capture(ctx, workspace.CaptureOptions{Dir: repo})
	if err != nil {
		return "", err
	}
	if _, err := workspace.Upload(ctx, c, store); err != nil {
		return "", err
	}
	var mats []float64
	var w *workspace.Materialized
	for i := range runs {
		tmp, err := os.MkdirTemp("", "workspace-bench-mat-")
		if err != nil {
			return "", err
		}
		defer os.RemoveAll(tmp)
		start := time.Now()
		w, err = workspace.Materialize(ctx, workspace.MaterializeOptions{
			Dir: filepath.Join(tmp, "ws"), StateDir: filepath.Join(tmp, "state"), Manifest: &c.Manifest, Source: store})
		if err != nil {
			return "", err
		}
		mats = append(mats, float64(time.Since(start).Microseconds())/1000)
		if i < runs-1 {
			os.RemoveAll(tmp)
		}
	}
	start := time.Now()
	out, err := workspace.Collect(ctx, w)
	if err != nil {
		return "", err
	}
	untouched := time.Since(start)
	if len(out.Changed) != 0 {
		return "", fmt.Errorf("untouched workspace: %d changes", len(out.Changed))
	}
	rng := rand.New(rand.NewPCG(9, 9))
	for k := range 10 {
		p := filepath.Join(w.Dir, benchPath(rng.IntN(c.Stats.Files)))
		if err := os.WriteFile(p, fmt.Appendf(nil, "session edit %d\n", k), 0o644); err != nil {
			return "", err
		}
	}
	start = time.Now()
	out, err = workspace.Collect(ctx, w)
	if err != nil {
		return "", err
	}
	slices.Sort(mats)
	return fmt.Sprintf("  runner side: materialize %d files p50 %.0f ms max %.0f ms (%d runs); collect untouched %s; collect after 10 edits %s (%d changed, diff %d bytes)",
		w.Files, mats[len(mats)/2], mats[len(mats)-1], len(mats), untouched.Round(100*time.Microsecond),
		time.Since(start).Round(time.Millisecond), len(out.Changed), len(out.Diff)), nil
}

func summarize(name string, rs []report) {
	pick := func(f func(report) float64) (p50, p95, mx float64) {
		v := make([]float64, len(rs))
		for i, r := range rs {
			v[i] = f(r)
		}
		slices.Sort(v)
		rank := func(p float64) float64 {
			k := int(p*float64(len(v))+0.999999) - 1
			return v[max(0, min(k, len(v)-1))]
		}
		return rank(0.50), rank(0.95), v[len(v)-1]
	}
	t50, t95, tmax := pick(func(r report) float64 { return r.TotalMS })
	c50, c95, _ := pick(func(r report) float64 { return r.CaptureMS })
	u50, u95, _ := pick(func(r report) float64 { return r.UploadMS })
	m50, _, mmax := pick(func(r report) float64 { return float64(r.VmHWMKB) / 1024 })
	g50, _, _ := pick(func(r report) float64 { return float64(r.GitMaxKB) / 1024 })
	cpu50, _, _ := pick(func(r report) float64 { return r.CPUMS })
	gcpu50, _, _ := pick(func(r report) float64 { return r.GitCPUMS })
	flt50, _, _ := pick(func(r report) float64 { return float64(r.MinFlt) })
	last := rs[len(rs)-1]
	fmt.Printf("  %s: total p50 %.0f ms  p95 %.0f ms  max %.0f ms | capture p50 %.0f p95 %.0f | upload p50 %.0f p95 %.0f | peak RSS p50 %.0f MiB max %.0f MiB (largest git child %.0f MiB)\n",
		name, t50, t95, tmax, c50, c95, u50, u95, m50, mmax, g50)
	fmt.Printf("        CPU p50: %.0f ms in the process + %.0f ms in git children, %.0f minor page faults (measured part only)\n", cpu50, gcpu50, flt50)
	fmt.Printf("        last run: %d files, %d hashed, %d blobs, %d uploaded in %d Put calls; phases %v\n",
		last.Files, last.Hashed, last.Blobs, last.Uploaded, last.PutCalls, last.Phases)
}

func child(self, mode, repo, known, sink string, record bool) (report, error) {
	args := []string{"-child", mode, "-repo", repo, "-known", known, "-sink", sink, "-cpuprofile", profilePrefix}
	cmd := exec.Command(self, args...)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		return report{}, fmt.Errorf("%s run: %w", mode, err)
	}
	var r report
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		return report{}, fmt.Errorf("%s run output %q: %w", mode, out.String(), err)
	}
	return r, nil
}

// runChild performs one measured capture+upload.
func runChild(mode, repo, knownFile, sinkKind string) error {
	ctx := context.Background()
	var phases map[string]any
	var mu sync.Mutex
	log := slog.New(phaseHandler{func(msg string, attrs map[string]any) {
		if msg == "capture phases" {
			mu.Lock()
			phases = attrs
			mu.Unlock()
		}
	}})
	sink := newSink(sinkKind)
	if mode == "warm" {
		if err := sink.load(knownFile); err != nil {
			return err
		}
	}
	if profilePrefix != "" {
		f, err := os.Create(fmt.Sprintf("%s.%s.%d", profilePrefix, mode, os.Getpid()))
		if err != nil {
			return err
		}
		defer f.Close()
		pprof.StartCPUProfile(f)
	}
	cpu0, gitCPU0, flt0 := cpuMS(syscall.RUSAGE_SELF), cpuMS(syscall.RUSAGE_CHILDREN), minFlt()
	start := time.Now()
	c, err := workspace.Capture(ctx, workspace.CaptureOptions{Dir: repo, Logger: log})
	if err != nil {
		return err
	}
	captured := time.Now()
	st, err := workspace.Upload(ctx, c, sink)
	if err != nil {
		return err
	}
	end := time.Now()
	if profilePrefix != "" {
		pprof.StopCPUProfile()
	}
	r := report{
		Mode: mode, Files: c.Stats.Files, Hashed: c.Stats.Hashed, Blobs: st.Blobs, Uploaded: st.Uploaded, PutCalls: st.PutCalls,
		CaptureMS: ms(captured.Sub(start)), UploadMS: ms(end.Sub(captured)), TotalMS: ms(end.Sub(start)),
		VmHWMKB: vmHWM(), GitMaxKB: childrenMaxRSS(), Phases: phases,
		CPUMS: cpuMS(syscall.RUSAGE_SELF) - cpu0, GitCPUMS: cpuMS(syscall.RUSAGE_CHILDREN) - gitCPU0,
		MinFlt: minFlt() - flt0,
	}
	// Untimed: remember what the sink now holds, for the next warm run.
	if err := sink.save(knownFile, c); err != nil {
		return err
	}
	return json.NewEncoder(os.Stdout).Encode(r)
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// benchSink is a BlobSink that either keeps blobs (a MemStore) or verifies
// and drops them, seeded with the hashes an earlier run uploaded.
type benchSink struct {
	mem     *workspacetest.MemStore
	discard bool
	known   map[string]struct{}
}

func newSink(kind string) *benchSink {
	return &benchSink{mem: &workspacetest.MemStore{}, discard: kind == "discard", known: map[string]struct{}{}}
}

func (s *benchSink) Missing(ctx context.Context, hashes []string) ([]string, error) {
	var out []string
	for _, h := range hashes {
		if _, ok := s.known[h]; !ok {
			out = append(out, h)
		}
	}
	if s.discard {
		return out, nil
	}
	return s.mem.Missing(ctx, out)
}

func (s *benchSink) Put(ctx context.Context, blobs []workspace.Blob) error {
	if !s.discard {
		return s.mem.Put(ctx, blobs)
	}
	h := sha256.New()
	for _, b := range blobs {
		rc, err := b.Open()
		if err != nil {
			return err
		}
		h.Reset()
		n, err := io.Copy(h, rc)
		rc.Close()
		if err != nil {
			return err
		}
		if n != b.Size || hex.EncodeToString(h.Sum(nil)) != b.Hash {
			return fmt.Errorf("blob %s does not match", b.Hash)
		}
	}
	return nil
}

func (s *benchSink) load(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		s.known[sc.Text()] = struct{}{}
	}
	return sc.Err()
}

func (s *benchSink) save(path string, c *workspace.Captured) error {
	var b bytes.Buffer
	for k := range s.known {
		b.WriteString(k + "\n")
	}
	for blob := range c.Blobs() {
		if _, ok := s.known[blob.Hash]; !ok {
			b.WriteString(blob.Hash + "\n")
		}
	}
	return os.WriteFile(path, b.Bytes(), 0o644)
}

// vmHWM is the process's peak resident set size in KiB.
func vmHWM() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return n
		}
	}
	return -1
}

// cpuMS is the user+system CPU time of who, in milliseconds.
func cpuMS(who int) float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(who, &ru); err != nil {
		return -1
	}
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e6
}

// minFlt is the number of minor page faults of this process so far.
func minFlt() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return -1
	}
	return ru.Minflt
}

// childrenMaxRSS is the largest peak RSS of any waited-for child (git),
// in KiB.
func childrenMaxRSS() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_CHILDREN, &ru); err != nil {
		return -1
	}
	return ru.Maxrss
}

// phaseHandler passes debug records to a callback.
type phaseHandler struct {
	fn func(msg string, attrs map[string]any)
}

func (h phaseHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h phaseHandler) Handle(_ context.Context, r slog.Record) error {
	attrs := map[string]any{}
	r.Attrs(func(a slog.Attr) bool {
		if d, ok := a.Value.Any().(time.Duration); ok {
			attrs[a.Key] = d.Round(100 * time.Microsecond).String()
		} else {
			attrs[a.Key] = a.Value.Any()
		}
		return true
	})
	h.fn(r.Message, attrs)
	return nil
}
func (h phaseHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h phaseHandler) WithGroup(string) slog.Handler      { return h }

// generate writes a repository of small text files, 100 per directory,
// and commits them.
func generate(repo string, files int, packed bool) error {
	if err := os.MkdirAll(repo, 0o755); err != nil {
		return err
	}
	gitc := func(stdin io.Reader, args ...string) error { return gitIn(repo, stdin, args...) }
	if err := gitc(nil, "init", "-q", "-b", "main"); err != nil {
		return err
	}
	rng := rand.New(rand.NewPCG(1, 2))
	var paths bytes.Buffer
	for i := range files {
		rel := benchPath(i)
		p := filepath.Join(repo, rel)
		if i%100 == 0 {
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				return err
			}
		}
		if err := os.WriteFile(p, benchContent(rng, i, 0), 0o644); err != nil {
			return err
		}
		paths.WriteString(rel + "\n")
	}
	if err := gitc(&paths, "update-index", "--add", "--stdin"); err != nil {
		return err
	}
	if err := gitc(nil, "commit", "-q", "-m", "generated"); err != nil {
		return err
	}
	if packed {
		return gitc(nil, "gc", "-q")
	}
	return nil
}

// gitIn runs git in repo for the benchmark's own setup (never measured).
func gitIn(repo string, stdin io.Reader, args ...string) error {
	cmd := exec.Command("git", append([]string{"-c", "gc.auto=0", "-c", "core.hooksPath=/dev/null"}, args...)...)
	cmd.Dir = repo
	cmd.Stdin = stdin
	cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=bench", "GIT_AUTHOR_EMAIL=bench@example.com",
		"GIT_COMMITTER_NAME=bench", "GIT_COMMITTER_EMAIL=bench@example.com", "GIT_CONFIG_NOSYSTEM=1")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("git %s: %v: %s", args[0], err, stderr.String())
	}
	return nil
}

func benchPath(i int) string {
	return fmt.Sprintf("pkg%03d/mod%02d/file%05d.txt", i/10000, (i/100)%100, i)
}

// benchContent is 1 to 12 lines of text (about 40 to 500 bytes).
func benchContent(rng *rand.Rand, i, gen int) []byte {
	var b bytes.Buffer
	for l := range 1 + rng.IntN(12) {
		fmt.Fprintf(&b, "file %d generation %d line %d: %x\n", i, gen, l, rng.Uint64())
	}
	return b.Bytes()
}

// changeFiles rewrites n files with new content and returns a function
// that puts the old content back.
func changeFiles(repo string, files, n int, rng *rand.Rand, gen int) (restore func() error, err error) {
	old := map[string][]byte{}
	for k := range n {
		p := filepath.Join(repo, benchPath(rng.IntN(files)))
		if _, seen := old[p]; !seen {
			if old[p], err = os.ReadFile(p); err != nil {
				return nil, err
			}
		}
		content := append(benchContent(rng, k, gen*1000+k+1), fmt.Sprintf("changed at %d\n", time.Now().UnixNano())...)
		if err := os.WriteFile(p, content, 0o644); err != nil {
			return nil, err
		}
	}
	return func() error {
		for p, b := range old {
			if err := os.WriteFile(p, b, 0o644); err != nil {
				return err
			}
		}
		return nil
	}, nil
}
