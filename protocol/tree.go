package protocol

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// FieldError reports a protocol object whose JSON does not have the shape
// the protocol requires: a missing member, a wrong type, a bad value.
type FieldError struct {
	Path   string // e.g. "receipt.runner.keyId" or "events[3].seq"
	Reason string
	Err    error // optional sentinel, e.g. ErrUnsupportedVersion
}

func (e *FieldError) Error() string { return e.Path + ": " + e.Reason }

func (e *FieldError) Unwrap() error { return e.Err }

// ErrUnsupportedVersion is wrapped by errors about a protocol object whose
// version string names a major version this implementation does not know.
var ErrUnsupportedVersion = errors.New("unsupported protocol version")

// treeEncoder is implemented by types whose JSON tree is not a plain
// field-by-field rendering (unions, objects that keep their received bytes).
type treeEncoder interface {
	encodeTree() (any, error)
}

// treeDecoder is implemented by types that decode themselves from a tree.
type treeDecoder interface {
	decodeTree(path string, v any) error
}

// Canonical returns the RFC 8785 canonical JSON of v, which may be a parsed
// tree or a protocol value (struct, slice, map of those).
func Canonical(v any) ([]byte, error) {
	t, err := toTree(v)
	if err != nil {
		return nil, err
	}
	return AppendCanonical(nil, t)
}

// Hash returns the protocol hash of v: lowercase hex SHA-256 of its
// canonical JSON.
func Hash(v any) (string, error) {
	b, err := Canonical(v)
	if err != nil {
		return "", err
	}
	return HashBytes(b), nil
}

// HashBytes returns the lowercase hex SHA-256 of raw bytes: the hash of a
// blob (file content, diff, log).
func HashBytes(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// IsHash reports whether s has the form of a protocol hash: 64 lowercase
// hex characters.
func IsHash(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// decodeJSON strictly parses data and decodes it into dst (a pointer),
// naming errors from root.
func decodeJSON(data []byte, root string, dst any) error {
	t, err := Parse(data)
	if err != nil {
		return fmt.Errorf("%s: %w", root, err)
	}
	return fromTree(root, t, reflect.ValueOf(dst).Elem())
}

// toTree renders a Go value as a JSON tree. Nil slices and maps become
// empty arrays and objects (never null); optional members are tagged
// omitempty and left out when zero.
func toTree(v any) (any, error) {
	switch v.(type) {
	case nil, bool, float64, string, []any, Object:
		return v, nil
	case map[string]any:
		return objectFromMap(v.(map[string]any)), nil
	}
	return encodeValue(reflect.ValueOf(v))
}

const maxSafeInteger = 1<<53 - 1

func encodeValue(rv reflect.Value) (any, error) {
	if rv.CanInterface() {
		if te, ok := rv.Interface().(treeEncoder); ok {
			if rv.Kind() == reflect.Pointer && rv.IsNil() {
				return nil, nil
			}
			return te.encodeTree()
		}
	}
	if rv.Kind() != reflect.Pointer && rv.CanAddr() {
		if te, ok := rv.Addr().Interface().(treeEncoder); ok {
			return te.encodeTree()
		}
	}
	switch rv.Kind() {
	case reflect.Pointer, reflect.Interface:
		if rv.IsNil() {
			return nil, nil
		}
		return encodeValue(rv.Elem())
	case reflect.Struct:
		info := fieldsOf(rv.Type()) // in canonical order of their names
		obj := make(Object, 0, len(info))
		for _, f := range info {
			fv := rv.Field(f.index)
			if f.omitEmpty && fv.IsZero() {
				continue
			}
			if f.omitEmpty && (fv.Kind() == reflect.Slice || fv.Kind() == reflect.Map) && fv.Len() == 0 {
				continue
			}
			t, err := encodeValue(fv)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", f.name, err)
			}
			obj = append(obj, Member{Key: f.name, Value: t})
		}
		return obj, nil
	case reflect.String:
		return rv.String(), nil
	case reflect.Bool:
		return rv.Bool(), nil
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n := rv.Int()
		if n > maxSafeInteger || n < -maxSafeInteger {
			return nil, fmt.Errorf("integer %d is outside the range a JSON number represents exactly", n)
		}
		return float64(n), nil
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		n := rv.Uint()
		if n > maxSafeInteger {
			return nil, fmt.Errorf("integer %d is outside the range a JSON number represents exactly", n)
		}
		return float64(n), nil
	case reflect.Float32, reflect.Float64:
		f := rv.Float()
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return nil, fmt.Errorf("%w: %v", ErrNonFinite, f)
		}
		return f, nil
	case reflect.Slice, reflect.Array:
		arr := make([]any, rv.Len())
		for i := range arr {
			t, err := encodeValue(rv.Index(i))
			if err != nil {
				return nil, fmt.Errorf("[%d]: %w", i, err)
			}
			arr[i] = t
		}
		return arr, nil
	case reflect.Map:
		if rv.Type().Key().Kind() != reflect.String {
			return nil, fmt.Errorf("map key type %s is not a string", rv.Type().Key())
		}
		obj := make(Object, 0, rv.Len())
		iter := rv.MapRange()
		for iter.Next() {
			t, err := encodeValue(iter.Value())
			if err != nil {
				return nil, fmt.Errorf("%s: %w", iter.Key().String(), err)
			}
			obj = append(obj, Member{Key: iter.Key().String(), Value: t})
		}
		sortMembers(obj)
		return obj, nil
	default:
		return nil, fmt.Errorf("unsupported type %s", rv.Type())
	}
}

// fromTree decodes a JSON tree into rv, which must be settable. Member
// names match case-sensitively; unknown members are ignored (objects that
// are hashed keep their received tree, so nothing is lost).
func fromTree(path string, v any, rv reflect.Value) error {
	if rv.CanAddr() {
		if td, ok := rv.Addr().Interface().(treeDecoder); ok {
			return td.decodeTree(path, v)
		}
	}
	switch rv.Kind() {
	case reflect.Pointer:
		if v == nil {
			rv.SetZero()
			return nil
		}
		if rv.IsNil() {
			rv.Set(reflect.New(rv.Type().Elem()))
		}
		return fromTree(path, v, rv.Elem())
	case reflect.Interface:
		if v == nil {
			rv.SetZero()
			return nil
		}
		rv.Set(reflect.ValueOf(v))
		return nil
	case reflect.Struct:
		obj, ok := v.(Object)
		if !ok {
			return typeError(path, "an object", v)
		}
		for _, f := range fieldsOf(rv.Type()) {
			mv, present := obj.Get(f.name)
			if !present {
				if !f.omitEmpty {
					return &FieldError{Path: path + "." + f.name, Reason: "required member is missing"}
				}
				continue
			}
			if err := fromTree(path+"."+f.name, mv, rv.Field(f.index)); err != nil {
				return err
			}
		}
		return nil
	case reflect.String:
		s, ok := v.(string)
		if !ok {
			return typeError(path, "a string", v)
		}
		rv.SetString(s)
		return nil
	case reflect.Bool:
		b, ok := v.(bool)
		if !ok {
			return typeError(path, "a boolean", v)
		}
		rv.SetBool(b)
		return nil
	case reflect.Float32, reflect.Float64:
		f, ok := v.(float64)
		if !ok {
			return typeError(path, "a number", v)
		}
		rv.SetFloat(f)
		return nil
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		f, ok := v.(float64)
		if !ok {
			return typeError(path, "an integer", v)
		}
		if f != math.Trunc(f) || f > maxSafeInteger || f < -maxSafeInteger {
			return &FieldError{Path: path, Reason: "expected an integer, got " + strconv.FormatFloat(f, 'g', -1, 64)}
		}
		if rv.OverflowInt(int64(f)) {
			return &FieldError{Path: path, Reason: "integer out of range"}
		}
		rv.SetInt(int64(f))
		return nil
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		f, ok := v.(float64)
		if !ok {
			return typeError(path, "a non-negative integer", v)
		}
		if f != math.Trunc(f) || f < 0 || f > maxSafeInteger || rv.OverflowUint(uint64(f)) {
			return &FieldError{Path: path, Reason: "expected a non-negative integer, got " + strconv.FormatFloat(f, 'g', -1, 64)}
		}
		rv.SetUint(uint64(f))
		return nil
	case reflect.Slice:
		arr, ok := v.([]any)
		if !ok {
			return typeError(path, "an array", v)
		}
		s := reflect.MakeSlice(rv.Type(), len(arr), len(arr))
		for i, e := range arr {
			if err := fromTree(path+"["+strconv.Itoa(i)+"]", e, s.Index(i)); err != nil {
				return err
			}
		}
		rv.Set(s)
		return nil
	case reflect.Map:
		obj, ok := v.(Object)
		if !ok {
			return typeError(path, "an object", v)
		}
		m := reflect.MakeMapWithSize(rv.Type(), len(obj))
		for _, mem := range obj {
			k, e := mem.Key, mem.Value
			ev := reflect.New(rv.Type().Elem()).Elem()
			if err := fromTree(path+"."+k, e, ev); err != nil {
				return err
			}
			m.SetMapIndex(reflect.ValueOf(k).Convert(rv.Type().Key()), ev)
		}
		rv.Set(m)
		return nil
	default:
		return &FieldError{Path: path, Reason: "unsupported Go type " + rv.Type().String()}
	}
}

func typeError(path, want string, got any) error {
	return &FieldError{Path: path, Reason: "expected " + want + ", got " + jsonKind(got)}
}

func jsonKind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "a boolean"
	case float64:
		return "a number"
	case string:
		return "a string"
	case []any:
		return "an array"
	case Object:
		return "an object"
	default:
		return fmt.Sprintf("%T", v)
	}
}

type fieldInfo struct {
	name      string
	index     int
	omitEmpty bool
}

var fieldCache sync.Map // reflect.Type → []fieldInfo

func fieldsOf(t reflect.Type) []fieldInfo {
	if cached, ok := fieldCache.Load(t); ok {
		return cached.([]fieldInfo)
	}
	var out []fieldInfo
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		if name == "" {
			name = f.Name
		}
		out = append(out, fieldInfo{name: name, index: i, omitEmpty: strings.Contains(opts, "omitempty")})
	}
	slices.SortFunc(out, func(a, b fieldInfo) int { return compareUTF16(a.name, b.name) })
	fieldCache.Store(t, out)
	return out
}

// checkVersion accepts "warrant.<kind>.v1" (and a dotted minor version
// "warrant.<kind>.v1.N") and rejects every other major version.
func checkVersion(path, kind, got string) error {
	want := "warrant." + kind + ".v1"
	if got == want || (strings.HasPrefix(got, want+".") && isDigits(got[len(want)+1:])) {
		return nil
	}
	return &FieldError{Path: path + ".version", Reason: fmt.Sprintf("%v: got %q, this implementation understands %q", ErrUnsupportedVersion, got, want), Err: ErrUnsupportedVersion}
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
