package cache

import (
	"bufio"
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redleader-p2p/redleader/peer/content"
)

// Environment of the crash helper process.
const (
	crashDirEnv  = "REDLEADER_CACHE_CRASH_DIR"
	crashSeedEnv = "REDLEADER_CACHE_CRASH_SEED"
)

// crashSegments are the segments the crash helper writes: six segments of
// ten blocks, the last one short.
func crashSegments(tb testing.TB) []testSeg {
	segs := make([]testSeg, 6)
	for i := range segs {
		segs[i] = genSegment(tb, uint64(1000+i), 9*content.BlockSize+4321)
	}
	return segs
}

// TestCrashHelper is not a test: TestKill9DuringWrites runs the test
// binary with crashDirEnv set to make it a writer that it kills.
func TestCrashHelper(t *testing.T) {
	dir := os.Getenv(crashDirEnv)
	if dir == "" {
		t.Skip("helper process of TestKill9DuringWrites")
	}
	seed, _ := strconv.ParseUint(os.Getenv(crashSeedEnv), 10, 64)
	crashWriter(t, dir, seed)
}

// crashWriter stores, removes and re-adds blocks of crashSegments with
// fsync on, forever, reporting on stdout "put S I" after each block is
// stored and "rm S" before each removal.
func crashWriter(t *testing.T, dir string, seed uint64) {
	segs := crashSegments(t)
	c, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(seed, 77))
	// addPartial describes a segment with only some block hashes, as a
	// range request's content information would; later adds extend it.
	addPartial := func(ts testSeg) {
		d := cloneSegment(ts.seg)
		d.BlockHashes = d.BlockHashes[:1+rng.IntN(len(d.BlockHashes))]
		if err := c.AddSegment(&d); err != nil {
			t.Fatal(err)
		}
	}
	for _, ts := range segs {
		if _, ok := c.Describe(ts.seg.ID); !ok {
			addPartial(ts)
		}
	}
	fmt.Println("ready")
	for {
		s := rng.IntN(len(segs))
		ts := segs[s]
		d, _ := c.Describe(ts.seg.ID)
		var missing []int
		for i := range d.BlockHashes {
			if !c.Has(ts.seg.ID, i) {
				missing = append(missing, i)
			}
		}
		switch r := rng.Float64(); {
		case r < 0.05 || len(missing) == 0 && len(d.BlockHashes) == ts.seg.BlockCount():
			fmt.Printf("rm %d\n", s)
			if err := c.Remove(ts.seg.ID); err != nil {
				t.Fatal(err)
			}
			addPartial(ts)
		case r < 0.15 || len(missing) == 0:
			if err := c.AddSegment(ts.seg); err != nil {
				t.Fatal(err)
			}
		default:
			i := missing[rng.IntN(len(missing))]
			if err := c.PutBlock(ts.seg.ID, i, ts.block(i)); err != nil {
				t.Fatal(err)
			}
			fmt.Printf("put %d %d\n", s, i)
		}
	}
}

// TestKill9DuringWrites kills a writing process at random moments, several
// times over the same cache directory, and checks after each kill that the
// cache opens with every visible block valid, nothing reported corrupt, and
// every block the writer reported stored still held.
func TestKill9DuringWrites(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("needs SIGKILL")
	}
	rounds := 8
	if testing.Short() {
		rounds = 3
	}
	dir := t.TempDir()
	segs := crashSegments(t)
	stored := make([]map[int]bool, len(segs)) // blocks the writer reported stored
	for i := range stored {
		stored[i] = make(map[int]bool)
	}
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	totalPuts := 0
	for round := range rounds {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashHelper$", "-test.count=1")
		cmd.Env = append(os.Environ(), crashDirEnv+"="+dir, crashSeedEnv+"="+strconv.Itoa(round))
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := make(chan string)
		go func() {
			defer close(lines)
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				lines <- sc.Text()
			}
		}()
		// Wait for the writer to start (bounded, so a broken helper
		// cannot hang the test), then kill it after a random delay.
		select {
		case l, ok := <-lines:
			if !ok || l != "ready" {
				_ = cmd.Process.Kill()
				_ = cmd.Wait()
				t.Fatalf("helper did not start: %q %v\n%s", l, ok, stderr.String())
			}
		case <-time.After(time.Minute):
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			t.Fatalf("helper did not start\n%s", stderr.String())
		}
		delay := time.Duration(rng.IntN(300)) * time.Millisecond
		kill := time.AfterFunc(delay, func() { _ = cmd.Process.Kill() }) // SIGKILL
		puts := 0
		for l := range lines {
			var s, i int
			switch {
			case strings.HasPrefix(l, "rm "):
				if _, err := fmt.Sscanf(l, "rm %d", &s); err != nil {
					t.Fatalf("helper said %q", l)
				}
				stored[s] = make(map[int]bool)
			case strings.HasPrefix(l, "put "):
				if _, err := fmt.Sscanf(l, "put %d %d", &s, &i); err != nil {
					t.Fatalf("helper said %q", l)
				}
				stored[s][i] = true
				puts++
			}
		}
		kill.Stop()
		err = cmd.Wait()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != -1 {
			t.Fatalf("helper ended with %v, not killed\n%s", err, stderr.String())
		}
		totalPuts += puts

		c, err := Open(dir, Options{})
		if err != nil {
			t.Fatal(err)
		}
		st := c.Stats()
		if st.CorruptDropped != 0 || st.BadSegments != 0 {
			t.Fatalf("round %d: after kill -9: %+v", round, st)
		}
		for s, ts := range segs {
			held := checkHeld(t, c, ts) // every visible block verifies
			for i := range stored[s] {
				if !c.Has(ts.seg.ID, i) {
					t.Fatalf("round %d: block %d of segment %d was stored but is lost (held %v)", round, i, s, held)
				}
			}
		}
		t.Logf("round %d: killed after %v, %d blocks stored, %d held after restart", round, delay, puts, st.Blocks)
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if totalPuts == 0 {
		t.Fatal("the helper never stored a block")
	}
}
