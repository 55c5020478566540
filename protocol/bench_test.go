package protocol

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// timed runs op b.N times and reports the p50 and p95 of single runs
// besides Go's mean.
func timed(b *testing.B, op func()) {
	b.Helper()
	samples := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		op()
		samples = append(samples, time.Since(start))
	}
	b.StopTimer()
	slices.Sort(samples)
	pct := func(p float64) float64 { return float64(samples[int(float64(len(samples)-1)*p)].Nanoseconds()) }
	b.ReportMetric(pct(0.50), "p50-ns")
	b.ReportMetric(pct(0.95), "p95-ns")
}

func vectorBundleBytes(b *testing.B) []byte {
	data, err := os.ReadFile(filepath.Join(vectorDir, "bundle.json"))
	if err != nil {
		b.Fatal(err)
	}
	v, err := Parse(data)
	if err != nil {
		b.Fatal(err)
	}
	inner, _ := v.(Object).Get("bundle")
	out, err := AppendCanonical(nil, inner)
	if err != nil {
		b.Fatal(err)
	}
	return out
}

// BenchmarkVerifyVectorBundle parses and verifies the shared 13-event
// vector bundle from its bytes, against a pinned plane key.
func BenchmarkVerifyVectorBundle(b *testing.B) {
	data := vectorBundleBytes(b)
	first, err := ParseBundle(data)
	if err != nil {
		b.Fatal(err)
	}
	planeKey, _ := ParsePublicKeyPEM(first.Keys.PlanePublicKeyPEM)
	trust := NewTrustStore()
	trust.Add(SignerPlane, planeKey)
	b.SetBytes(int64(len(data)))
	timed(b, func() {
		bun, err := ParseBundle(data)
		if err != nil {
			b.Fatal(err)
		}
		if !VerifyBundle(bun, trust).Trusted() {
			b.Fatal("not trusted")
		}
	})
}

// BenchmarkVerifyBundle1000 parses and verifies a 1,000-event bundle.
func BenchmarkVerifyBundle1000(b *testing.B) {
	bun, plane := buildBundle(b, 1000)
	data, err := Canonical(bun)
	if err != nil {
		b.Fatal(err)
	}
	trust := NewTrustStore()
	trust.Add(SignerPlane, plane.Public())
	b.SetBytes(int64(len(data)))
	timed(b, func() {
		parsed, err := ParseBundle(data)
		if err != nil {
			b.Fatal(err)
		}
		if !VerifyBundle(parsed, trust).Trusted() {
			b.Fatal("not trusted")
		}
	})
}

// contract10KB returns the canonical bytes of a signed contract of about
// 10 KB (a long prompt and a manifest listing untracked files).
func contract10KB(b *testing.B) []byte {
	bun, _ := buildBundle(b, 6)
	c := bun.Contract
	c.received = nil
	c.Task.Prompt = strings.Repeat("Refactor the parser and keep every test green. ", 60)
	for i := range 50 {
		c.Workspace.UntrackedFiles = append(c.Workspace.UntrackedFiles, ManifestFile{Path: fmt.Sprintf("docs/notes-%03d.md", i), Hash: HashBytes([]byte{byte(i)}), Bytes: int64(i * 100)})
	}
	out, err := Canonical(c)
	if err != nil {
		b.Fatal(err)
	}
	if len(out) < 9<<10 || len(out) > 12<<10 {
		b.Fatalf("contract is %d bytes, want about 10 KB", len(out))
	}
	return out
}

// BenchmarkCanonicalHashContract10KB canonicalizes and hashes a 10 KB
// contract from its JSON bytes.
func BenchmarkCanonicalHashContract10KB(b *testing.B) {
	data := contract10KB(b)
	b.SetBytes(int64(len(data)))
	timed(b, func() {
		out, err := Canonicalize(data)
		if err != nil {
			b.Fatal(err)
		}
		_ = HashBytes(out)
	})
}

// BenchmarkContractHash10KB hashes a decoded 10 KB contract (unsigned
// form), as the plane and runner do.
func BenchmarkContractHash10KB(b *testing.B) {
	c, err := ParseContract(contract10KB(b))
	if err != nil {
		b.Fatal(err)
	}
	timed(b, func() {
		if _, err := c.Hash(); err != nil {
			b.Fatal(err)
		}
	})
}
