package redact

import (
	"bytes"
	"testing"
)

// FuzzWriter checks, for arbitrary data, secrets and chunking, that
//  1. the streaming Writer produces exactly Bytes' output,
//  2. the Writer never holds back more than MaxHold bytes, and
//  3. the text copied between markers contains no secret value or encoded
//     form (see checkNoPatternBetweenMarkers): every occurrence of a
//     pattern is replaced or begins inside a replaced occurrence.
//
// "The output never contains a secret value" is deliberately not the
// invariant: a value that overlaps marker text ("D]" after a redacted
// secret and a literal "D") or another secret can legitimately reappear
// across a marker boundary; the package doc explains why.
func FuzzWriter(f *testing.F) {
	f.Add([]byte("token=abc123 and abc"), "abc123", "abc", "zz", []byte{3, 1, 7})
	f.Add([]byte("YWJjZGVmZ2hp and abcdefghi"), "abcdefghi", "", "ghi", []byte{1})
	f.Add([]byte{0, 1, 2, 0, 1, 2, 255}, "\x00\x01", "\x01\x02\xff", "\x02", []byte{2, 2})
	f.Add([]byte("aaaaaaaaaaaaaaab"), "aaab", "aa", "aaaaaaaaaaaaaaab", []byte{5})
	f.Fuzz(func(t *testing.T, data []byte, v1, v2, v3 string, chunks []byte) {
		secrets := []Secret{{"ONE", v1}, {"TWO", v2}, {"THREE", v3}}
		r := New(secrets)
		want := r.Bytes(data)
		var out bytes.Buffer
		w := r.NewWriter(&out)
		for i, k := 0, 0; i < len(data); k++ {
			n := 1
			if len(chunks) > 0 {
				n = 1 + int(chunks[k%len(chunks)])
			}
			n = min(n, len(data)-i)
			if _, err := w.Write(data[i : i+n]); err != nil {
				t.Fatal(err)
			}
			if w.Buffered() > r.MaxHold() {
				t.Fatalf("held %d > MaxHold %d", w.Buffered(), r.MaxHold())
			}
			i += n
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(out.Bytes(), want) {
			t.Fatalf("stream %q != Bytes %q", out.Bytes(), want)
		}
		checkNoPatternBetweenMarkers(t, secrets, data, want)
	})
}
