package fetch

import (
	"bytes"
	"crypto/md5"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"net/http"
	"strings"
	"testing"
)

var (
	sumA   = sha256.Sum256([]byte("a"))
	sumA5  = sha512.Sum512([]byte("a"))
	md5A   = md5.Sum([]byte("a"))
	b64A   = base64.StdEncoding.EncodeToString(sumA[:])
	b64A5  = base64.StdEncoding.EncodeToString(sumA5[:])
	b64MD5 = base64.StdEncoding.EncodeToString(md5A[:])
)

// TestParseReprDigest: RFC 9530 Repr-Digest as a Structured Fields
// dictionary.
func TestParseReprDigest(t *testing.T) {
	tests := []struct {
		name    string
		lines   []string
		want    map[Algo][]byte
		wantErr bool
	}{
		{"none", nil, map[Algo][]byte{}, false},
		{"sha-256", []string{"sha-256=:" + b64A + ":"}, map[Algo][]byte{SHA256: sumA[:]}, false},
		{"RFC 9530 example", []string{"sha-256=:RK/0qy18MlBSVnWgjwz6lZEWjP/lF5HF9bvEF8FabDg=:"},
			map[Algo][]byte{SHA256: mustB64(t, "RK/0qy18MlBSVnWgjwz6lZEWjP/lF5HF9bvEF8FabDg=")}, false},
		{"two algorithms, two lines", []string{"sha-512=:" + b64A5 + ":", "sha-256=:" + b64A + ":"},
			map[Algo][]byte{SHA256: sumA[:], SHA512: sumA5[:]}, false},
		{"spaces and params", []string{"  unixsum=:AAAA:;x=1 ,\tsha-256=:" + b64A + ":;p=\"q\"  "}, map[Algo][]byte{SHA256: sumA[:]}, false},
		{"unknown and non-bytes values skipped", []string{`adler=?1, crc32c=12, md5="x", sha-256=(:` + b64A + `:), foo`}, map[Algo][]byte{}, false},
		{"deprecated md5", []string{"md5=:" + b64MD5 + ":"}, map[Algo][]byte{MD5: md5A[:]}, false},
		{"wrong length skipped", []string{"sha-256=:" + b64MD5 + ":"}, map[Algo][]byte{}, false},
		{"later duplicate wins", []string{"sha-256=:" + b64MD5 + ":, sha-256=:" + b64A + ":"}, map[Algo][]byte{SHA256: sumA[:]}, false},
		{"unpadded base64", []string{"sha-256=:" + strings.TrimRight(b64A, "=") + ":"}, map[Algo][]byte{SHA256: sumA[:]}, false},
		{"dates and display strings", []string{`a=@1659578233, b=%"f%c3%bc", sha-256=:` + b64A + `:`}, map[Algo][]byte{SHA256: sumA[:]}, false},
		{"decimal", []string{"a=1.5, b=-0.125, sha-256=:" + b64A + ":"}, map[Algo][]byte{SHA256: sumA[:]}, false},
		{"RFC 3230 syntax", []string{"SHA-256=" + b64A}, nil, true},
		{"upper-case key", []string{"SHA-256=:" + b64A + ":"}, nil, true},
		{"unterminated byte sequence", []string{"sha-256=:" + b64A}, nil, true},
		{"bad base64", []string{"sha-256=:a!b:"}, nil, true},
		{"trailing comma", []string{"sha-256=:" + b64A + ":,"}, nil, true},
		{"missing comma", []string{"sha-256=:" + b64A + ": a=1"}, nil, true},
		{"bad string escape", []string{`a="\x", sha-256=:` + b64A + `:`}, nil, true},
		{"integer too long", []string{"a=1234567890123456"}, nil, true},
		{"decimal too precise", []string{"a=1.2345"}, nil, true},
		{"bad boolean", []string{"a=?2"}, nil, true},
		{"unterminated inner list", []string{"a=(1 2"}, nil, true},
		{"bad display string", []string{`a=%"%C3"`}, nil, true},
		{"empty line between", []string{"sha-256=:" + b64A + ":", ""}, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseReprDigest(tt.lines)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("parsed %v, want an error", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			equalSums(t, got, tt.want)
		})
	}
}

func mustB64(t *testing.T, s string) []byte {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func equalSums(t *testing.T, got, want map[Algo][]byte) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for a, w := range want {
		if !bytes.Equal(got[a], w) {
			t.Fatalf("%s: got %x, want %x", a, got[a], w)
		}
	}
}

// TestParseDigest: RFC 3230 Digest, RFC 5843 algorithms, hex tolerated.
func TestParseDigest(t *testing.T) {
	tests := []struct {
		name    string
		lines   []string
		want    map[Algo][]byte
		wantErr bool
	}{
		{"none", nil, map[Algo][]byte{}, false},
		{"SHA-256", []string{"SHA-256=" + b64A}, map[Algo][]byte{SHA256: sumA[:]}, false},
		{"case and spaces", []string{" sha-256 = " + b64A + " , MD5=" + b64MD5}, map[Algo][]byte{SHA256: sumA[:], MD5: md5A[:]}, false},
		{"SHA-512 and unknown", []string{"UNIXsum=30637", "SHA-512=" + b64A5}, map[Algo][]byte{SHA512: sumA5[:]}, false},
		{"hex", []string{"SHA-256=" + hex.EncodeToString(sumA[:])}, map[Algo][]byte{SHA256: sumA[:]}, false},
		{"wrong length skipped", []string{"SHA-256=" + b64MD5}, map[Algo][]byte{}, false},
		{"not base64 skipped", []string{"SHA-256=!!!"}, map[Algo][]byte{}, false},
		{"empty elements", []string{",,SHA-256=" + b64A + ","}, map[Algo][]byte{SHA256: sumA[:]}, false},
		{"no =", []string{"SHA-256"}, nil, true},
		{"no name", []string{"=" + b64A}, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseDigest(tt.lines)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("parsed %v, want an error", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			equalSums(t, got, tt.want)
		})
	}
}

// TestParseContentMD5: RFC 1864.
func TestParseContentMD5(t *testing.T) {
	tests := []struct {
		in   string
		want []byte
	}{
		{b64MD5, md5A[:]},
		{" " + b64MD5 + " ", md5A[:]},
		{b64A, nil},                           // 32 bytes
		{strings.TrimRight(b64MD5, "="), nil}, // unpadded
		{hex.EncodeToString(md5A[:]), nil},
		{"", nil},
	}
	for _, tt := range tests {
		got, err := ParseContentMD5(tt.in)
		if (err == nil) != (tt.want != nil) || !bytes.Equal(got, tt.want) {
			t.Errorf("ParseContentMD5(%q) = %x, %v; want %x", tt.in, got, err, tt.want)
		}
	}
}

// TestHeaderParsers: ETag, Accept-Ranges, Content-Range.
func TestHeaderParsers(t *testing.T) {
	for _, tt := range []struct {
		in         string
		tag        string
		strong, ok bool
	}{
		{`"abc"`, `"abc"`, true, true},
		{` W/"abc" `, `W/"abc"`[2:], false, true},
		{`""`, `""`, true, true},
		{`abc`, "", false, false},
		{`"a"b"`, "", false, false},
		{`"a b"`, "", false, false},
		{`"a`, "", false, false},
		{`w/"a"`, "", false, false},
		{"\"\x80\"", "\"\x80\"", true, true},
	} {
		tag, strong, ok := parseETag(tt.in)
		if tag != tt.tag || strong != tt.strong || ok != tt.ok {
			t.Errorf("parseETag(%q) = %q %v %v, want %q %v %v", tt.in, tag, strong, ok, tt.tag, tt.strong, tt.ok)
		}
	}
	for _, tt := range []struct {
		lines       []string
		bytes, none bool
	}{
		{nil, false, false},
		{[]string{"bytes"}, true, false},
		{[]string{" Bytes , other"}, true, false},
		{[]string{"none"}, false, true},
		{[]string{"none", "bytes"}, true, false},
	} {
		b, n := parseAcceptRanges(tt.lines)
		if b != tt.bytes || n != tt.none {
			t.Errorf("parseAcceptRanges(%q) = %v %v, want %v %v", tt.lines, b, n, tt.bytes, tt.none)
		}
	}
	for _, tt := range []struct {
		in                 string
		first, last, total int64
		ok                 bool
	}{
		{"bytes 0-99/1000", 0, 99, 1000, true},
		{"bytes 10-10/*", 10, 10, -1, true},
		{"Bytes  5-9/10", 5, 9, 10, true},
		{"bytes 5-10/10", 0, 0, 0, false},
		{"bytes 9-5/10", 0, 0, 0, false},
		{"bytes */10", 0, 0, 0, false},
		{"bytes -1-5/10", 0, 0, 0, false},
		{"bytes +1-5/10", 0, 0, 0, false},
		{"bytes 0-99999999999999999999/*", 0, 0, 0, false},
		{"items 0-1/2", 0, 0, 0, false},
		{"bytes 0-1", 0, 0, 0, false},
	} {
		f, l, tot, ok := parseContentRange(tt.in)
		if f != tt.first || l != tt.last || tot != tt.total || ok != tt.ok {
			t.Errorf("parseContentRange(%q) = %d %d %d %v, want %d %d %d %v", tt.in, f, l, tot, ok, tt.first, tt.last, tt.total, tt.ok)
		}
	}
}

// TestAnchorFrom: preference and conflicts across headers.
func TestAnchorFrom(t *testing.T) {
	other := sha256.Sum256([]byte("b"))
	tests := []struct {
		name       string
		h          http.Header
		contentMD5 bool
		want       string // "algo header", "" for none, "conflict"
	}{
		{"none", http.Header{}, true, ""},
		{"repr before digest", http.Header{"Repr-Digest": {"sha-256=:" + b64A + ":"}, "Digest": {"SHA-256=" + b64A}}, true, "sha-256 Repr-Digest"},
		{"sha-256 before sha-512", http.Header{"Repr-Digest": {"sha-512=:" + b64A5 + ":"}, "Digest": {"SHA-256=" + b64A}}, true, "sha-256 Digest"},
		{"sha-512", http.Header{"Repr-Digest": {"sha-512=:" + b64A5 + ":"}}, true, "sha-512 Repr-Digest"},
		{"content-md5 on a whole body", http.Header{"Content-Md5": {b64MD5}}, true, "md5 Content-MD5"},
		{"content-md5 on a part", http.Header{"Content-Md5": {b64MD5}}, false, ""},
		{"two content-md5", http.Header{"Content-Md5": {b64MD5, b64MD5}}, true, ""},
		{"conflict", http.Header{"Repr-Digest": {"sha-256=:" + b64A + ":"}, "Digest": {"SHA-256=" + base64.StdEncoding.EncodeToString(other[:])}}, true, "conflict"},
		{"md5 conflict", http.Header{"Content-Md5": {b64MD5}, "Digest": {"MD5=" + base64.StdEncoding.EncodeToString(make([]byte, 16))}}, true, "conflict"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := anchorFrom(tt.h, tt.contentMD5)
			got := ""
			switch {
			case err != nil:
				wantErr(t, err, ErrDigestConflict)
				got = "conflict"
			case a != nil:
				got = string(a.Algo) + " " + a.Header
			}
			if got != tt.want {
				t.Fatalf("anchor %q, want %q", got, tt.want)
			}
		})
	}
}

// FuzzReprDigest: the Structured Fields parser never panics, and what it
// returns are digests of the right length.
func FuzzReprDigest(f *testing.F) {
	for _, s := range []string{
		"sha-256=:" + b64A + ":", "sha-512=:" + b64A5 + ":, sha-256=:" + b64A + ":;x=1",
		`a=(1 "s" tok :AA==: ?1);p, b=@-5, c=%"%c3%bc", d=-1.25, e`, "a=(", `a="\"`, ":", "sha-256=::",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		m, err := ParseReprDigest([]string{s})
		if err != nil {
			return
		}
		for a, sum := range m {
			if a.size() == 0 || len(sum) != a.size() {
				t.Fatalf("%q: %s digest of %d bytes", s, a, len(sum))
			}
		}
	})
}

// FuzzDigest: Digest and Content-MD5 never panic; what they return has
// the algorithm's length.
func FuzzDigest(f *testing.F) {
	for _, s := range []string{"SHA-256=" + b64A, "md5=" + b64MD5 + ",sha-512=" + b64A5, "a", "=", ",,", b64MD5} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if m, err := ParseDigest([]string{s}); err == nil {
			for a, sum := range m {
				if len(sum) != a.size() {
					t.Fatalf("%q: %s digest of %d bytes", s, a, len(sum))
				}
			}
		}
		if sum, err := ParseContentMD5(s); err == nil && len(sum) != md5.Size {
			t.Fatalf("%q: Content-MD5 of %d bytes", s, len(sum))
		}
		_, _ = anchorFrom(http.Header{"Repr-Digest": {s}, "Digest": {s}, "Content-Md5": {s}}, true)
	})
}

// FuzzResponseHeaders: the other parsers of origin headers never panic
// and keep their invariants.
func FuzzResponseHeaders(f *testing.F) {
	for _, s := range []string{"bytes 0-99/1000", "bytes 1-1/*", `W/"x"`, `"x"`, "bytes, none", "Version=1.1, ContentLength=12"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if first, last, total, ok := parseContentRange(s); ok && (first < 0 || last < first || total != -1 && last >= total) {
			t.Fatalf("%q: range %d-%d/%d", s, first, last, total)
		}
		if tag, _, ok := parseETag(s); ok && (len(tag) < 2 || tag[0] != '"' || tag[len(tag)-1] != '"' || strings.ContainsAny(tag, " \t")) {
			t.Fatalf("%q: tag %q", s, tag)
		}
		h := http.Header{"Content-Length": {s}, headerPeerDist: {s}}
		if n := parseLength(h); n < -1 {
			t.Fatalf("%q: length %d", s, n)
		}
		if n := peerDistLength(h); n < -1 {
			t.Fatalf("%q: peerdist length %d", s, n)
		}
		parseAcceptRanges([]string{s})
	})
}
