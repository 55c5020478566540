package redact

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"testing"
)

// benchInput is 1 MiB of log-like text with a secret every ~4 KiB.
func benchInput(secrets []Secret) []byte {
	rng := rand.New(rand.NewPCG(7, 8))
	words := []string{"running ", "tests ", "ok ", "GET ", "/api/v1/items ", "200 ", "\n", "ghp_ ", "sk-", "error: ", "0x1f ", "Bearer "}
	var b bytes.Buffer
	for b.Len() < 1<<20 {
		if rng.IntN(500) == 0 {
			b.WriteString(secrets[rng.IntN(len(secrets))].Value)
			continue
		}
		b.WriteString(words[rng.IntN(len(words))])
	}
	return b.Bytes()
}

func benchSecrets() []Secret {
	s := make([]Secret, 10)
	for i := range s {
		s[i] = Secret{Name: fmt.Sprintf("SECRET_%d", i), Value: fmt.Sprintf("sk-%02d-9f8e7d6c5b4a39281706f5e4d3c2b1a0", i)}
	}
	return s
}

func BenchmarkBytes10Secrets(b *testing.B) {
	secrets := benchSecrets()
	r := New(secrets)
	in := benchInput(secrets)
	b.SetBytes(int64(len(in)))
	for b.Loop() {
		r.Bytes(in)
	}
}

func BenchmarkWriter10Secrets(b *testing.B) {
	secrets := benchSecrets()
	r := New(secrets)
	in := benchInput(secrets)
	b.SetBytes(int64(len(in)))
	for b.Loop() {
		w := r.NewWriter(io.Discard)
		for i := 0; i < len(in); i += 4096 {
			w.Write(in[i:min(i+4096, len(in))])
		}
		w.Close()
	}
}
