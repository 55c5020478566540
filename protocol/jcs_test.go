package protocol

import (
	"bytes"
	"errors"
	"math"
	"runtime"
	"strings"
	"testing"
)

func TestNumberFormatting(t *testing.T) {
	cases := []struct {
		in   float64
		want string
	}{
		{0, "0"}, {math.Copysign(0, -1), "0"}, {1, "1"}, {-1, "-1"}, {0.1, "0.1"},
		{1e21, "1e+21"}, {1e20, "100000000000000000000"}, {123e18, "123000000000000000000"},
		{1.5e-7, "1.5e-7"}, {1e-6, "0.000001"}, {1e-7, "1e-7"}, {5e-324, "5e-324"},
		{math.MaxFloat64, "1.7976931348623157e+308"}, {0.30000000000000004, "0.30000000000000004"},
		{-1500, "-1500"}, {4.35, "4.35"}, {2e-6, "0.000002"}, {9007199254740991, "9007199254740991"},
		{1.2345678901234568e+29, "1.2345678901234568e+29"}, {123.456, "123.456"}, {-0.0000015, "-0.0000015"},
		{1e300, "1e+300"}, {2.5e-10, "2.5e-10"}, {100, "100"}, {1234567.5, "1234567.5"},
	}
	for _, c := range cases {
		got, err := appendNumber(nil, c.in)
		if err != nil || string(got) != c.want {
			t.Errorf("%v: got %q (%v), want %q", c.in, got, err, c.want)
		}
	}
	for _, bad := range []float64{math.NaN(), math.Inf(1), math.Inf(-1)} {
		if _, err := appendNumber(nil, bad); !errors.Is(err, ErrNonFinite) {
			t.Errorf("%v: want ErrNonFinite, got %v", bad, err)
		}
	}
}

func TestKeyOrderIsUTF16(t *testing.T) {
	// U+1F600 (a surrogate pair D83D DE00 in UTF-16) sorts before U+FB01
	// (one code unit FB01), although its code point is larger.
	got, err := Canonicalize([]byte(`{"\ufb01":1,"😀":2,"\ue000":3,"\ud7ff":4,"a":5}`))
	if err != nil {
		t.Fatal(err)
	}
	want := `{"a":5,"` + "\ud7ff" + `":4,"😀":2,"` + "\ue000" + `":3,"ﬁ":1}`
	if string(got) != want {
		t.Fatalf("got %s, want %s", got, want)
	}
	// Supplementary characters among themselves sort by code point.
	got, _ = Canonicalize([]byte(`{"𝄞":1,"😀":2,"𐀀":3}`))
	if string(got) != `{"𐀀":3,"𝄞":1,"😀":2}` {
		t.Fatalf("got %s", got)
	}
	// A prefix sorts first.
	if compareUTF16("ab", "abc") >= 0 || compareUTF16("abc", "ab") <= 0 || compareUTF16("é", "é") != 0 {
		t.Fatal("prefix ordering wrong")
	}
}

func TestStringEscaping(t *testing.T) {
	got, err := Canonicalize([]byte(`"\u0000\u001f\u007f\b\f\n\r\t\"\\\/<>&\u2028\u00e9"`))
	if err != nil {
		t.Fatal(err)
	}
	want := `"\u0000\u001f` + "\x7f" + `\b\f\n\r\t\"\\/<>&` + "\u2028é" + `"`
	if string(got) != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestParseRejects(t *testing.T) {
	cases := map[string]struct {
		in   string
		want error
	}{
		"truncated object":      {`{"a":1`, ErrSyntax},
		"truncated string":      {`{"a":"x`, ErrSyntax},
		"truncated literal":     {`tru`, ErrSyntax},
		"empty":                 {``, ErrSyntax},
		"trailing comma":        {`[1,2,]`, ErrSyntax},
		"trailing data":         {`{} {}`, ErrSyntax},
		"leading zero":          {`01`, ErrSyntax},
		"bare dot":              {`1.`, ErrSyntax},
		"plus sign":             {`+1`, ErrSyntax},
		"hex number":            {`0x10`, ErrSyntax},
		"NaN":                   {`NaN`, ErrSyntax},
		"single quotes":         {`{'a':1}`, ErrSyntax},
		"raw control char":      {"\"a\x01b\"", ErrSyntax},
		"bad escape":            {`"\x"`, ErrSyntax},
		"short unicode escape":  {`"\u12"`, ErrSyntax},
		"duplicate key":         {`{"a":1,"a":1}`, ErrDuplicateKey},
		"nested duplicate":      {`{"x":{"k":1,"k":2}}`, ErrDuplicateKey},
		"lone high surrogate":   {`"\ud800"`, ErrLoneSurrogate},
		"lone low surrogate":    {`"\udc00x"`, ErrLoneSurrogate},
		"reversed pair":         {`"\ude00\ud83d"`, ErrLoneSurrogate},
		"invalid utf8":          {"\"\xff\"", ErrInvalidUTF8},
		"utf8 surrogate":        {"\"\xed\xa0\x80\"", ErrInvalidUTF8},
		"overlong utf8":         {"\"\xc0\xaf\"", ErrInvalidUTF8},
		"huge number":           {`1e400`, ErrNonFinite},
		"huge negative number":  {`-1e99999`, ErrNonFinite},
		"huge integer literal":  {strings.Repeat("9", 400), ErrNonFinite},
		"too deep":              {strings.Repeat("[", MaxDepth+1) + strings.Repeat("]", MaxDepth+1), ErrTooDeep},
		"too deep objects":      {strings.Repeat(`{"a":`, MaxDepth+1) + "1" + strings.Repeat("}", MaxDepth+1), ErrTooDeep},
		"missing colon":         {`{"a" 1}`, ErrSyntax},
		"non-string key":        {`{1:2}`, ErrSyntax},
		"unterminated array":    {`[1`, ErrSyntax},
		"unterminated escape":   {`"\`, ErrSyntax},
		"exponent needs digits": {`1e`, ErrSyntax},
	}
	for name, c := range cases {
		_, err := Parse([]byte(c.in))
		if !errors.Is(err, c.want) {
			t.Errorf("%s: want %v, got %v", name, c.want, err)
		}
		var pe *ParseError
		if err != nil && !errors.As(err, &pe) {
			t.Errorf("%s: error %T is not a *ParseError", name, err)
		}
	}
	// Depth exactly at the limit is fine.
	if _, err := Parse([]byte(strings.Repeat("[", MaxDepth) + strings.Repeat("]", MaxDepth))); err != nil {
		t.Errorf("depth %d: %v", MaxDepth, err)
	}
	// Precision is lost beyond 2^53 exactly as JSON.parse loses it.
	got, err := Canonicalize([]byte(`9007199254740993`))
	if err != nil || string(got) != "9007199254740992" {
		t.Errorf("2^53+1: %s %v", got, err)
	}
}

func TestParseHugeInputIsRefusedWithoutReading(t *testing.T) {
	big := bytes.Repeat([]byte(" "), MaxDocumentBytes+1)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err := Parse(big)
	runtime.ReadMemStats(&after)
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("want ErrTooLarge, got %v", err)
	}
	if grown := after.TotalAlloc - before.TotalAlloc; grown > 1<<20 {
		t.Fatalf("refusing an oversized document allocated %d bytes", grown)
	}
	// A 100 MB bundle file is refused by ParseBundle the same way.
	if _, err := ParseBundle(append(big, make([]byte, 100<<20-len(big))...)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("100 MB bundle: %v", err)
	}
}

func TestDecodeErrorsNameTheField(t *testing.T) {
	v := readVector(t, "receipt.json")
	good := string(rawMember(t, v, "receipt"))
	cases := map[string]struct {
		mutate func(string) string
		path   string
	}{
		"wrong type":      {func(s string) string { return strings.Replace(s, `"eventCount":13`, `"eventCount":"13"`, 1) }, "receipt.eventCount"},
		"fraction count":  {func(s string) string { return strings.Replace(s, `"eventCount":13`, `"eventCount":13.5`, 1) }, "receipt.eventCount"},
		"missing member":  {func(s string) string { return strings.Replace(s, `"eventsHead":`, `"eventsHeadX":`, 1) }, "receipt.eventsHead"},
		"case mismatch":   {func(s string) string { return strings.Replace(s, `"runId":`, `"RunId":`, 1) }, "receipt.runId"},
		"null list":       {func(s string) string { return strings.Replace(s, `"modelsUsed":[]`, `"modelsUsed":null`, 1) }, "receipt.modelsUsed"},
		"nested type":     {func(s string) string { return strings.Replace(s, `"pool":"default"`, `"pool":7`, 1) }, "receipt.runner.pool"},
		"unknown version": {func(s string) string { return strings.Replace(s, `warrant.receipt.v1`, `warrant.receipt.v2`, 1) }, "receipt.version"},
	}
	for name, c := range cases {
		mutated := c.mutate(good)
		if mutated == good {
			t.Fatalf("%s: mutation did not apply", name)
		}
		_, err := ParseReceipt([]byte(mutated))
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Path != c.path {
			t.Errorf("%s: want a FieldError at %s, got %v", name, c.path, err)
		}
	}
	_, err := ParseReceipt([]byte(strings.Replace(good, `warrant.receipt.v1`, `warrant.receipt.v2`, 1)))
	if !errors.Is(err, ErrUnsupportedVersion) {
		t.Errorf("v2 receipt: want ErrUnsupportedVersion, got %v", err)
	}
	// A minor version and unknown members are accepted, and the unknown
	// member stays inside the hashed bytes.
	extended := strings.Replace(good, `"runId":`, `"futureField":{"x":1},"runId":`, 1)
	r, err := ParseReceipt([]byte(extended))
	if err != nil {
		t.Fatalf("unknown member: %v", err)
	}
	orig, _ := ParseReceipt([]byte(good))
	h1, _ := r.Hash()
	h2, _ := orig.Hash()
	if h1 == h2 {
		t.Fatal("an unknown member must change the hash: hashes are over the object as received")
	}
	out, _ := Canonical(r)
	if !bytes.Contains(out, []byte(`"futureField":{"x":1}`)) {
		t.Fatal("unknown member lost on re-encoding")
	}
}
