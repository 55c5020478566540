package redact

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"
	"regexp"
	"strings"
	"testing"
)

func TestBytesTable(t *testing.T) {
	tests := []struct {
		name    string
		secrets []Secret
		in      string
		want    string
	}{
		{"no secrets", nil, "hello", "hello"},
		{"empty input", []Secret{{"A", "tok"}}, "", ""},
		{"single", []Secret{{"TOKEN", "s3cr3t"}}, "x=s3cr3t;", "x=[REDACTED:TOKEN];"},
		{"repeated", []Secret{{"T", "ab"}}, "abab-ab", "[REDACTED:T][REDACTED:T]-[REDACTED:T]"},
		{"empty value ignored", []Secret{{"E", ""}, {"T", "xy"}}, "xyz", "[REDACTED:T]z"},
		{"short value still redacted", []Secret{{"ONE", "a"}}, "banana", "b[REDACTED:ONE]n[REDACTED:ONE]n[REDACTED:ONE]"},
		{"longest wins at a position", []Secret{{"SHORT", "abc"}, {"LONG", "abcdef"}}, "abcdefabcx", "[REDACTED:LONG][REDACTED:SHORT]x"},
		{"longest wins regardless of order", []Secret{{"LONG", "abcdef"}, {"SHORT", "abc"}}, "abcdefabcx", "[REDACTED:LONG][REDACTED:SHORT]x"},
		{"leftmost wins over overlap", []Secret{{"A", "abc"}, {"B", "bcd"}}, "abcd", "[REDACTED:A]d"},
		{"overlap later start", []Secret{{"A", "abc"}, {"B", "bcd"}}, "xbcdabc", "x[REDACTED:B][REDACTED:A]"},
		{"same value first name wins", []Secret{{"FIRST", "dup"}, {"SECOND", "dup"}}, "dup", "[REDACTED:FIRST]"},
		{"name sanitised", []Secret{{"we[i]rd name", "v"}}, "v", "[REDACTED:we_i_rd_name]"},
		{"binary", []Secret{{"BIN", "\x00\xff\x00"}}, "\x01\x00\xff\x00\x02", "\x01[REDACTED:BIN]\x02"},
		{"near miss", []Secret{{"T", "secret"}}, "secre secreT", "secre secreT"},
		{"prefix at end", []Secret{{"T", "secret"}}, "xx secr", "xx secr"},
		{"base64 std", []Secret{{"K", "hunter22!?"}}, "Authorization: " + base64.StdEncoding.EncodeToString([]byte("hunter22!?")), "Authorization: [REDACTED:K]"},
		{"base64 url unpadded", []Secret{{"K", "hunter22!?>"}}, "t=" + base64.RawURLEncoding.EncodeToString([]byte("hunter22!?>")) + "&", "t=[REDACTED:K]&"},
		{"url query escape", []Secret{{"K", "p@ss word/1"}}, "?pw=p%40ss+word%2F1", "?pw=[REDACTED:K]"},
		{"url path escape", []Secret{{"K", "p@ss word/1"}}, "/p@ss%20word%2F1/", "/[REDACTED:K]/"},
		{"json escape", []Secret{{"K", "line1\nline2\"q"}}, `{"k":"line1\nline2\"q"}`, `{"k":"[REDACTED:K]"}`},
		{"json html escape", []Secret{{"K", "a<b>&c-long"}}, `"a\u003cb\u003e\u0026c-long"`, `"[REDACTED:K]"`},
		{"short value not encoded", []Secret{{"K", "ab"}}, base64.StdEncoding.EncodeToString([]byte("ab")), base64.StdEncoding.EncodeToString([]byte("ab"))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := string(Bytes([]byte(tt.in), tt.secrets))
			if got != tt.want {
				t.Errorf("Bytes(%q) = %q, want %q", tt.in, got, tt.want)
			}
			if s := streamed(t, New(tt.secrets), []byte(tt.in), []int{1}); s != tt.want {
				t.Errorf("byte-at-a-time Writer = %q, want %q", s, tt.want)
			}
		})
	}
}

// streamed writes in to a Writer in chunks whose sizes cycle through sizes.
func streamed(t testing.TB, r *Redactor, in []byte, sizes []int) string {
	t.Helper()
	var out bytes.Buffer
	w := r.NewWriter(&out)
	for i, k := 0, 0; i < len(in); k++ {
		n := min(sizes[k%len(sizes)], len(in)-i)
		if got, err := w.Write(in[i : i+n]); err != nil || got != n {
			t.Fatalf("Write = %d, %v; want %d, nil", got, err, n)
		}
		if w.Buffered() > r.MaxHold() {
			t.Fatalf("Writer holds %d bytes, more than MaxHold %d", w.Buffered(), r.MaxHold())
		}
		i += n
	}
	if err := w.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	return out.String()
}

// reference is a deliberately naive implementation of the matching rule:
// at each position, try every pattern and take the longest.
func reference(in []byte, patterns map[string]string) []byte {
	var out []byte
	for i := 0; i < len(in); {
		best, marker := "", ""
		for v, m := range patterns {
			if len(v) > len(best) && bytes.HasPrefix(in[i:], []byte(v)) {
				best, marker = v, m
			}
		}
		if best == "" {
			out = append(out, in[i])
			i++
			continue
		}
		out = append(out, marker...)
		i += len(best)
	}
	return out
}

func rawPatterns(secrets []Secret) map[string]string {
	m := make(map[string]string)
	for _, s := range secrets {
		if _, dup := m[s.Value]; s.Value != "" && !dup {
			m[s.Value] = string(Marker(s.Name))
		}
	}
	return m
}

func TestEveryChunking(t *testing.T) {
	// Short values (below MinEncodedLen) so only raw patterns apply and the
	// naive reference is exact.
	secrets := []Secret{{"A", "abc"}, {"B", "abcab"}, {"C", "bca"}, {"D", "cc"}}
	r := New(secrets)
	inputs := []string{"abcabcabcc", "xabcabx", "ccabcaba", "abababcab", "cabcabcab"}
	for _, in := range inputs {
		want := string(reference([]byte(in), rawPatterns(secrets)))
		if got := string(r.Bytes([]byte(in))); got != want {
			t.Fatalf("Bytes(%q) = %q, reference %q", in, got, want)
		}
		// Every composition of len(in) into chunk sizes: bit k of mask set
		// means a chunk boundary after byte k.
		n := len(in)
		for mask := 0; mask < 1<<(n-1); mask++ {
			var out bytes.Buffer
			w := r.NewWriter(&out)
			start := 0
			for k := 0; k < n; k++ {
				if k == n-1 || mask&(1<<k) != 0 {
					if _, err := w.Write([]byte(in[start : k+1])); err != nil {
						t.Fatal(err)
					}
					start = k + 1
				}
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			if out.String() != want {
				t.Fatalf("input %q chunk mask %b: got %q, want %q", in, mask, out.String(), want)
			}
		}
	}
}

func TestEverySplitPoint(t *testing.T) {
	secrets := []Secret{
		{"GITHUB_TOKEN", "ghp_0123456789abcdefABCDEF"},
		{"PASSWORD", "correct horse battery staple"},
		{"PREFIX", "ghp_0123"},
	}
	r := New(secrets)
	in := []byte("log: token=ghp_0123456789abcdefABCDEF pw=correct horse battery staple\n" +
		"basic " + base64.StdEncoding.EncodeToString([]byte("correct horse battery staple")) +
		" q=" + url.QueryEscape("correct horse battery staple") + " short ghp_0123 end")
	want := string(r.Bytes(in))
	for _, s := range secrets {
		if strings.Contains(want, s.Value) {
			t.Fatalf("Bytes left %s in %q", s.Name, want)
		}
	}
	for a := 0; a <= len(in); a++ {
		for _, b := range []int{a, a + 1, a + 7, len(in)} {
			if b < a || b > len(in) {
				continue
			}
			var out bytes.Buffer
			w := r.NewWriter(&out)
			for _, part := range [][]byte{in[:a], in[a:b], in[b:]} {
				if _, err := w.Write(part); err != nil {
					t.Fatal(err)
				}
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			if out.String() != want {
				t.Fatalf("splits at %d,%d: got %q, want %q", a, b, out.String(), want)
			}
		}
	}
}

func TestMinimalHoldBack(t *testing.T) {
	r := New([]Secret{{"T", "secret-value"}})
	var out bytes.Buffer
	w := r.NewWriter(&out)
	w.Write([]byte("nothing to hold here"))
	if w.Buffered() != 0 {
		t.Errorf("held %d bytes of text that cannot start a secret", w.Buffered())
	}
	if out.String() != "nothing to hold here" {
		t.Errorf("output %q, want the text passed through", out.String())
	}
	w.Write([]byte(" sec"))
	if w.Buffered() != 3 {
		t.Errorf("held %d bytes, want 3 (\"sec\")", w.Buffered())
	}
	w.Write([]byte("ret-valu"))
	if w.Buffered() != 11 {
		t.Errorf("held %d bytes, want 11", w.Buffered())
	}
	w.Write([]byte("e!"))
	if w.Buffered() != 0 {
		t.Errorf("held %d bytes after the secret completed", w.Buffered())
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if want := "nothing to hold here [REDACTED:T]!"; out.String() != want {
		t.Errorf("output %q, want %q", out.String(), want)
	}
}

type failWriter struct{ err error }

func (f failWriter) Write(p []byte) (int, error) { return 0, f.err }

func TestWriterErrors(t *testing.T) {
	boom := errors.New("disk full")
	w := NewWriter(failWriter{boom}, []Secret{{"T", "tok"}})
	if _, err := w.Write([]byte("hello")); !errors.Is(err, boom) {
		t.Fatalf("Write error = %v, want %v", err, boom)
	}
	if _, err := w.Write([]byte("again")); !errors.Is(err, boom) {
		t.Fatalf("second Write error = %v, want sticky %v", err, boom)
	}
	if err := w.Close(); !errors.Is(err, boom) {
		t.Fatalf("Close error = %v, want %v", err, boom)
	}

	var out bytes.Buffer
	w = NewWriter(&out, []Secret{{"T", "tok"}})
	w.Write([]byte("to"))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if out.String() != "to" {
		t.Errorf("Close flushed %q, want %q", out.String(), "to")
	}
	if _, err := w.Write([]byte("k")); !errors.Is(err, ErrClosed) {
		t.Errorf("Write after Close = %v, want ErrClosed", err)
	}
	if err := w.Close(); err != nil {
		t.Errorf("second Close = %v, want nil", err)
	}
}

// TestStreamingMatchesBytes is a property test: for random inputs built from
// secret fragments and random chunkings, the Writer's output equals Bytes.
func TestStreamingMatchesBytes(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for iter := 0; iter < 300; iter++ {
		secrets := randomSecrets(rng)
		r := New(secrets)
		in := randomInput(rng, secrets, 400)
		want := string(r.Bytes(in))
		sizes := make([]int, 1+rng.IntN(5))
		for i := range sizes {
			sizes[i] = 1 + rng.IntN(40)
		}
		if got := streamed(t, r, in, sizes); got != want {
			t.Fatalf("iteration %d chunk sizes %v:\nstream %q\nbytes  %q", iter, sizes, got, want)
		}
		checkNoPatternBetweenMarkers(t, secrets, in, []byte(want))
	}
}

func randomSecrets(rng *rand.Rand) []Secret {
	const alphabet = "ab/+= %\n\"<"
	secrets := make([]Secret, 1+rng.IntN(4))
	for i := range secrets {
		v := make([]byte, rng.IntN(12))
		for j := range v {
			v[j] = alphabet[rng.IntN(len(alphabet))]
		}
		secrets[i] = Secret{Name: fmt.Sprintf("S%d", i), Value: string(v)}
	}
	return secrets
}

// randomInput mixes secret values, their encodings, fragments of them and
// random bytes, so that matches, near misses and overlaps are common.
func randomInput(rng *rand.Rand, secrets []Secret, size int) []byte {
	var in []byte
	for len(in) < size {
		s := secrets[rng.IntN(len(secrets))].Value
		switch rng.IntN(5) {
		case 0:
			in = append(in, s...)
		case 1:
			in = append(in, base64.StdEncoding.EncodeToString([]byte(s))...)
		case 2:
			if s != "" {
				in = append(in, s[:rng.IntN(len(s))]...)
			}
		case 3:
			in = append(in, url.QueryEscape(s)...)
		default:
			in = append(in, byte(rng.IntN(256)))
		}
	}
	return in
}

var markerRE = regexp.MustCompile(`\[REDACTED:[A-Za-z0-9_.-]*\]`)

// checkNoPatternBetweenMarkers tests the package's invariant: the text
// copied between markers contains no secret value and no encoded form of a
// value of at least MinEncodedLen bytes. The encodings are computed here,
// independently of the package. Splitting on the marker pattern is exact
// because a marker begins with '[' and contains no other '[', so a marker-
// shaped run in copied text cannot straddle a real marker.
func checkNoPatternBetweenMarkers(t testing.TB, secrets []Secret, in, out []byte) {
	t.Helper()
	var forbidden []string
	for _, s := range secrets {
		if s.Value == "" {
			continue
		}
		forbidden = append(forbidden, s.Value)
		if len(s.Value) >= MinEncodedLen {
			b := []byte(s.Value)
			forbidden = append(forbidden,
				base64.StdEncoding.EncodeToString(b), base64.RawStdEncoding.EncodeToString(b),
				base64.URLEncoding.EncodeToString(b), base64.RawURLEncoding.EncodeToString(b),
				url.QueryEscape(s.Value), url.PathEscape(s.Value))
		}
	}
	for _, piece := range markerRE.Split(string(out), -1) {
		for _, f := range forbidden {
			if strings.Contains(piece, f) {
				t.Fatalf("copied text %q contains pattern %q\ninput  %q\noutput %q", piece, f, in, out)
			}
		}
	}
}

func TestReferenceAgreement(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for iter := 0; iter < 500; iter++ {
		secrets := randomSecrets(rng)
		for i := range secrets { // keep below MinEncodedLen: raw patterns only
			if len(secrets[i].Value) >= MinEncodedLen {
				secrets[i].Value = secrets[i].Value[:MinEncodedLen-1]
			}
		}
		in := randomInput(rng, secrets, 200)
		if got, want := Bytes(in, secrets), reference(in, rawPatterns(secrets)); !bytes.Equal(got, want) {
			t.Fatalf("secrets %q input %q:\ngot       %q\nreference %q", secrets, in, got, want)
		}
	}
}
