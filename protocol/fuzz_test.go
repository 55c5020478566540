package protocol

import (
	"bytes"
	"testing"
)

// FuzzCanonicalize checks that canonicalization is a fixed point: the
// canonical form parses, and canonicalizing it again gives the same bytes.
func FuzzCanonicalize(f *testing.F) {
	for _, s := range []string{`{"b":1,"a":[1e21,0.1,-0,"\u00e9"]}`, `"\ud83d\ude00"`, `[{"é":1,"e":2}]`, `1.5e-7`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c1, err := Canonicalize(data)
		if err != nil {
			return
		}
		c2, err := Canonicalize(c1)
		if err != nil {
			t.Fatalf("canonical output does not parse: %v\ninput %q\noutput %q", err, data, c1)
		}
		if !bytes.Equal(c1, c2) {
			t.Fatalf("not a fixed point\n1: %q\n2: %q", c1, c2)
		}
	})
}

// FuzzParseBundle checks that decoding and verifying arbitrary bundle bytes
// never panics, and that whatever decodes re-encodes to something that
// decodes to the same bytes again.
func FuzzParseBundle(f *testing.F) {
	f.Add([]byte(`{"version":"warrant.bundle.v1"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := ParseBundle(data)
		if err != nil {
			return
		}
		_ = VerifyBundle(b, nil)
		out, err := Canonical(b)
		if err != nil {
			return // e.g. an event body that cannot be canonicalized
		}
		b2, err := ParseBundle(out)
		if err != nil {
			t.Fatalf("re-encoded bundle does not parse: %v", err)
		}
		out2, err := Canonical(b2)
		if err != nil || !bytes.Equal(out, out2) {
			t.Fatalf("re-encoding is not stable: %v", err)
		}
	})
}

// FuzzParseSnapshot checks that snapshot parsing never panics, accepts only
// safe paths and re-encodes to identical bytes.
func FuzzParseSnapshot(f *testing.F) {
	f.Add([]byte(SnapshotVersion + "\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := ParseSnapshot(data)
		if err != nil {
			return
		}
		for _, e := range s.Entries {
			if err := ValidatePath(e.Path); err != nil {
				t.Fatalf("unsafe path accepted: %v", err)
			}
		}
		out, err := s.Encode()
		if err != nil || !bytes.Equal(out, data) {
			t.Fatalf("snapshot does not re-encode to its input: %v", err)
		}
	})
}
