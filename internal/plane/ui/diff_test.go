package ui

import (
	"strings"
	"testing"
)

const sampleDiff = `diff --git a/README.md b/README.md
index 5626abf..f8a2e3c 100644
--- a/README.md
+++ b/README.md
@@ -1,3 +1,4 @@
 one
-two
+TWO
+three
 four
@@ -10,2 +11,2 @@ func main() {
 ten
-eleven
\ No newline at end of file
+eleven
diff --git a/new.txt b/new.txt
new file mode 100644
index 0000000..ce01362
--- /dev/null
+++ b/new.txt
@@ -0,0 +1 @@
+hello
diff --git a/gone.txt b/gone.txt
deleted file mode 100644
index ce01362..0000000
--- a/gone.txt
+++ /dev/null
@@ -1 +0,0 @@
-bye
diff --git a/old name.txt b/new name.txt
similarity index 100%
rename from old name.txt
rename to new name.txt
diff --git "a/\"><img src=x>.txt" "b/\"><img src=x>.txt"
new file mode 100644
--- /dev/null
+++ "b/\"><img src=x>.txt"	
@@ -0,0 +1 @@
+<script>alert(1)</script>
diff --git "a/caf\303\251.bin" "b/caf\303\251.bin"
new file mode 100644
index 0000000..1111111
Binary files /dev/null and b/café.bin differ
`

func TestParseDiff(t *testing.T) {
	v := parseDiff([]byte(sampleDiff))
	if v.Truncated || v.Added != 5 || v.Removed != 3 || len(v.Files) != 6 {
		t.Fatalf("diff: +%d -%d, %d files, truncated %v", v.Added, v.Removed, len(v.Files), v.Truncated)
	}
	want := []struct{ path, status string }{
		{"README.md", "modified"}, {"new.txt", "added"}, {"gone.txt", "deleted"}, {"new name.txt", "renamed"},
		{`"><img src=x>.txt`, "added"}, {"café.bin", "added"},
	}
	for i, w := range want {
		if f := v.Files[i]; f.Path != w.path || f.Status != w.status {
			t.Errorf("file %d: %q %s, want %q %s", i, f.Path, f.Status, w.path, w.status)
		}
	}
	if f := v.Files[3]; f.OldPath != "old name.txt" {
		t.Errorf("rename from %q", f.OldPath)
	}
	if f := v.Files[5]; !f.Binary {
		t.Errorf("binary file not marked: %+v", f)
	}
	// Line numbers follow the hunk headers.
	var got []string
	for _, l := range v.Files[0].Lines {
		got = append(got, l.Kind+":"+itoa(l.Old)+":"+itoa(l.New)+":"+l.Text)
	}
	wantLines := "hunk:0:0:@@ -1,3 +1,4 @@|ctx:1:1:one|del:2:0:two|add:0:2:TWO|add:0:3:three|ctx:3:4:four|" +
		"hunk:0:0:@@ -10,2 +11,2 @@ func main() {|ctx:10:11:ten|del:11:0:eleven|note:0:0:\\ No newline at end of file|add:0:12:eleven"
	if strings.Join(got, "|") != wantLines {
		t.Errorf("lines:\n%s\nwant\n%s", strings.Join(got, "|"), wantLines)
	}
	if l := v.Files[1].Lines[1]; l.Kind != "add" || l.New != 1 || l.Sign() != "+" {
		t.Errorf("added file's line: %+v", l)
	}
	if l := v.Files[2].Lines[1]; l.Kind != "del" || l.Old != 1 || l.Sign() != "−" {
		t.Errorf("deleted file's line: %+v", l)
	}
}

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	s := ""
	for ; n > 0; n /= 10 {
		s = string(rune('0'+n%10)) + s
	}
	return s
}

func TestParseDiffLimits(t *testing.T) {
	var b strings.Builder
	b.WriteString("diff --git a/big.txt b/big.txt\n--- a/big.txt\n+++ b/big.txt\n@@ -0,0 +1,30000 @@\n")
	for i := 0; i < maxDiffLines+10; i++ {
		b.WriteString("+x\n")
	}
	v := parseDiff([]byte(b.String()))
	if !v.Truncated || len(v.Files[0].Lines) != maxDiffLines || v.Added != maxDiffLines+10 {
		t.Fatalf("truncated %v, kept %d lines, counted +%d", v.Truncated, len(v.Files[0].Lines), v.Added)
	}
	long := "diff --git a/l b/l\n--- a/l\n+++ b/l\n@@ -0,0 +1 @@\n+" + strings.Repeat("é", maxLineBytes) + "\n"
	v = parseDiff([]byte(long))
	l := v.Files[0].Lines[1]
	if !l.Cut || len(l.Text) > maxLineBytes || !strings.HasSuffix(l.Text, "é") {
		t.Fatalf("long line: cut %v, %d bytes", l.Cut, len(l.Text))
	}
}

func TestGitUnquote(t *testing.T) {
	for in, want := range map[string]string{
		`plain.txt`:               `plain.txt`,
		`"a\"b.txt"`:              `a"b.txt`,
		`"caf\303\251"`:           "café",
		`"tab\there\\back\nline"`: "tab\there\\back\nline",
		`"bad\9"`:                 "bad9",
		`"trailing\"`:             `trailing\`,
		`"short\30"`:              "short30",
	} {
		if got := gitUnquote(in); got != want {
			t.Errorf("gitUnquote(%s) = %q, want %q", in, got, want)
		}
	}
}

func FuzzParseDiff(f *testing.F) {
	f.Add([]byte(sampleDiff))
	f.Add([]byte("diff --git \"a/x\" \"b/\\\"\n@@ -a,b +c @@\n+\n-\n \n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		v := parseDiff(data)
		n := 0
		for _, f := range v.Files {
			n += len(f.Lines)
			for _, l := range f.Lines {
				if len(l.Text) > maxLineBytes {
					t.Fatalf("line of %d bytes kept", len(l.Text))
				}
			}
		}
		if n > maxDiffLines {
			t.Fatalf("%d lines kept", n)
		}
	})
}
