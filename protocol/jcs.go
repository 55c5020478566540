package protocol

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

// Limits on JSON input. Protocol objects are small; a bundle of thousands of
// events stays far below MaxDocumentBytes.
const (
	// MaxDocumentBytes caps the size of any JSON text the parser accepts.
	MaxDocumentBytes = 64 << 20
	// MaxDepth caps the nesting depth of arrays and objects.
	MaxDepth = 64
)

// Sentinel errors for the ways a JSON text can fail strict parsing. A
// *ParseError wraps exactly one of them.
var (
	ErrSyntax        = errors.New("invalid JSON syntax")
	ErrDuplicateKey  = errors.New("duplicate object member name")
	ErrInvalidUTF8   = errors.New("invalid UTF-8")
	ErrLoneSurrogate = errors.New("lone UTF-16 surrogate")
	ErrNonFinite     = errors.New("non-finite number")
	ErrTooDeep       = errors.New("nesting too deep")
	ErrTooLarge      = errors.New("document too large")
)

// ParseError reports where and why a JSON text was rejected.
type ParseError struct {
	Offset int   // byte offset in the input
	Err    error // one of the sentinel errors above, possibly wrapped with detail
}

func (e *ParseError) Error() string {
	return fmt.Sprintf("json: at byte %d: %v", e.Offset, e.Err)
}

func (e *ParseError) Unwrap() error { return e.Err }

// Parse strictly parses one JSON text (RFC 8259 restricted to I-JSON,
// RFC 7493) into a tree of nil, bool, float64, string, []any and Object. Duplicate member names, invalid UTF-8, lone surrogates,
// numbers that overflow a double, nesting deeper than MaxDepth and input
// larger than MaxDocumentBytes are errors. Numbers are IEEE-754 doubles, as
// in JavaScript, so integers beyond 2^53 lose precision exactly as
// JSON.parse does.
func Parse(data []byte) (any, error) {
	if len(data) > MaxDocumentBytes {
		return nil, &ParseError{Offset: MaxDocumentBytes, Err: fmt.Errorf("%w: %d bytes exceeds the %d byte limit", ErrTooLarge, len(data), MaxDocumentBytes)}
	}
	p := parser{data: data}
	p.skipSpace()
	v, err := p.value(0)
	if err != nil {
		return nil, err
	}
	p.skipSpace()
	if p.pos != len(p.data) {
		return nil, p.fail(fmt.Errorf("%w: unexpected data after the top-level value", ErrSyntax))
	}
	return v, nil
}

// Canonicalize parses a JSON text strictly and returns its RFC 8785
// canonical form.
func Canonicalize(data []byte) ([]byte, error) {
	v, err := Parse(data)
	if err != nil {
		return nil, err
	}
	return AppendCanonical(make([]byte, 0, len(data)), v)
}

type parser struct {
	data    []byte
	pos     int
	members []Member // scratch stack of members of the objects being parsed
	values  []any    // scratch stack of elements of the arrays being parsed
	keys    map[string]string
}

// key parses a member name, sharing one string per distinct short name:
// protocol objects repeat the same few names many times.
func (p *parser) key() (string, error) {
	d := p.data
	start := p.pos + 1
	end := start
	for end < len(d) && end-start <= 32 && !stringStop[d[end]] && d[end] < utf8.RuneSelf {
		end++
	}
	if end < len(d) && d[end] == '"' && end-start <= 32 {
		if k, ok := p.keys[string(d[start:end])]; ok {
			p.pos = end + 1
			return k, nil
		}
		k := string(d[start:end])
		if p.keys == nil {
			p.keys = make(map[string]string, 32)
		}
		if len(p.keys) < 1024 {
			p.keys[k] = k
		}
		p.pos = end + 1
		return k, nil
	}
	return p.string()
}

func (p *parser) fail(err error) error { return &ParseError{Offset: p.pos, Err: err} }

func (p *parser) skipSpace() {
	for p.pos < len(p.data) {
		switch p.data[p.pos] {
		case ' ', '\t', '\n', '\r':
			p.pos++
		default:
			return
		}
	}
}

func (p *parser) value(depth int) (any, error) {
	if p.pos >= len(p.data) {
		return nil, p.fail(fmt.Errorf("%w: unexpected end of input", ErrSyntax))
	}
	switch c := p.data[p.pos]; {
	case c == '{':
		return p.object(depth + 1)
	case c == '[':
		return p.array(depth + 1)
	case c == '"':
		return p.string()
	case c == '-' || (c >= '0' && c <= '9'):
		return p.number()
	case c == 't':
		return true, p.literal("true")
	case c == 'f':
		return false, p.literal("false")
	case c == 'n':
		return nil, p.literal("null")
	default:
		return nil, p.fail(fmt.Errorf("%w: unexpected character %q", ErrSyntax, c))
	}
}

func (p *parser) literal(word string) error {
	if len(p.data)-p.pos < len(word) || string(p.data[p.pos:p.pos+len(word)]) != word {
		return p.fail(fmt.Errorf("%w: invalid literal", ErrSyntax))
	}
	p.pos += len(word)
	return nil
}

func (p *parser) object(depth int) (any, error) {
	if depth > MaxDepth {
		return nil, p.fail(fmt.Errorf("%w: more than %d levels", ErrTooDeep, MaxDepth))
	}
	objAt := p.pos
	p.pos++ // '{'
	p.skipSpace()
	if p.pos < len(p.data) && p.data[p.pos] == '}' {
		p.pos++
		return Object{}, nil
	}
	mark := len(p.members)
	defer func() { p.members = p.members[:mark] }()
	for {
		p.skipSpace()
		if p.pos >= len(p.data) || p.data[p.pos] != '"' {
			return nil, p.fail(fmt.Errorf("%w: expected a member name", ErrSyntax))
		}
		key, err := p.key()
		if err != nil {
			return nil, err
		}
		p.skipSpace()
		if p.pos >= len(p.data) || p.data[p.pos] != ':' {
			return nil, p.fail(fmt.Errorf("%w: expected ':' after a member name", ErrSyntax))
		}
		p.pos++
		p.skipSpace()
		v, err := p.value(depth)
		if err != nil {
			return nil, err
		}
		p.members = append(p.members, Member{Key: key, Value: v})
		p.skipSpace()
		if p.pos >= len(p.data) {
			return nil, p.fail(fmt.Errorf("%w: unterminated object", ErrSyntax))
		}
		switch p.data[p.pos] {
		case ',':
			p.pos++
		case '}':
			p.pos++
			obj := make(Object, len(p.members)-mark)
			copy(obj, p.members[mark:])
			if dup, ok := sortMembers(obj); !ok {
				return nil, &ParseError{Offset: objAt, Err: fmt.Errorf("%w: %q in the object starting here", ErrDuplicateKey, dup)}
			}
			return obj, nil
		default:
			return nil, p.fail(fmt.Errorf("%w: expected ',' or '}' in object", ErrSyntax))
		}
	}
}

func (p *parser) array(depth int) (any, error) {
	if depth > MaxDepth {
		return nil, p.fail(fmt.Errorf("%w: more than %d levels", ErrTooDeep, MaxDepth))
	}
	p.pos++ // '['
	p.skipSpace()
	if p.pos < len(p.data) && p.data[p.pos] == ']' {
		p.pos++
		return []any{}, nil
	}
	mark := len(p.values)
	defer func() { p.values = p.values[:mark] }()
	for {
		p.skipSpace()
		v, err := p.value(depth)
		if err != nil {
			return nil, err
		}
		p.values = append(p.values, v)
		p.skipSpace()
		if p.pos >= len(p.data) {
			return nil, p.fail(fmt.Errorf("%w: unterminated array", ErrSyntax))
		}
		switch p.data[p.pos] {
		case ',':
			p.pos++
		case ']':
			p.pos++
			arr := make([]any, len(p.values)-mark)
			copy(arr, p.values[mark:])
			return arr, nil
		default:
			return nil, p.fail(fmt.Errorf("%w: expected ',' or ']' in array", ErrSyntax))
		}
	}
}

func (p *parser) number() (any, error) {
	start := p.pos
	d := p.data
	i := p.pos
	if i < len(d) && d[i] == '-' {
		i++
	}
	switch {
	case i < len(d) && d[i] == '0':
		i++
	case i < len(d) && d[i] >= '1' && d[i] <= '9':
		for i < len(d) && d[i] >= '0' && d[i] <= '9' {
			i++
		}
	default:
		p.pos = i
		return nil, p.fail(fmt.Errorf("%w: invalid number", ErrSyntax))
	}
	if i < len(d) && d[i] == '.' {
		i++
		digits := i
		for i < len(d) && d[i] >= '0' && d[i] <= '9' {
			i++
		}
		if i == digits {
			p.pos = i
			return nil, p.fail(fmt.Errorf("%w: a fraction needs digits", ErrSyntax))
		}
	}
	if i < len(d) && (d[i] == 'e' || d[i] == 'E') {
		i++
		if i < len(d) && (d[i] == '+' || d[i] == '-') {
			i++
		}
		digits := i
		for i < len(d) && d[i] >= '0' && d[i] <= '9' {
			i++
		}
		if i == digits {
			p.pos = i
			return nil, p.fail(fmt.Errorf("%w: an exponent needs digits", ErrSyntax))
		}
	}
	p.pos = i
	f, err := strconv.ParseFloat(string(d[start:i]), 64)
	if err != nil && !errors.Is(err, strconv.ErrRange) {
		return nil, &ParseError{Offset: start, Err: fmt.Errorf("%w: invalid number", ErrSyntax)}
	}
	if math.IsInf(f, 0) || math.IsNaN(f) {
		return nil, &ParseError{Offset: start, Err: fmt.Errorf("%w: %s is not representable as a double", ErrNonFinite, truncate(string(d[start:i]), 32))}
	}
	return f, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// string parses a JSON string starting at the opening quote.
func (p *parser) string() (string, error) {
	d := p.data
	p.pos++ // opening quote
	start := p.pos
	// Fast path: no escapes.
	i := start + plainPrefix(d[start:])
	for i < len(d) && !stringStop[d[i]] {
		i++
	}
	if i < len(d) && d[i] == '"' {
		if !utf8.Valid(d[start:i]) {
			p.pos = start
			return "", p.fail(ErrInvalidUTF8)
		}
		p.pos = i + 1
		return string(d[start:i]), nil
	}
	i = start
	buf := make([]byte, 0, i-start+16)
	buf = append(buf, d[start:i]...)
	for {
		if i >= len(d) {
			p.pos = i
			return "", p.fail(fmt.Errorf("%w: unterminated string", ErrSyntax))
		}
		c := d[i]
		switch {
		case c == '"':
			p.pos = i + 1
			return string(buf), nil
		case c < 0x20:
			p.pos = i
			return "", p.fail(fmt.Errorf("%w: control character U+%04X must be escaped in a string", ErrSyntax, c))
		case c < 0x80 && c != '\\':
			buf = append(buf, c)
			i++
		case c >= 0x80:
			r, size := utf8.DecodeRune(d[i:])
			if r == utf8.RuneError && size <= 1 {
				p.pos = i
				return "", p.fail(ErrInvalidUTF8)
			}
			buf = append(buf, d[i:i+size]...)
			i += size
		default: // backslash
			if i+1 >= len(d) {
				p.pos = i
				return "", p.fail(fmt.Errorf("%w: unterminated escape", ErrSyntax))
			}
			esc := d[i+1]
			i += 2
			switch esc {
			case '"', '\\', '/':
				buf = append(buf, esc)
			case 'b':
				buf = append(buf, '\b')
			case 'f':
				buf = append(buf, '\f')
			case 'n':
				buf = append(buf, '\n')
			case 'r':
				buf = append(buf, '\r')
			case 't':
				buf = append(buf, '\t')
			case 'u':
				p.pos = i - 2
				u, ok := hex4(d, i)
				if !ok {
					return "", p.fail(fmt.Errorf("%w: invalid \\u escape", ErrSyntax))
				}
				i += 4
				r := rune(u)
				switch {
				case utf16.IsSurrogate(r) && r < 0xDC00: // high surrogate: a low one must follow
					lo, ok := uint16(0), false
					if i+6 <= len(d) && d[i] == '\\' && d[i+1] == 'u' {
						lo, ok = hex4(d, i+2)
					}
					if !ok || lo < 0xDC00 || lo > 0xDFFF {
						return "", p.fail(fmt.Errorf("%w: \\u%04x is not followed by a low surrogate", ErrLoneSurrogate, u))
					}
					i += 6
					r = utf16.DecodeRune(r, rune(lo))
				case utf16.IsSurrogate(r):
					return "", p.fail(fmt.Errorf("%w: \\u%04x has no preceding high surrogate", ErrLoneSurrogate, u))
				}
				buf = utf8.AppendRune(buf, r)
			default:
				p.pos = i - 2
				return "", p.fail(fmt.Errorf("%w: invalid escape \\%c", ErrSyntax, esc))
			}
		}
	}
}

func hex4(d []byte, i int) (uint16, bool) {
	if i+4 > len(d) {
		return 0, false
	}
	var v uint16
	for _, c := range d[i : i+4] {
		v <<= 4
		switch {
		case c >= '0' && c <= '9':
			v |= uint16(c - '0')
		case c >= 'a' && c <= 'f':
			v |= uint16(c - 'a' + 10)
		case c >= 'A' && c <= 'F':
			v |= uint16(c - 'A' + 10)
		default:
			return 0, false
		}
	}
	return v, true
}

// AppendCanonical appends the RFC 8785 canonical form of a parsed JSON tree
// (as produced by Parse) to dst. Values of other Go types are an error; use
// Canonical for Go structs.
func AppendCanonical(dst []byte, v any) ([]byte, error) {
	switch v := v.(type) {
	case nil:
		return append(dst, "null"...), nil
	case bool:
		if v {
			return append(dst, "true"...), nil
		}
		return append(dst, "false"...), nil
	case float64:
		return appendNumber(dst, v)
	case string:
		return appendString(dst, v)
	case []any:
		dst = append(dst, '[')
		for i, e := range v {
			if i > 0 {
				dst = append(dst, ',')
			}
			var err error
			if dst, err = AppendCanonical(dst, e); err != nil {
				return nil, err
			}
		}
		return append(dst, ']'), nil
	case Object:
		return appendObject(dst, v, "")
	case map[string]any:
		return appendObject(dst, objectFromMap(v), "")
	default:
		return nil, fmt.Errorf("canonical JSON: unsupported value of type %T", v)
	}
}

// appendObject writes an object (its members already in canonical order),
// leaving out the member named skip (when skip is not empty).
func appendObject(dst []byte, obj Object, skip string) ([]byte, error) {
	dst = append(dst, '{')
	first := true
	for _, m := range obj {
		if skip != "" && m.Key == skip {
			continue
		}
		if !first {
			dst = append(dst, ',')
		}
		first = false
		var err error
		if dst, err = appendString(dst, m.Key); err != nil {
			return nil, err
		}
		dst = append(dst, ':')
		if dst, err = AppendCanonical(dst, m.Value); err != nil {
			return nil, err
		}
	}
	return append(dst, '}'), nil
}

// compareUTF16 orders two valid UTF-8 strings as JavaScript orders strings:
// by their UTF-16 code units. This differs from byte (code point) order only
// between supplementary characters (encoded as surrogates D800–DFFF) and BMP
// characters in E000–FFFF.
func compareUTF16(a, b string) int {
	i, j := 0, 0
	for i < len(a) && j < len(b) {
		ca, cb := a[i], b[j]
		if ca < utf8.RuneSelf && cb < utf8.RuneSelf {
			if ca != cb {
				return int(ca) - int(cb)
			}
			i++
			j++
			continue
		}
		ra, na := utf8.DecodeRuneInString(a[i:])
		rb, nb := utf8.DecodeRuneInString(b[j:])
		if ra != rb {
			return int(utf16Lead(ra)) - int(utf16Lead(rb))
		}
		i += na
		j += nb
	}
	return (len(a) - i) - (len(b) - j)
}

// utf16Lead returns a rank that orders runes by their UTF-16 encoding: a
// supplementary rune ranks by its high surrogate, then by code point.
func utf16Lead(r rune) rune {
	if r < 0x10000 {
		if r >= 0xE000 {
			return r + 0x200000 // above every supplementary rune (which UTF-16 leads with D800–DBFF)
		}
		return r
	}
	return r // 0x10000..0x10FFFF: after every BMP rune below E000, before E000..FFFF
}

// stringStop marks the bytes that end the parser's fast path through a
// string: the closing quote, a backslash, a control character.
var stringStop = func() (t [256]bool) {
	for c := range 0x20 {
		t[c] = true
	}
	t['"'], t['\\'] = true, true
	return t
}()

// Eight bytes at a time: a word has a byte that stops a string scan when
// it has a byte below 0x20, a '"' or a '\\'.
const (
	lsb = 0x0101010101010101
	msb = 0x8080808080808080
)

func stopsWord(x uint64) bool {
	hasLess := (x - 0x20*lsb) & ^x & msb
	q := x ^ ('"' * lsb)
	hasQuote := (q - lsb) & ^q & msb
	b := x ^ ('\\' * lsb)
	hasBackslash := (b - lsb) & ^b & msb
	return hasLess|hasQuote|hasBackslash != 0
}

// plainPrefix returns the length of a prefix of d, a multiple of 8, whose
// bytes need no attention (no quote, backslash or control character).
func plainPrefix(d []byte) int {
	i := 0
	for ; i+8 <= len(d); i += 8 {
		if stopsWord(binary.LittleEndian.Uint64(d[i:])) {
			break
		}
	}
	return i
}

func plainPrefixString(s string) int {
	i := 0
	for ; i+8 <= len(s); i += 8 {
		x := uint64(s[i]) | uint64(s[i+1])<<8 | uint64(s[i+2])<<16 | uint64(s[i+3])<<24 |
			uint64(s[i+4])<<32 | uint64(s[i+5])<<40 | uint64(s[i+6])<<48 | uint64(s[i+7])<<56
		if stopsWord(x) {
			break
		}
	}
	return i
}

func appendString(dst []byte, s string) ([]byte, error) {
	if !utf8.ValidString(s) {
		return nil, fmt.Errorf("canonical JSON: %w in string", ErrInvalidUTF8)
	}
	dst = append(dst, '"')
	start := 0
	for i := plainPrefixString(s); i < len(s); i++ {
		c := s[i]
		if !stringStop[c] {
			continue
		}
		dst = append(dst, s[start:i]...)
		switch c {
		case '"':
			dst = append(dst, '\\', '"')
		case '\\':
			dst = append(dst, '\\', '\\')
		case '\b':
			dst = append(dst, '\\', 'b')
		case '\f':
			dst = append(dst, '\\', 'f')
		case '\n':
			dst = append(dst, '\\', 'n')
		case '\r':
			dst = append(dst, '\\', 'r')
		case '\t':
			dst = append(dst, '\\', 't')
		default:
			const hexDigits = "0123456789abcdef"
			dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
		}
		start = i + 1
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"'), nil
}

// appendNumber writes f as ECMAScript's Number::toString does.
func appendNumber(dst []byte, f float64) ([]byte, error) {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return nil, fmt.Errorf("canonical JSON: %w: %v", ErrNonFinite, f)
	}
	if f == 0 {
		return append(dst, '0'), nil // also -0
	}
	if f < 0 {
		dst = append(dst, '-')
		f = -f
	}
	// Shortest round-trip digits and the decimal exponent: "d.dddde±XX".
	var scratch [32]byte
	e := strconv.AppendFloat(scratch[:0], f, 'e', -1, 64)
	mant, exp := e, 0
	for i, c := range e {
		if c == 'e' {
			mant = e[:i]
			x, _ := strconv.Atoi(string(e[i+1:]))
			exp = x
			break
		}
	}
	var digits [24]byte
	k := 0
	for _, c := range mant {
		if c != '.' {
			digits[k] = c
			k++
		}
	}
	n := exp + 1 // position of the decimal point relative to the digits
	switch {
	case k <= n && n <= 21:
		dst = append(dst, digits[:k]...)
		for range n - k {
			dst = append(dst, '0')
		}
	case 0 < n && n <= 21:
		dst = append(dst, digits[:n]...)
		dst = append(dst, '.')
		dst = append(dst, digits[n:k]...)
	case -6 < n && n <= 0:
		dst = append(dst, '0', '.')
		for range -n {
			dst = append(dst, '0')
		}
		dst = append(dst, digits[:k]...)
	default:
		dst = append(dst, digits[0])
		if k > 1 {
			dst = append(dst, '.')
			dst = append(dst, digits[1:k]...)
		}
		dst = append(dst, 'e')
		if n-1 >= 0 {
			dst = append(dst, '+')
		}
		dst = strconv.AppendInt(dst, int64(n-1), 10)
	}
	return dst, nil
}
