package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/redleader-p2p/redleader/peer/api"
	"github.com/redleader-p2p/redleader/peer/content"
	"github.com/redleader-p2p/redleader/peer/peertest"
)

// TestCacheCommands runs cache add, list and rm against an in-process
// agent, and their refusals.
func TestCacheCommands(t *testing.T) {
	a := peertest.StartAgent(t, peertest.Config(t, 0, peertest.Options{}), false)
	addr, dir := a.APIAddr(), a.DataDir()
	const bs = content.BlockSize
	file, data := testFile(t, 3*bs+500) // one segment of 4 blocks
	info := generate(t, data, content.PassphraseSecret("pw"))
	id := info.Segments[0].ID.String()
	tmp := t.TempDir()
	ci := filepath.Join(tmp, "file.ci")
	if code, _, stderr := runCLI(t, "hash", file, "-o", ci, "--secret-passphrase", "pw"); code != 0 {
		t.Fatalf("hash: %d %s", code, stderr)
	}
	write := func(name string, b []byte) string {
		p := filepath.Join(tmp, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	other := write("other.bin", append([]byte{data[0] ^ 1}, data[1:]...))
	short := write("short.bin", data[:len(data)-1])
	long := write("long.bin", append(append([]byte{}, data...), "tail"...))
	noToken := t.TempDir()
	wrongToken := t.TempDir()
	if err := os.WriteFile(filepath.Join(wrongToken, "api-token"), []byte("not-the-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	part, err := info.Slice(bs, 3*bs) // blocks 1 and 2
	if err != nil {
		t.Fatal(err)
	}
	partBytes, err := part.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	partCI := write("part.ci", partBytes)

	steps := []struct {
		name   string
		args   []string
		code   int
		stdout []string // substrings of stdout
		stderr string   // substring of stderr
	}{
		{"list empty", []string{"cache", "list"}, 0, []string{"0 segments, 0 B (cap 18.6 GiB)"}, ""},
		{"no content information", []string{"cache", "add", file}, exitConfig, nil, "needs --content-info CI or --secret-passphrase P"},
		{"both", []string{"cache", "add", file, "--content-info", ci, "--secret-passphrase", "pw"}, exitConfig, nil, "one of them"},
		{"no file", []string{"cache", "add", filepath.Join(tmp, "nope"), "--content-info", ci}, exitFail, nil, "no such file"},
		{"not a CI", []string{"cache", "add", file, "--content-info", file}, exitFail, nil, "content information " + file},
		{"file too short", []string{"cache", "add", short, "--content-info", ci}, exitFail, nil, "not this file?"},
		{"missing token", []string{"cache", "add", file, "--content-info", ci, "--data-dir", noToken}, exitFail, nil,
			"read api token"},
		{"wrong token", []string{"cache", "add", file, "--content-info", ci, "--data-dir", wrongToken}, exitFail, nil,
			"answered 401: missing or wrong API token"},
		{"wrong token rm", []string{"cache", "rm", id, "--data-dir", wrongToken}, exitFail, nil,
			"answered 401: missing or wrong API token"},
		{"other file", []string{"cache", "add", other, "--content-info", ci}, exitFail, nil,
			"answered 422: add content: bytes 0-65535 (block 0 of segment 0, " + id + "): content does not match its content information: block hash mismatch (nothing was added to the cache)"},
		{"list still empty", []string{"cache", "list"}, 0, []string{"0 segments"}, ""},
		{"range", []string{"cache", "add", file, "--content-info", partCI}, 0,
			[]string{id + "  0       2/4", "128.0 KiB verified in 2 blocks, 2 of them new"}, ""},
		{"add", []string{"cache", "add", file, "--content-info", ci}, 0,
			[]string{id + "  0       4/4     192.5 KiB", "192.5 KiB verified in 4 blocks, 2 of them new"}, ""},
		{"add with a passphrase", []string{"cache", "add", file, "--secret-passphrase", "pw"}, 0,
			[]string{id, "4 blocks, 0 of them new"}, ""},
		{"longer file", []string{"cache", "add", long, "--content-info", ci}, 0, []string{"0 of them new"},
			"4 bytes after the 197108 its content information describes; they are not added"},
		{"list", []string{"cache", "list"}, 0, []string{id + "  0       4/4     192.5 KiB", "1 segments"}, ""},
		{"rm", []string{"cache", "rm", id}, 0, []string{"removed " + id}, ""},
		{"rm again and a bad ID", []string{"cache", "rm", id, "xyz"}, exitFail, nil,
			id + ": not in the cache; xyz: agent at " + addr + " answered 400: segment must be 64 hex digits"},
		{"rm nothing", []string{"cache", "rm"}, exitConfig, nil, "one or more SEGMENT_IDs"},
	}
	for _, s := range steps {
		args := append(s.args, "--api", addr)
		if !strings.Contains(strings.Join(s.args, " "), "--data-dir") {
			args = append(args, "--data-dir", dir)
		}
		code, stdout, stderr := runCLI(t, args...)
		if code != s.code || !strings.Contains(stderr, s.stderr) {
			t.Errorf("%s: exit %d, stderr %q; want %d and %q", s.name, code, stderr, s.code, s.stderr)
			continue
		}
		for _, want := range s.stdout {
			if !strings.Contains(stdout, want) {
				t.Errorf("%s: stdout lacks %q:\n%s", s.name, want, stdout)
			}
		}
	}

	// --json
	if code, _, stderr := runCLI(t, "cache", "add", file, "--content-info", ci, "--api", addr, "--data-dir", dir); code != 0 {
		t.Fatal(stderr)
	}
	code, stdout, stderr := runCLI(t, "cache", "list", "--json", "--api", addr)
	var l api.CacheListResponse
	if code != 0 || json.Unmarshal([]byte(stdout), &l) != nil {
		t.Fatalf("list --json: %d %q %q", code, stdout, stderr)
	}
	want := api.CacheSegment{Segment: id, Length: uint32(len(data)), Blocks: 4, TotalBlocks: 4, Bytes: int64(len(data))}
	if len(l.Segments) != 1 || l.Segments[0] != want || l.Bytes < want.Bytes {
		t.Errorf("list --json: %+v, want %+v", l, want)
	}
}

func TestSizeString(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 197108: "192.5 KiB",
		20 << 30: "20.0 GiB", 3 << 40: "3.0 TiB", 5 << 50: "5.0 PiB"} {
		if got := sizeString(n); got != want {
			t.Errorf("sizeString(%d) = %q, want %q", n, got, want)
		}
	}
}
