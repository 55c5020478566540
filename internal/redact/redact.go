// Package redact owns the removal of released secret values from bytes the
// runner uploads (the session log and the diff). Every occurrence of a
// secret's value, and of its common encodings, is replaced by the marker
// "[REDACTED:NAME]". It works on whole buffers (Bytes) and on streams
// (Writer), and both give identical output for any chunking of the input.
//
// # Matching rule
//
// The input is scanned left to right. At each position the longest pattern
// that starts there is replaced and the scan resumes after it; if none
// starts there, the byte is copied. Patterns are, for each secret, its raw
// value and (for values of at least MinEncodedLen bytes) its standard and
// URL-safe base64 forms, padded and unpadded, its URL query and path escapes
// and its JSON string escape, whenever these differ from the raw value. When
// two secrets share a pattern, the first secret in the list names the marker.
//
// # What is guaranteed, and what is not
//
// No pattern starts at a copied byte: every occurrence of a pattern in the
// input either is replaced or begins inside a replaced occurrence. So the
// copied text between two markers never contains a pattern. Two honest
// limits follow. When secrets overlap in the input ("abcd" with secrets
// "abc" and "bcd"), the bytes of the later secret that lie beyond the
// replaced one ("d") stay visible. And a value can reappear across a marker
// boundary if it shares bytes with the marker text itself (a value such as
// "]x" after a redacted secret followed by "x"); marker names are limited to
// [A-Za-z0-9_.-] so the marker frame is the only punctuation a marker adds.
//
// Base64 catches a value encoded on its own (or at a 3-byte-aligned offset
// in a larger encoding); a value encoded at another offset inside a larger
// base64 text is not recognised. Encodings other than those listed (hex,
// gzip, a value split by the program that prints it) are not recognised.
//
// Values shorter than 4 bytes are still redacted: over-redaction of a short
// value damages the log's readability, never its secrecy, and a secret that
// short is already weak. Empty values are ignored.
package redact

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/url"
	"slices"
)

// MinEncodedLen is the shortest value whose encoded forms are also redacted.
// The encodings of shorter values (base64 of "ab" is "YWI") occur by chance
// in ordinary text too often to be worth replacing.
const MinEncodedLen = 8

// Secret is a named secret value to redact.
type Secret struct {
	Name  string
	Value string
}

// ErrClosed is returned by Writer.Write after Close.
var ErrClosed = errors.New("redact: write after close")

type pattern struct {
	value  []byte
	marker []byte
}

// Redactor holds a compiled set of patterns. It is safe for concurrent use;
// build it once with New and use it for many buffers or streams.
type Redactor struct {
	// byFirst lists, for each byte value, the patterns starting with it,
	// longest first.
	byFirst [256][]*pattern
	// starts[c] reports whether any pattern starts with byte c.
	starts [256]bool
	// pairs is a bitset of the first two bytes of every pattern longer than
	// one byte, and single[c] reports a one-byte pattern c. Together they
	// let the scan skip most bytes that merely share a first byte.
	pairs  [256][4]uint64
	single [256]bool
	maxLen int
}

// New compiles the patterns for secrets.
func New(secrets []Secret) *Redactor {
	r := &Redactor{}
	seen := make(map[string]bool)
	var all []*pattern
	add := func(value string, marker []byte) {
		if value == "" || seen[value] {
			return
		}
		seen[value] = true
		all = append(all, &pattern{value: []byte(value), marker: marker})
	}
	markers := make([][]byte, len(secrets))
	for i, s := range secrets {
		markers[i] = Marker(s.Name)
	}
	// Raw values first, so that a raw value names the marker even when it
	// equals another secret's encoding.
	for i, s := range secrets {
		add(s.Value, markers[i])
	}
	for i, s := range secrets {
		if len(s.Value) < MinEncodedLen {
			continue
		}
		for _, enc := range encodings(s.Value) {
			add(enc, markers[i])
		}
	}
	for _, p := range all {
		c := p.value[0]
		r.byFirst[c] = append(r.byFirst[c], p)
		r.starts[c] = true
		if len(p.value) == 1 {
			r.single[c] = true
		} else {
			d := p.value[1]
			r.pairs[c][d>>6] |= 1 << (d & 63)
		}
		r.maxLen = max(r.maxLen, len(p.value))
	}
	for c := range r.byFirst {
		slices.SortStableFunc(r.byFirst[c], func(a, b *pattern) int { return len(b.value) - len(a.value) })
	}
	return r
}

// encodings returns the encoded forms of value that are redacted alongside
// it (duplicates and forms equal to value are dropped by the caller).
func encodings(value string) []string {
	b := []byte(value)
	forms := []string{
		base64.StdEncoding.EncodeToString(b),
		base64.RawStdEncoding.EncodeToString(b),
		base64.URLEncoding.EncodeToString(b),
		base64.RawURLEncoding.EncodeToString(b),
		url.QueryEscape(value),
		url.PathEscape(value),
	}
	for _, escapeHTML := range []bool{false, true} {
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(escapeHTML)
		if err := enc.Encode(value); err == nil {
			// Encode writes "…"\n; keep what lies between the quotes.
			quoted := bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
			forms = append(forms, string(quoted[1:len(quoted)-1]))
		}
	}
	return forms
}

// Marker returns the text that replaces a secret named name. Bytes of the
// name outside [A-Za-z0-9_.-] become '_', so a marker is always
// "[REDACTED:" + name + "]" with no other brackets.
func Marker(name string) []byte {
	m := make([]byte, 0, len("[REDACTED:]")+len(name))
	m = append(m, "[REDACTED:"...)
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '_', c == '.', c == '-':
			m = append(m, c)
		default:
			m = append(m, '_')
		}
	}
	return append(m, ']')
}

// MaxHold is the most bytes a Writer may hold back: the longest pattern
// minus one (0 when there is nothing to redact).
func (r *Redactor) MaxHold() int { return max(r.maxLen-1, 0) }

// Bytes returns a redacted copy of b.
func (r *Redactor) Bytes(b []byte) []byte {
	out, _ := r.appendRedacted(make([]byte, 0, len(b)), b, true)
	return out
}

// appendRedacted appends the redaction of src to dst. Unless final, it stops
// at the first position where a pattern longer than the rest of src could
// still start, and reports how many bytes of src it consumed; the caller
// keeps src[consumed:] for when more input arrives. The output for the
// consumed bytes is exactly what Bytes gives for them in any longer input,
// because a decision at a position is taken only when no later byte can
// change it.
func (r *Redactor) appendRedacted(dst, src []byte, final bool) ([]byte, int) {
	i, n := 0, len(src)
	for i < n {
		// Copy the run of bytes where no pattern can start.
		j := r.skip(src, i)
		dst = append(dst, src[i:j]...)
		i = j
		if i == n {
			break
		}
		rest := src[i:]
		var match *pattern
		for _, p := range r.byFirst[src[i]] {
			if len(p.value) <= len(rest) {
				if bytes.HasPrefix(rest, p.value) {
					match = p
					break
				}
			} else if !final && bytes.HasPrefix(p.value, rest) {
				// A longer pattern may still start here; wait for input.
				return dst, i
			}
		}
		if match != nil {
			dst = append(dst, match.marker...)
			i += len(match.value)
		} else {
			dst = append(dst, src[i])
			i++
		}
	}
	return dst, n
}

// skip returns the first position at or after i where a pattern could
// start, judging by the first two bytes (one when src ends there), or
// len(src).
func (r *Redactor) skip(src []byte, i int) int {
	starts, single, pairs := &r.starts, &r.single, &r.pairs
	for k, c := range src[i:] {
		if !starts[c] {
			continue
		}
		j := i + k
		if single[c] || j+1 == len(src) {
			return j
		}
		d := src[j+1]
		if pairs[c][d>>6]&(1<<(d&63)) != 0 {
			return j
		}
	}
	return len(src)
}

// Bytes returns a copy of b with every secret value (and encoded form)
// replaced by its marker. To redact many buffers, compile once with New.
func Bytes(b []byte, secrets []Secret) []byte {
	return New(secrets).Bytes(b)
}

// Writer redacts a stream. Bytes that might begin a secret whose end has
// not arrived yet are held back (never more than MaxHold bytes) until more
// input decides them or Close flushes them. Writer is not safe for
// concurrent use.
type Writer struct {
	r       *Redactor
	w       io.Writer
	pending []byte // held-back input, at most MaxHold bytes between calls
	out     []byte // reused output buffer
	err     error  // sticky: first write error, or ErrClosed
}

// NewWriter returns a Writer that writes the redaction of its input to w.
func NewWriter(w io.Writer, secrets []Secret) *Writer {
	return New(secrets).NewWriter(w)
}

// NewWriter returns a Writer that writes the redaction of its input to w.
func (r *Redactor) NewWriter(w io.Writer) *Writer {
	return &Writer{r: r, w: w}
}

// Write redacts p and writes what can be decided to the underlying writer.
// It returns len(p) unless the underlying writer failed; after a failure
// every call returns that error.
func (w *Writer) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	w.pending = append(w.pending, p...)
	if err := w.emit(false); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Buffered reports how many input bytes are held back.
func (w *Writer) Buffered() int { return len(w.pending) }

// Close flushes the held-back bytes, redacted, and ends the stream. It does
// not close the underlying writer. Further writes return ErrClosed.
func (w *Writer) Close() error {
	if w.err != nil {
		if errors.Is(w.err, ErrClosed) {
			return nil
		}
		return w.err
	}
	if err := w.emit(true); err != nil {
		return err
	}
	w.err = ErrClosed
	w.pending, w.out = nil, nil
	return nil
}

func (w *Writer) emit(final bool) error {
	var consumed int
	w.out, consumed = w.r.appendRedacted(w.out[:0], w.pending, final)
	w.pending = w.pending[:copy(w.pending, w.pending[consumed:])]
	if len(w.out) == 0 {
		return nil
	}
	if _, err := w.w.Write(w.out); err != nil {
		w.err = err
		return err
	}
	return nil
}
