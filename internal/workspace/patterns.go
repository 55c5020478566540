package workspace

import (
	"errors"
	"fmt"
	"path"
	"strings"
)

// DefaultDeny is the deny list every capture applies, before any
// configured pattern.
var DefaultDeny = []string{".env", ".env.*", "*.pem", "*.key", "id_rsa*", "id_ed25519*"}

// ErrBadPattern is wrapped by errors about malformed deny or allow
// patterns.
var ErrBadPattern = errors.New("bad workspace pattern")

// patternSet matches workspace paths against gitignore-like globs; see the
// package documentation for the exact rules.
type patternSet struct {
	pats []pattern
	fold bool // match case-insensitively
}

type pattern struct {
	text     string   // as configured
	segs     []string // anchored patterns: the path segments
	base     matcher  // unanchored patterns: matches one path component
	anchored bool
	dirOnly  bool
}

// matcher is a compiled glob for one path component. Plain literals,
// "prefix*" and "*suffix" are matched without path.Match, because deny
// patterns run against every file of a capture.
type matcher struct {
	kind  int // matchLiteral, matchPrefix, matchSuffix, matchGlob
	text  string
	fold  bool
	globs string // the glob, for matchGlob
}

const (
	matchLiteral = iota
	matchPrefix
	matchSuffix
	matchGlob
)

func newMatcher(glob string, fold bool) matcher {
	if fold {
		glob = strings.ToLower(glob)
	}
	special := func(s string) bool { return strings.ContainsAny(s, "*?[\\") }
	switch {
	case !special(glob):
		return matcher{kind: matchLiteral, text: glob, fold: fold}
	case strings.HasSuffix(glob, "*") && !special(glob[:len(glob)-1]):
		return matcher{kind: matchPrefix, text: glob[:len(glob)-1], fold: fold}
	case strings.HasPrefix(glob, "*") && !special(glob[1:]):
		return matcher{kind: matchSuffix, text: glob[1:], fold: fold}
	}
	return matcher{kind: matchGlob, globs: glob, fold: fold}
}

func (m matcher) match(name string) bool {
	switch m.kind {
	case matchLiteral:
		if m.fold {
			return strings.EqualFold(name, m.text)
		}
		return name == m.text
	case matchPrefix:
		if len(name) < len(m.text) {
			return false
		}
		if m.fold {
			return strings.EqualFold(name[:len(m.text)], m.text)
		}
		return name[:len(m.text)] == m.text
	case matchSuffix:
		if len(name) < len(m.text) {
			return false
		}
		if m.fold {
			return strings.EqualFold(name[len(name)-len(m.text):], m.text)
		}
		return name[len(name)-len(m.text):] == m.text
	}
	if m.fold {
		name = strings.ToLower(name)
	}
	ok, _ := path.Match(m.globs, name)
	return ok
}

// compilePatterns compiles a pattern list. fold makes matching
// case-insensitive.
func compilePatterns(list []string, fold bool) (*patternSet, error) {
	s := &patternSet{fold: fold}
	for _, raw := range list {
		p, err := compilePattern(raw, fold)
		if err != nil {
			return nil, err
		}
		s.pats = append(s.pats, p)
	}
	return s, nil
}

func compilePattern(raw string, fold bool) (pattern, error) {
	p := pattern{text: raw}
	t := raw
	switch {
	case strings.TrimSpace(t) == "":
		return p, fmt.Errorf("%w: empty pattern", ErrBadPattern)
	case strings.HasPrefix(t, "!"):
		return p, fmt.Errorf("%w: %q: negated patterns are not supported", ErrBadPattern, raw)
	case strings.ContainsAny(t, "\x00\n\r"):
		return p, fmt.Errorf("%w: %q contains a control character", ErrBadPattern, raw)
	}
	if strings.HasSuffix(t, "/") {
		p.dirOnly = true
		t = strings.TrimRight(t, "/")
	}
	leading := strings.HasPrefix(t, "/")
	t = strings.TrimLeft(t, "/")
	if t == "" {
		return p, fmt.Errorf("%w: %q matches nothing", ErrBadPattern, raw)
	}
	segs := strings.Split(t, "/")
	for _, seg := range segs {
		switch seg {
		case "":
			return p, fmt.Errorf("%w: %q has an empty path segment", ErrBadPattern, raw)
		case ".", "..":
			return p, fmt.Errorf("%w: %q has a %q segment", ErrBadPattern, raw, seg)
		}
		if _, err := path.Match(seg, ""); err != nil {
			return p, fmt.Errorf("%w: %q: %v", ErrBadPattern, raw, err)
		}
	}
	if !leading && len(segs) == 1 {
		p.base = newMatcher(segs[0], fold)
		return p, nil
	}
	if !leading && len(segs) == 2 && segs[0] == "**" && segs[1] != "**" {
		// "**/name" is the same as "name".
		p.base = newMatcher(segs[1], fold)
		return p, nil
	}
	p.anchored = true
	for i, seg := range segs {
		if fold && seg != "**" {
			seg = strings.ToLower(seg)
		}
		segs[i] = seg
	}
	p.segs = segs
	return p, nil
}

// Match reports whether p matches and, if so, the first pattern that did.
func (s *patternSet) Match(p string) (string, bool) {
	var m dirMemo
	return s.match(p, &m)
}

// dirMemo remembers the verdict on the last directory matched, so a run of
// sorted paths in one directory matches the directory once.
type dirMemo struct {
	valid bool
	dir   string
	pat   string
	ok    bool
}

// match is Match with a memo of directory verdicts.
func (s *patternSet) match(p string, m *dirMemo) (string, bool) {
	if s == nil || len(s.pats) == 0 {
		return "", false
	}
	dir, base := "", p
	if i := strings.LastIndexByte(p, '/'); i >= 0 {
		dir, base = p[:i], p[i+1:]
	}
	if dir != "" {
		if !m.valid || m.dir != dir {
			m.pat, m.ok = s.matchDir(dir)
			m.dir, m.valid = dir, true
		}
		if m.ok {
			return m.pat, true
		}
	}
	return s.matchLeaf(p, base)
}

// matchDir reports whether a pattern matches directory dir or one of its
// ancestors, which excludes (or allows) everything below it.
func (s *patternSet) matchDir(dir string) (string, bool) {
	var comps []string
	for i := range s.pats {
		pt := &s.pats[i]
		if !pt.anchored {
			for rest := dir; ; {
				j := strings.IndexByte(rest, '/')
				if j < 0 {
					if pt.base.match(rest) {
						return pt.text, true
					}
					break
				}
				if pt.base.match(rest[:j]) {
					return pt.text, true
				}
				rest = rest[j+1:]
			}
			continue
		}
		if comps == nil {
			comps = s.split(dir)
		}
		for k := 1; k <= len(comps); k++ {
			if matchSegments(pt.segs, comps[:k]) {
				return pt.text, true
			}
		}
	}
	return "", false
}

// matchLeaf reports whether a pattern that may match files matches the
// whole path p (whose last component is base).
func (s *patternSet) matchLeaf(p, base string) (string, bool) {
	var comps []string
	for i := range s.pats {
		pt := &s.pats[i]
		if pt.dirOnly {
			continue
		}
		if !pt.anchored {
			if pt.base.match(base) {
				return pt.text, true
			}
			continue
		}
		if comps == nil {
			comps = s.split(p)
		}
		if matchSegments(pt.segs, comps) {
			return pt.text, true
		}
	}
	return "", false
}

func (s *patternSet) split(p string) []string {
	if s.fold {
		p = strings.ToLower(p)
	}
	return strings.Split(p, "/")
}

// matchSegments matches glob segments, where "**" matches zero or more
// whole components, against path components.
func matchSegments(segs, comps []string) bool {
	for len(segs) > 0 {
		if segs[0] == "**" {
			rest := segs[1:]
			if len(rest) == 0 {
				return true
			}
			for k := 0; k <= len(comps); k++ {
				if matchSegments(rest, comps[k:]) {
					return true
				}
			}
			return false
		}
		if len(comps) == 0 {
			return false
		}
		if ok, _ := path.Match(segs[0], comps[0]); !ok {
			return false
		}
		segs, comps = segs[1:], comps[1:]
	}
	return len(comps) == 0
}

// dirPrefixes returns, for a set of anchored patterns, the literal leading
// directories under which every match must lie, so a walk for untracked
// files can be limited to them. ok is false when some pattern can match
// anywhere.
func (s *patternSet) dirPrefixes() (prefixes []string, ok bool) {
	for _, pt := range s.pats {
		if !pt.anchored {
			return nil, false
		}
		var lit []string
		for _, seg := range pt.segs[:len(pt.segs)-1] {
			if seg == "**" || strings.ContainsAny(seg, "*?[\\") {
				break
			}
			lit = append(lit, seg)
		}
		if len(lit) == 0 || s.fold {
			return nil, false
		}
		prefixes = append(prefixes, strings.Join(lit, "/"))
	}
	return prefixes, true
}

// effectiveDeny returns DefaultDeny followed by the configured patterns,
// without duplicates.
func effectiveDeny(extra []string) []string {
	out := make([]string, 0, len(DefaultDeny)+len(extra))
	seen := make(map[string]bool, cap(out))
	for _, p := range append(append([]string(nil), DefaultDeny...), extra...) {
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	return out
}
