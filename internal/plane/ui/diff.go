package ui

import (
	"bufio"
	"bytes"
	"strconv"
	"strings"
)

// Limits of the rendered diff: past them the page says the diff was cut
// and offers the whole diff as a download.
const (
	maxDiffBytes = 4 << 20
	maxDiffLines = 20_000
	maxLineBytes = 2_000 // a longer line is shown cut, with a marker
)

// diffView is a unified git diff parsed for display.
type diffView struct {
	Files     []diffFile
	Added     int
	Removed   int
	Truncated bool // the diff has more lines than were kept
}

// diffFile is one file's part of the diff.
type diffFile struct {
	Path    string
	OldPath string // set when the file was renamed
	Status  string // "added", "deleted", "renamed", "modified", "mode"
	Binary  bool
	Added   int
	Removed int
	Lines   []diffLine
}

// diffLine is one line of a hunk (or a hunk header).
type diffLine struct {
	Kind string // "add", "del", "ctx", "hunk", "note"
	Old  int    // line number in the old file, 0 when none
	New  int    // line number in the new file, 0 when none
	Text string // without the leading +, - or space
	Cut  bool   // the line was longer than maxLineBytes
}

// Sign is the marker shown before the line, so that additions and
// removals do not depend on colour alone.
func (l diffLine) Sign() string {
	switch l.Kind {
	case "add":
		return "+"
	case "del":
		return "−"
	}
	return ""
}

// parseDiff parses a git unified diff. Header lines (index, similarity,
// ---/+++) become the file's path and status; anything else it does not
// recognise is kept as a note line. Past the limits it stops keeping
// lines and sets Truncated (the counts still cover the whole diff).
func parseDiff(data []byte) *diffView {
	v := &diffView{}
	var cur *diffFile
	var oldNo, newNo int
	lines := 0
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64<<10), maxDiffBytes+1)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "diff --git ") {
			v.Files = append(v.Files, diffFile{Path: gitHeaderPath(line), Status: "modified"})
			cur = &v.Files[len(v.Files)-1]
			oldNo, newNo = 0, 0
			continue
		}
		if cur == nil {
			continue // text before the first file header
		}
		add := func(l diffLine) {
			if lines >= maxDiffLines {
				v.Truncated = true
				return
			}
			if len(l.Text) > maxLineBytes {
				l.Text, l.Cut = cutUTF8(l.Text, maxLineBytes), true
			}
			cur.Lines = append(cur.Lines, l)
			lines++
		}
		switch {
		case strings.HasPrefix(line, "@@"):
			oldNo, newNo = hunkStart(line)
			add(diffLine{Kind: "hunk", Text: line})
		case oldNo == 0 && newNo == 0 && strings.HasPrefix(line, "new file mode"):
			cur.Status = "added"
		case oldNo == 0 && newNo == 0 && strings.HasPrefix(line, "deleted file mode"):
			cur.Status = "deleted"
		case oldNo == 0 && newNo == 0 && strings.HasPrefix(line, "rename from "):
			cur.Status, cur.OldPath = "renamed", gitUnquote(strings.TrimPrefix(line, "rename from "))
		case oldNo == 0 && newNo == 0 && strings.HasPrefix(line, "rename to "):
			cur.Path = gitUnquote(strings.TrimPrefix(line, "rename to "))
		case oldNo == 0 && newNo == 0 && strings.HasPrefix(line, "+++ "):
			// git ends the name with a tab when it holds a space
			if p := strings.TrimSuffix(strings.TrimPrefix(line, "+++ "), "\t"); p != "/dev/null" {
				cur.Path = strings.TrimPrefix(gitUnquote(p), "b/")
			}
		case oldNo == 0 && newNo == 0 && strings.HasPrefix(line, "--- "):
		case oldNo == 0 && newNo == 0 && (strings.HasPrefix(line, "old mode") || strings.HasPrefix(line, "new mode")):
			if cur.Status == "modified" {
				cur.Status = "mode"
			}
			add(diffLine{Kind: "note", Text: line})
		case strings.HasPrefix(line, "GIT binary patch"), strings.HasPrefix(line, "Binary files "):
			cur.Binary = true
			add(diffLine{Kind: "note", Text: "binary file: content not shown"})
			oldNo, newNo = 0, 0
		case oldNo == 0 && newNo == 0:
			// index lines, similarity, binary patch data: header detail
			if cur.Binary {
				continue
			}
		case strings.HasPrefix(line, "+"):
			cur.Added++
			v.Added++
			add(diffLine{Kind: "add", New: newNo, Text: line[1:]})
			newNo++
		case strings.HasPrefix(line, "-"):
			cur.Removed++
			v.Removed++
			add(diffLine{Kind: "del", Old: oldNo, Text: line[1:]})
			oldNo++
		case strings.HasPrefix(line, " ") || line == "":
			text := line
			if text != "" {
				text = text[1:]
			}
			add(diffLine{Kind: "ctx", Old: oldNo, New: newNo, Text: text})
			oldNo++
			newNo++
		case strings.HasPrefix(line, `\`):
			add(diffLine{Kind: "note", Text: line})
		default:
			add(diffLine{Kind: "note", Text: line})
		}
	}
	if sc.Err() != nil {
		v.Truncated = true
	}
	return v
}

// hunkStart reads the old and new start lines of "@@ -a,b +c,d @@". A
// file side that starts at 0 (an added or deleted file) counts from 1, so
// that 0 keeps meaning "between hunks".
func hunkStart(line string) (int, int) {
	fields := strings.Fields(line)
	num := func(prefix string) int {
		for _, f := range fields {
			if strings.HasPrefix(f, prefix) {
				s, _, _ := strings.Cut(f[1:], ",")
				if n, err := strconv.Atoi(s); err == nil {
					return max(n, 1)
				}
			}
		}
		return 1
	}
	return num("-"), num("+")
}

// gitHeaderPath takes the b/ path of a "diff --git a/X b/Y" line, quoted
// or not. The +++ line, when there is one, corrects it.
func gitHeaderPath(line string) string {
	rest := strings.TrimPrefix(line, "diff --git ")
	if strings.HasSuffix(rest, `"`) {
		if i := strings.LastIndex(rest, ` "b/`); i >= 0 {
			return strings.TrimPrefix(gitUnquote(rest[i+1:]), "b/")
		}
	}
	if i := strings.LastIndex(rest, " b/"); i >= 0 {
		return rest[i+3:]
	}
	return rest
}

// gitUnquote undoes git's C-style quoting of a path ("a\"b", octal
// escapes for bytes outside ASCII). An unquoted path is returned as it is.
func gitUnquote(s string) string {
	if len(s) < 2 || s[0] != '"' || s[len(s)-1] != '"' {
		return s
	}
	s = s[1 : len(s)-1]
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '\\' || i+1 == len(s) {
			b.WriteByte(c)
			continue
		}
		i++
		switch e := s[i]; e {
		case 'a':
			b.WriteByte('\a')
		case 'b':
			b.WriteByte('\b')
		case 'f':
			b.WriteByte('\f')
		case 'n':
			b.WriteByte('\n')
		case 'r':
			b.WriteByte('\r')
		case 't':
			b.WriteByte('\t')
		case 'v':
			b.WriteByte('\v')
		case '0', '1', '2', '3':
			if i+2 < len(s) {
				if n, err := strconv.ParseUint(s[i:i+3], 8, 8); err == nil {
					b.WriteByte(byte(n))
					i += 2
					continue
				}
			}
			b.WriteByte(e)
		default:
			b.WriteByte(e)
		}
	}
	return b.String()
}

// cutUTF8 shortens s to at most n bytes without splitting a character.
func cutUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && s[n]&0xC0 == 0x80 {
		n--
	}
	return s[:n]
}
