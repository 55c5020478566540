package reliability_test

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
)

// needle is one byte string the leak scan looks for.
type needle struct {
	value []byte
	what  string   // which secret or token, and in which form
	okIn  []string // file base names where it may legitimately appear
}

// secretForms are the forms of a secret value the scan looks for: raw,
// and its standard and URL-safe base64, padded and not (JSON and URL
// escapes of our values are the raw value: they are [a-z0-9-]).
func secretForms(value string) map[string][]byte {
	v := []byte(value)
	return map[string][]byte{
		"raw":             v,
		"base64":          []byte(base64.StdEncoding.EncodeToString(v)),
		"base64 unpadded": []byte(base64.RawStdEncoding.EncodeToString(v)),
		"base64url":       []byte(base64.URLEncoding.EncodeToString(v)),
		"base64url nopad": []byte(base64.RawURLEncoding.EncodeToString(v)),
	}
}

// tokenAllowedIn says where a bearer token may be stored by design: the
// bootstrap admin token in DIR/admin.token and in the plane's first-start
// banner (its log), a runner token in the runner's identity.json.
func tokenAllowedIn(what string) []string {
	switch {
	case strings.Contains(what, "bootstrap admin token"):
		return []string{"admin.token", "plane.log"}
	case strings.Contains(what, "runner token"):
		return []string{"identity.json"}
	}
	return nil
}

// buildNeedles turns secrets (value → where used) and tokens (token →
// what) into needles.
func buildNeedles(secrets, tokens map[string]string) []needle {
	var out []needle
	for v, where := range secrets {
		for form, b := range secretForms(v) {
			out = append(out, needle{value: b, what: fmt.Sprintf("secret (%s) of %s", form, where)})
		}
	}
	for tok, what := range tokens {
		out = append(out, needle{value: []byte(tok), what: what, okIn: tokenAllowedIn(what)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].what < out[j].what })
	return out
}

// leakHit is a needle found in a file.
type leakHit struct {
	path string
	what string
}

// scanTree reads every regular file under root (except skip, a directory)
// and reports each needle found in a file where it is not allowed.
func scanTree(root, skip string, needles []needle) (hits []leakHit, files int, total int64, err error) {
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if skip != "" && path == skip {
				return filepath.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() {
			return nil
		}
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		data, err := io.ReadAll(f)
		f.Close()
		if err != nil {
			return err
		}
		files++
		total += int64(len(data))
		base := filepath.Base(path)
		for _, n := range needles {
			if bytes.Contains(data, n.value) && !slices.Contains(n.okIn, base) {
				hits = append(hits, leakHit{path: path, what: n.what})
			}
		}
		return nil
	})
	return hits, files, total, err
}

// leakScanAfterSuite is the last step of the suite: it scans every plane
// data directory (database, WAL, blobs), runner data directory, process
// log, kept receipt and bundle under the suite root for every secret
// value the suite used (raw and base64) and every bearer token: zero hits
// allowed. First it plants two canaries (a registered secret, raw and
// base64url) and requires the scan to find exactly those, so a scan that
// cannot find anything cannot pass.
func leakScanAfterSuite(w io.Writer) int {
	suite.mu.Lock()
	secrets := make(map[string]string, len(suite.secrets)+1)
	for k, v := range suite.secrets {
		secrets[k] = v
	}
	tokens := make(map[string]string, len(suite.tokens))
	for k, v := range suite.tokens {
		tokens[k] = v
	}
	suite.mu.Unlock()
	canary := "s3cr3t-canary-" + strings.Repeat("c4", 12)
	secrets[canary] = "the leak scan's canary"
	canaryDir := filepath.Join(suite.root, "zz-canary")
	planted := []string{filepath.Join(canaryDir, "raw.bin"), filepath.Join(canaryDir, "encoded.log")}
	if err := os.MkdirAll(canaryDir, 0o700); err == nil {
		_ = os.WriteFile(planted[0], append(append([]byte("\x00\x01prefix"), canary...), 0xff), 0o600)
		_ = os.WriteFile(planted[1], []byte("line with "+base64.RawURLEncoding.EncodeToString([]byte(canary))+" in it\n"), 0o600)
	}
	hits, files, total, err := scanTree(suite.root, filepath.Join(suite.root, "bin"), buildNeedles(secrets, tokens))
	os.RemoveAll(canaryDir)
	if err != nil {
		fmt.Fprintf(w, "leak scan: %v\nFAIL\n", err)
		return 1
	}
	found := map[string]bool{}
	var leaks []leakHit
	for _, h := range hits {
		if slices.Contains(planted, h.path) && strings.Contains(h.what, "canary") {
			found[h.path] = true
			continue
		}
		leaks = append(leaks, h)
	}
	code := 0
	if len(found) != len(planted) {
		fmt.Fprintf(w, "leak scan: the planted canaries were not all found (%d of %d): the scan is broken\n", len(found), len(planted))
		code = 1
	}
	for _, h := range leaks {
		fmt.Fprintf(w, "leak scan: %s found in %s\n", h.what, h.path)
		code = 1
	}
	fmt.Fprintf(w, "leak scan: %d secret values and %d tokens (%d forms) in %d files, %.1f MiB: %d leaks; the %d planted canaries found\n",
		len(secrets)-1, len(tokens), len(buildNeedles(secrets, tokens)), files-len(planted), float64(total)/(1<<20), len(leaks), len(found))
	if code != 0 {
		fmt.Fprintln(w, "FAIL (leak scan)")
	}
	return code
}

// TestLeakScannerFindsEveryForm shows the scanner can fail: a secret
// planted in each form it claims to catch, in text and binary files and
// in a nested directory, is found; a token in the one file where it is
// allowed is not reported; the skipped directory is skipped.
func TestLeakScannerFindsEveryForm(t *testing.T) {
	root := t.TempDir()
	secret := "s3cr3t-" + strings.Repeat("ab", 18)
	forms := secretForms(secret)
	i := 0
	var want []string
	for form, b := range forms {
		dir := filepath.Join(root, "d", fmt.Sprint(i))
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, "f.bin")
		if err := os.WriteFile(p, append(append([]byte{0, 0xfe}, b...), '\n'), 0o600); err != nil {
			t.Fatal(err)
		}
		want = append(want, p+" "+form)
		i++
	}
	token := "wrt_" + strings.Repeat("x", 43)
	if err := os.WriteFile(filepath.Join(root, "identity.json"), []byte(`{"runnerToken":"`+token+`"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	leakedTok := filepath.Join(root, "runner.log")
	if err := os.WriteFile(leakedTok, []byte("auth "+token), 0o600); err != nil {
		t.Fatal(err)
	}
	want = append(want, leakedTok+" token")
	skip := filepath.Join(root, "bin")
	if err := os.MkdirAll(skip, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(skip, "warrant"), []byte(secret), 0o600); err != nil {
		t.Fatal(err)
	}
	hits, files, _, err := scanTree(root, skip, buildNeedles(map[string]string{secret: "test"}, map[string]string{token: "runner token of r1"}))
	if err != nil {
		t.Fatal(err)
	}
	if files != len(forms)+2 {
		t.Errorf("scanned %d files, want %d (the skipped directory must be skipped)", files, len(forms)+2)
	}
	var got []string
	for _, h := range hits {
		form := "token"
		if strings.HasPrefix(h.what, "secret (") {
			form = strings.TrimPrefix(h.what[:strings.Index(h.what, ")")], "secret (")
		}
		got = append(got, h.path+" "+form)
	}
	sort.Strings(got)
	sort.Strings(want)
	// A raw value is also found inside nothing else, but an unpadded
	// encoding is a prefix of the padded one: a file holding the padded
	// form also holds the unpadded one.
	for _, w := range want {
		if !slices.Contains(got, w) {
			t.Errorf("the scan missed %s\nfound: %v", w, got)
		}
	}
	for _, g := range got {
		if strings.HasSuffix(g, "identity.json token") {
			t.Errorf("a runner token in identity.json is there by design, but was reported")
		}
	}
}
