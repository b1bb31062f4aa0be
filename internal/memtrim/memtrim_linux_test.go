//go:build linux

package memtrim

import (
	"os"
	"strings"
	"testing"
)

func TestParseSmaps(t *testing.T) {
	const smaps = `00400000-00bb3000 r-xp 00000000 08:01 123 /usr/bin/redleader
Size:               7880 kB
Rss:                7624 kB
Anonymous:             0 kB
00bb3000-013d6000 r--p 007b3000 08:01 123 /usr/bin/redleader
Rss:                6848 kB
Anonymous:             4 kB
013d6000-01479000 rw-p 00fd6000 08:01 123 /usr/bin/redleader
Rss:                 300 kB
Anonymous:           200 kB
7f0000000000-7f0000100000 rw-p 00000000 00:00 0 
Rss:                1024 kB
VmFlags: rd wr mr mw me ac
garbage line
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0                          [stack]
Rss:                  12 kB
`
	got := parseSmaps([]byte(smaps))
	want := []mapping{
		{start: 0x400000, end: 0xbb3000, path: "/usr/bin/redleader", rss: 7624 << 10},
		{start: 0xbb3000, end: 0x13d6000, path: "/usr/bin/redleader", rss: 6848 << 10, anonymous: 4 << 10},
		{start: 0x13d6000, end: 0x1479000, writable: true, path: "/usr/bin/redleader", rss: 300 << 10, anonymous: 200 << 10},
		{start: 0x7f0000000000, end: 0x7f0000100000, writable: true, rss: 1024 << 10},
		{start: 0x7ffd00000000, end: 0x7ffd00021000, writable: true, path: "[stack]", rss: 12 << 10},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d mappings, want %d: %+v", len(got), len(want), got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("mapping %d = %+v, want %+v", i, got[i], want[i])
		}
	}
}

// TestExecutable releases the test binary's own read-only pages and runs
// on: the code it executes next faults back in, and the resident set of
// its executable's mappings drops.
func TestExecutable(t *testing.T) {
	before := exeRSS(t)
	released, err := Executable()
	if err != nil {
		t.Fatal(err)
	}
	after := exeRSS(t)
	t.Logf("executable resident: %d KiB before, %d KiB after; %d KiB released", before>>10, after>>10, released>>10)
	if released <= 0 || after >= before {
		t.Errorf("released %d bytes; resident %d → %d bytes: want fewer", released, before, after)
	}
	// Still running, with the code and data it needs.
	if s := strings.Repeat("ok", 3); s != "okokok" {
		t.Fatal(s)
	}
}

func exeRSS(t *testing.T) int64 {
	t.Helper()
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, m := range parseSmaps(b) {
		if m.path == exe && !m.writable {
			n += m.rss
		}
	}
	return n
}
