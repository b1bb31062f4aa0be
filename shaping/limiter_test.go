package shaping

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math"
	"sync"
	"testing"
	"testing/iotest"
	"time"
)

// bytesPerSec is the Rate of n bytes per second.
func bytesPerSec(n float64) Rate { return Rate(n * 8) }

func TestBurstFor(t *testing.T) {
	tests := []struct {
		rate     Rate
		minBurst int
		want     int
	}{
		{256e3, DefaultMinBurst, DefaultMinBurst}, // 32 kB/s: 1600 B in 50 ms
		{bytesPerSec(1e6), 1000, 50000},
		{bytesPerSec(8e6), DefaultMinBurst, 400000},
		{1e9, DefaultMinBurst, 6250000},
		{1e12, DefaultMinBurst, maxBurst},
		{8, 1024, 1024},
		{1, 1, 1},
	}
	for _, tt := range tests {
		if got := burstFor(tt.rate, tt.minBurst); got != tt.want {
			t.Errorf("burstFor(%v, %d) = %d, want %d", tt.rate, tt.minBurst, got, tt.want)
		}
	}
}

func TestNewLimiterBurst(t *testing.T) {
	tests := []struct {
		rate         Rate
		minBurst     int
		wantBurst    int
		wantMinBurst int
	}{
		{Unlimited, 0, 0, DefaultMinBurst},
		{256e3, 0, DefaultMinBurst, DefaultMinBurst},
		{256e3, -5, DefaultMinBurst, DefaultMinBurst},
		{bytesPerSec(1e6), 1000, 50000, 1000},
		{bytesPerSec(8e6), 1 << 20, 1 << 20, 1 << 20},
		{-3, 1000, 0, 1000}, // a negative rate is unlimited
	}
	for _, tt := range tests {
		l := NewLimiter(tt.rate, tt.minBurst)
		if l.Burst() != tt.wantBurst || l.MinBurst() != tt.wantMinBurst {
			t.Errorf("NewLimiter(%v, %d): burst %d, min burst %d; want %d, %d",
				tt.rate, tt.minBurst, l.Burst(), l.MinBurst(), tt.wantBurst, tt.wantMinBurst)
		}
		if want := max(tt.rate, 0); l.Rate() != want {
			t.Errorf("NewLimiter(%v, %d).Rate() = %v, want %v", tt.rate, tt.minBurst, l.Rate(), want)
		}
	}
}

func TestReserveAt(t *testing.T) {
	ms := time.Millisecond
	type step struct {
		off       time.Duration // since t0
		n         int
		wantPiece int
		wantDelay time.Duration // from off
	}
	tests := []struct {
		name     string
		rate     Rate
		minBurst int
		steps    []step
	}{
		{"unlimited passes any n at once", Unlimited, 1000, []step{
			{0, 1 << 30, 1 << 30, 0},
			{0, 1 << 30, 1 << 30, 0},
		}},
		{"1 MB/s, burst 50 kB", bytesPerSec(1e6), 1000, []step{
			{0, 50000, 50000, 0},
			{0, 1000, 1000, 1 * ms},
			{0, 100000, 50000, 51 * ms}, // cut to the burst
			{10 * ms, 1000, 1000, 42 * ms},
			{200 * ms, 50000, 50000, 0}, // refilled
			{200 * ms, 50000, 50000, 50 * ms},
		}},
		{"tokens beyond the burst are not kept", bytesPerSec(1e6), 1000, []step{
			{0, 50000, 50000, 0},
			{10 * time.Second, 50000, 50000, 0},
			{10 * time.Second, 1000, 1000, 1 * ms},
		}},
		{"minimum burst above the rate's window", bytesPerSec(1000), 4000, []step{
			{0, 4000, 4000, 0},
			{0, 5000, 4000, 4 * time.Second},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := NewLimiter(tt.rate, tt.minBurst)
			t0 := time.Now()
			for i, s := range tt.steps {
				now := t0.Add(s.off)
				piece, tk := l.reserveAt(now, s.n)
				if piece != s.wantPiece {
					t.Errorf("step %d: piece %d, want %d", i, piece, s.wantPiece)
				}
				if got := tk.at.Sub(now); !near(got, s.wantDelay) {
					t.Errorf("step %d: delay %v, want %v", i, got, s.wantDelay)
				}
			}
		})
	}
}

// near allows the float rounding of x/time/rate's token arithmetic.
func near(got, want time.Duration) bool {
	return math.Abs(float64(got-want)) <= float64(time.Microsecond)
}

func TestSetRateRescalesWaits(t *testing.T) {
	ms := time.Millisecond
	type change struct {
		off  time.Duration
		rate Rate
	}
	tests := []struct {
		name    string
		changes []change
		wantAt  time.Duration // the waiter's rescaled due time, since t0
		// A reservation of 1000 B made right after the last change is
		// due at wantNext: after the waiter, at the new rate.
		wantNext time.Duration
	}{
		{"no change", nil, 50 * ms, 51 * ms},
		{"twice as fast", []change{{10 * ms, bytesPerSec(2e6)}}, 30 * ms, 30500 * time.Microsecond},
		{"half as fast", []change{{10 * ms, bytesPerSec(5e5)}}, 90 * ms, 92 * ms},
		{"unlimited ends the wait", []change{{10 * ms, Unlimited}}, 10 * ms, 10 * ms},
		{"two changes", []change{{10 * ms, bytesPerSec(2e6)}, {20 * ms, bytesPerSec(5e5)}}, 60 * ms, 62 * ms},
		{"change after the wait is due", []change{{60 * ms, bytesPerSec(5e5)}}, 50 * ms, 60 * ms},
		{"same rate is no change", []change{{10 * ms, bytesPerSec(1e6)}}, 50 * ms, 51 * ms},
		// The unlimited period forgives the debt: the finite rate after
		// it starts with a full bucket (50 kB at 1 MB/s).
		{"unlimited and back", []change{{10 * ms, Unlimited}, {10 * ms, bytesPerSec(1e6)}}, 10 * ms, 10 * ms},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := NewLimiter(bytesPerSec(1e6), 1000) // burst 50 kB
			t0 := time.Now()
			if _, tk := l.reserveAt(t0, 50000); !tk.at.Equal(t0) {
				t.Fatalf("a full bucket waits %v", tk.at.Sub(t0))
			}
			_, waiter := l.reserveAt(t0, 50000)
			if !near(waiter.at.Sub(t0), 50*ms) {
				t.Fatalf("waiter due after %v, want 50ms", waiter.at.Sub(t0))
			}
			last := t0
			for _, c := range tt.changes {
				last = t0.Add(c.off)
				l.setRateAt(last, c.rate)
			}
			l.mu.Lock()
			got := l.rescale(waiter)
			l.mu.Unlock()
			if !near(got.at.Sub(t0), tt.wantAt) {
				t.Errorf("waiter due after %v, want %v", got.at.Sub(t0), tt.wantAt)
			}
			if _, next := l.reserveAt(last, 1000); !near(next.at.Sub(t0), tt.wantNext) {
				t.Errorf("next reservation due after %v, want %v", next.at.Sub(t0), tt.wantNext)
			}
		})
	}
}

func TestSetRateWakesOnlyOnChange(t *testing.T) {
	l := NewLimiter(256e3, 0)
	g := l.cur
	l.SetRate(256e3)
	select {
	case <-g.done:
		t.Fatal("setting the rate in force woke the waiters")
	default:
	}
	l.SetRate(512e3)
	select {
	case <-g.done:
	default:
		t.Fatal("a rate change did not wake the waiters")
	}
	if l.Rate() != 512e3 || l.Burst() != DefaultMinBurst {
		t.Errorf("rate %v burst %d, want 512kbit %d", l.Rate(), l.Burst(), DefaultMinBurst)
	}
}

// waitWaiters waits until n goroutines are asleep in l's WaitN.
func waitWaiters(t *testing.T, l *Limiter, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for l.waiters() != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines waiting, want %d", l.waiters(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

type readResult struct {
	b   []byte
	err error
}

func TestSetRateUnblocksReader(t *testing.T) {
	for _, to := range []Rate{Unlimited, 800e6} {
		t.Run(to.String(), func(t *testing.T) {
			// 1 B/s: the second 1 KiB read would wait 17 minutes.
			l := NewLimiter(8, 1024)
			data := bytes.Repeat([]byte("redleader"), 400)
			done := make(chan readResult, 1)
			go func() {
				b, err := io.ReadAll(NewReader(t.Context(), bytes.NewReader(data), l))
				done <- readResult{b, err}
			}()
			waitWaiters(t, l, 1)
			l.SetRate(to)
			select {
			case res := <-done:
				if res.err != nil || !bytes.Equal(res.b, data) {
					t.Fatalf("read %d bytes, %v; want %d bytes", len(res.b), res.err, len(data))
				}
			case <-time.After(10 * time.Second):
				t.Fatal("the reader stayed blocked after the rate change")
			}
		})
	}
}

func TestWANRoleUnblocksReader(t *testing.T) {
	w := NewWAN(Unlimited, 8, 1024)
	data := make([]byte, 4096)
	done := make(chan readResult, 1)
	go func() {
		b, err := io.ReadAll(NewReader(t.Context(), bytes.NewReader(data), w.Limiter()))
		done <- readResult{b, err}
	}()
	waitWaiters(t, w.Limiter(), 1)
	w.SetRole(true)
	select {
	case res := <-done:
		if res.err != nil || len(res.b) != len(data) {
			t.Fatalf("read %d bytes, %v; want %d bytes", len(res.b), res.err, len(data))
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the reader stayed at the peer rate after SetRole(true)")
	}
}

func TestCancelUnblocks(t *testing.T) {
	t.Run("reader", func(t *testing.T) {
		l := NewLimiter(8, 1024)
		ctx, cancel := context.WithCancel(t.Context())
		r := NewReader(ctx, bytes.NewReader(make([]byte, 4096)), l)
		type res struct {
			n   int
			err error
		}
		done := make(chan res, 1)
		go func() {
			var total int
			buf := make([]byte, 4096)
			for {
				n, err := r.Read(buf)
				total += n
				if err != nil {
					done <- res{total, err}
					return
				}
			}
		}()
		waitWaiters(t, l, 1)
		cancel()
		select {
		case got := <-done:
			// The first KiB passed on the full bucket; the second was read
			// and is returned with the error.
			if !errors.Is(got.err, context.Canceled) || got.n != 2048 {
				t.Errorf("read %d bytes, %v; want 2048, context.Canceled", got.n, got.err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the reader stayed blocked after cancel")
		}
		if n, err := r.Read(make([]byte, 10)); n != 0 || !errors.Is(err, context.Canceled) {
			t.Errorf("Read after cancel = %d, %v", n, err)
		}
	})
	t.Run("writer", func(t *testing.T) {
		l := NewLimiter(8, 1024)
		ctx, cancel := context.WithCancel(t.Context())
		var dst bytes.Buffer
		w := NewWriter(ctx, &dst, l)
		type res struct {
			n   int
			err error
		}
		done := make(chan res, 1)
		go func() {
			n, err := w.Write(make([]byte, 4096))
			done <- res{n, err}
		}()
		waitWaiters(t, l, 1)
		cancel()
		select {
		case got := <-done:
			// The first KiB passed; the second was waited for, not written.
			if !errors.Is(got.err, context.Canceled) || got.n != 1024 || dst.Len() != 1024 {
				t.Errorf("wrote %d bytes (%d reached dst), %v; want 1024, context.Canceled", got.n, dst.Len(), got.err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the writer stayed blocked after cancel")
		}
	})
	t.Run("cancel gives the piece back", func(t *testing.T) {
		l := NewLimiter(8, 1024)
		if err := l.WaitN(t.Context(), 1024); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- l.WaitN(ctx, 1024) }()
		waitWaiters(t, l, 1)
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Fatalf("WaitN = %v, want context.Canceled", err)
		}
		// Without the give-back the next KiB would be due in ~2048 s.
		now := time.Now()
		if _, tk := l.reserveAt(now, 1024); tk.at.Sub(now) > 1100*time.Second {
			t.Errorf("after cancel the next KiB waits %v, want at most ~1024s", tk.at.Sub(now))
		}
	})
}

func TestWaitNLargerThanBurst(t *testing.T) {
	l := NewLimiter(bytesPerSec(1e7), 1024) // burst 500 kB
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := l.WaitN(ctx, 4*l.Burst()); err != nil {
		t.Fatalf("WaitN(4 × burst) = %v", err)
	}
	var nilLimiter *Limiter
	if err := nilLimiter.WaitN(ctx, 1<<40); err != nil || nilLimiter.Rate() != Unlimited {
		t.Fatalf("nil Limiter: WaitN = %v, rate %v", err, nilLimiter.Rate())
	}
}

// TestReaderEnforcesRate checks only the lower bound, which a token bucket
// guarantees on any machine: n bytes take at least (n - burst) / rate.
func TestReaderEnforcesRate(t *testing.T) {
	const bps = 4e6
	l := NewLimiter(bytesPerSec(bps), DefaultMinBurst) // burst 200 kB
	data := make([]byte, 1e6)
	for i := range data {
		data[i] = byte(i * 7)
	}
	start := time.Now()
	got, err := io.ReadAll(NewReader(t.Context(), bytes.NewReader(data), l))
	elapsed := time.Since(start)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read %d bytes, %v", len(got), err)
	}
	minimum := time.Duration(float64(len(data)-l.Burst()) / bps * float64(time.Second))
	if elapsed < minimum {
		t.Errorf("read %d bytes at %v in %v, faster than the minimum %v", len(data), l.Rate(), elapsed, minimum)
	}
}

func TestReaderMatchesSource(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789abcdef"), 20000) // 320 kB
	for _, r := range []Rate{Unlimited, 8e12} {
		t.Run(r.String(), func(t *testing.T) {
			l := NewLimiter(r, 4096)
			if err := iotest.TestReader(NewReader(t.Context(), bytes.NewReader(data), l), data); err != nil {
				t.Error(err)
			}
		})
	}
}

// sizes records the size of every Write.
type sizes struct {
	bytes.Buffer
	writes []int
}

func (s *sizes) Write(p []byte) (int, error) {
	s.writes = append(s.writes, len(p))
	return s.Buffer.Write(p)
}

// capReader records the largest read buffer it was handed.
type capReader struct {
	r   io.Reader
	max int
}

func (c *capReader) Read(p []byte) (int, error) {
	c.max = max(c.max, len(p))
	return c.r.Read(p)
}

func TestChunking(t *testing.T) {
	const minBurst = 4096
	data := bytes.Repeat([]byte{1, 2, 3}, 50000) // 150 kB
	tests := []struct {
		rate     Rate
		maxChunk int
	}{
		{Unlimited, len(data)},
		{8e12, minBurst},
	}
	for _, tt := range tests {
		t.Run(tt.rate.String(), func(t *testing.T) {
			l := NewLimiter(tt.rate, minBurst)
			var dst sizes
			n, err := NewWriter(t.Context(), &dst, l).Write(data)
			if err != nil || n != len(data) || !bytes.Equal(dst.Bytes(), data) {
				t.Fatalf("Write = %d, %v; dst %d bytes", n, err, dst.Len())
			}
			if m := maxOf(dst.writes); m != tt.maxChunk {
				t.Errorf("largest write %d, want %d", m, tt.maxChunk)
			}
			src := &capReader{r: bytes.NewReader(data)}
			if _, err := NewReader(t.Context(), src, l).Read(make([]byte, len(data))); err != nil {
				t.Fatal(err)
			}
			if src.max != tt.maxChunk {
				t.Errorf("largest read %d, want %d", src.max, tt.maxChunk)
			}
		})
	}
}

func maxOf(v []int) int {
	m := 0
	for _, x := range v {
		m = max(m, x)
	}
	return m
}

type shortWriter struct{}

func (shortWriter) Write(p []byte) (int, error) { return len(p) / 2, nil }

func TestWriterShortWrite(t *testing.T) {
	n, err := NewWriter(t.Context(), shortWriter{}, NewLimiter(Unlimited, 0)).Write(make([]byte, 100))
	if n != 50 || !errors.Is(err, io.ErrShortWrite) {
		t.Errorf("Write = %d, %v; want 50, io.ErrShortWrite", n, err)
	}
}

// TestConcurrentRateChanges runs waiters while the rate flips, for the race
// detector, and checks that all of them finish once the rate is unlimited.
func TestConcurrentRateChanges(t *testing.T) {
	l := NewLimiter(bytesPerSec(1e5), 1024)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Go(func() {
			for range 20 {
				if err := l.WaitN(t.Context(), 3000); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	for i := range 50 {
		l.SetRate(bytesPerSec(float64(1e4 * (i%5 + 1))))
		time.Sleep(time.Millisecond)
	}
	l.SetRate(Unlimited)
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("waiters still blocked after SetRate(Unlimited)")
	}
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := l.waiters(); n != 0 {
		t.Errorf("%d waiters left", n)
	}
}

// benchRates are unlimited and a rate so high that the limiter never sleeps:
// what the benchmarks measure is the limiter's own cost.
var benchRates = []struct {
	name string
	rate Rate
}{
	{"unlimited", Unlimited},
	{"limited", math.MaxInt64 / 4},
}

// BenchmarkWaitN64KiB is the limiter's overhead per 64 KiB chunk.
func BenchmarkWaitN64KiB(b *testing.B) {
	for _, bc := range benchRates {
		r := bc.rate
		b.Run(bc.name, func(b *testing.B) {
			l := NewLimiter(r, DefaultMinBurst)
			b.SetBytes(DefaultMinBurst)
			for b.Loop() {
				if err := l.WaitN(b.Context(), DefaultMinBurst); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// zeros is an endless source of zero bytes.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// BenchmarkReader64KiB is a Reader's overhead per 64 KiB read.
func BenchmarkReader64KiB(b *testing.B) {
	for _, bc := range benchRates {
		r := bc.rate
		b.Run(bc.name, func(b *testing.B) {
			rd := NewReader(b.Context(), zeros{}, NewLimiter(r, DefaultMinBurst))
			buf := make([]byte, DefaultMinBurst)
			b.SetBytes(DefaultMinBurst)
			for b.Loop() {
				if _, err := io.ReadFull(rd, buf); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkReaderAt8MBps reads through a Reader at 8 MB/s (64 Mbit): the
// MB/s it reports is the throughput the limiter delivers, to be ~8 (the
// first 400 kB burst aside).
func BenchmarkReaderAt8MBps(b *testing.B) {
	rd := NewReader(b.Context(), zeros{}, NewLimiter(64e6, DefaultMinBurst))
	buf := make([]byte, 32<<10) // io.Copy's buffer
	const perOp = 1 << 20
	b.SetBytes(perOp)
	for b.Loop() {
		if _, err := io.CopyBuffer(io.Discard, io.LimitReader(rd, perOp), buf); err != nil {
			b.Fatal(err)
		}
	}
}
