package protocol

import (
	"slices"
)

// Member is one name/value pair of a JSON object.
type Member struct {
	Key   string
	Value any
}

// Object is a parsed JSON object: its members sorted in canonical (UTF-16
// code unit) order, names unique. Keeping members sorted makes
// canonicalization a straight walk.
type Object []Member

// Get returns the value of the member named key.
func (o Object) Get(key string) (any, bool) {
	if i, ok := o.index(key); ok {
		return o[i].Value, true
	}
	return nil, false
}

func (o Object) index(key string) (int, bool) {
	if len(o) <= 8 {
		for i := range o {
			if o[i].Key == key {
				return i, true
			}
		}
		return 0, false
	}
	return slices.BinarySearchFunc(o, key, func(m Member, k string) int { return compareUTF16(m.Key, k) })
}

// With returns a copy of o with key set to value (added in order when
// absent).
func (o Object) With(key string, value any) Object {
	i, found := slices.BinarySearchFunc(o, key, func(m Member, k string) int { return compareUTF16(m.Key, k) })
	out := make(Object, 0, len(o)+1)
	out = append(out, o[:i]...)
	out = append(out, Member{Key: key, Value: value})
	if found {
		i++
	}
	return append(out, o[i:]...)
}

// sortMembers puts members in canonical order and reports the first
// duplicate name, if any.
func sortMembers(o Object) (dup string, ok bool) {
	if len(o) < 12 {
		for i := 1; i < len(o); i++ {
			for j := i; j > 0 && compareUTF16(o[j-1].Key, o[j].Key) > 0; j-- {
				o[j-1], o[j] = o[j], o[j-1]
			}
		}
	} else {
		slices.SortFunc(o, func(a, b Member) int { return compareUTF16(a.Key, b.Key) })
	}
	for i := 1; i < len(o); i++ {
		if o[i-1].Key == o[i].Key {
			return o[i].Key, false
		}
	}
	return "", true
}

// objectFromMap converts a Go map into an Object.
func objectFromMap(m map[string]any) Object {
	o := make(Object, 0, len(m))
	for k, v := range m {
		o = append(o, Member{Key: k, Value: v})
	}
	sortMembers(o)
	return o
}
