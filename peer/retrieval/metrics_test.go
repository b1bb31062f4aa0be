package retrieval

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/goleak"

	"github.com/redleader-p2p/redleader/peer/content"
)

// scrapePCCRR returns the redleader_pccrr_ series of reg as the text
// exposition shows them ("name" or `name{label="value"}`) and their values.
func scrapePCCRR(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	rec := httptest.NewRecorder()
	promhttp.HandlerFor(reg, promhttp.HandlerOpts{}).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	out := map[string]float64{}
	sc := bufio.NewScanner(rec.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "redleader_pccrr_") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	return out
}

// TestServerMetrics: each kind of request moves exactly the counters it
// should (every other redleader_pccrr_ series stays at 0).
func TestServerMetrics(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	// 5 blocks, the last one short, of which block 3 is not held.
	const size = 4*content.BlockSize + 1000
	info, data := testContent(t, size)
	seg := &info.Segments[0]
	held := func(_, b int) bool { return b != 3 }
	other, _ := testContent(t, 100) // a segment the server does not hold
	rawGetSegList := make([]byte, HeaderSize)
	binary.BigEndian.PutUint32(rawGetSegList[0:], uint32(Version2))
	binary.BigEndian.PutUint32(rawGetSegList[4:], uint32(MsgGetSegList))
	binary.BigEndian.PutUint32(rawGetSegList[8:], HeaderSize)
	getBlks, err := (&GetBlks{Crypto: CryptoAES128, SegmentID: seg.ID, Ranges: []BlockRange{{Index: 0, Count: 1}}}).AppendBinary(nil)
	if err != nil {
		t.Fatal(err)
	}

	// post sends body to the server's path (or path) and returns the status.
	post := func(t *testing.T, url string, body []byte) int {
		t.Helper()
		resp, err := http.Post(url, "application/octet-stream", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	cutShort := func(context.Context, io.Writer) io.Writer { return failingWriter{} }
	for _, tt := range []struct {
		name string
		pace func(context.Context, io.Writer) io.Writer
		run  func(t *testing.T, c *Client, url string)
		want map[string]float64 // the series that must not be 0
	}{
		{"fetch 3 blocks", nil, func(t *testing.T, c *Client, url string) {
			for i := range 3 {
				if _, err := c.FetchBlock(t.Context(), url, seg, i); err != nil {
					t.Fatal(err)
				}
			}
		}, map[string]float64{
			`redleader_pccrr_requests_total{type="GETBLKS"}`: 3,
			`redleader_pccrr_blocks_served_total`:            3,
			`redleader_pccrr_bytes_served_total`:             3 * content.BlockSize,
		}},
		{"fetch the short last block", nil, func(t *testing.T, c *Client, url string) {
			if _, err := c.FetchBlock(t.Context(), url, seg, 4); err != nil {
				t.Fatal(err)
			}
		}, map[string]float64{
			`redleader_pccrr_requests_total{type="GETBLKS"}`: 1,
			`redleader_pccrr_blocks_served_total`:            1,
			`redleader_pccrr_bytes_served_total`:             1000, // the payload, not the padded ciphertext
		}},
		{"block not held", nil, func(t *testing.T, c *Client, url string) {
			if _, err := c.FetchBlock(t.Context(), url, seg, 3); err == nil {
				t.Fatal("fetched a block that is not held")
			}
		}, map[string]float64{
			`redleader_pccrr_requests_total{type="GETBLKS"}`:  1,
			`redleader_pccrr_errors_total{reason="not_held"}`: 1,
		}},
		{"unknown segment", nil, func(t *testing.T, c *Client, url string) {
			if _, err := c.FetchBlock(t.Context(), url, &other.Segments[0], 0); err == nil {
				t.Fatal("fetched a block of a segment that is not held")
			}
		}, map[string]float64{
			`redleader_pccrr_requests_total{type="GETBLKS"}`:         1,
			`redleader_pccrr_errors_total{reason="unknown_segment"}`: 1,
		}},
		{"block list and negotiation", nil, func(t *testing.T, c *Client, url string) {
			if l, err := c.BlockList(t.Context(), url, seg.ID, []BlockRange{{Index: 0, Count: 5}}); err != nil || len(l.Ranges) != 2 {
				t.Fatalf("block list %+v %v", l, err)
			}
			if l, err := c.BlockList(t.Context(), url, seg.ID, []BlockRange{{Index: 3, Count: 1}}); err != nil || len(l.Ranges) != 0 {
				t.Fatalf("block list of a block not held: %+v %v", l, err)
			}
			if _, err := c.Negotiate(t.Context(), strings.TrimPrefix(url, "http://")); err != nil {
				t.Fatal(err)
			}
		}, map[string]float64{
			`redleader_pccrr_requests_total{type="GETBLKLIST"}`: 2,
			`redleader_pccrr_requests_total{type="NEGO_REQ"}`:   1,
			`redleader_pccrr_errors_total{reason="not_held"}`:   1,
		}},
		{"garbage body", nil, func(t *testing.T, _ *Client, url string) {
			if code := post(t, url+Path, []byte("GET / HTTP/1.1")); code != http.StatusBadRequest {
				t.Fatalf("status %d", code)
			}
		}, map[string]float64{
			`redleader_pccrr_requests_total{type="other"}`:     1,
			`redleader_pccrr_errors_total{reason="malformed"}`: 1,
		}},
		{"truncated GETBLKS", nil, func(t *testing.T, _ *Client, url string) {
			b := bytes.Clone(getBlks)
			binary.BigEndian.PutUint32(b[8:], uint32(len(b)-8)) // message ends inside the range
			if code := post(t, url+Path, b[:len(b)-8]); code != http.StatusBadRequest {
				t.Fatalf("status %d", code)
			}
		}, map[string]float64{
			`redleader_pccrr_requests_total{type="GETBLKS"}`:   1,
			`redleader_pccrr_errors_total{reason="malformed"}`: 1,
		}},
		{"wrong path", nil, func(t *testing.T, _ *Client, url string) {
			if code := post(t, url+"/elsewhere/", getBlks); code != http.StatusNotFound {
				t.Fatalf("status %d", code)
			}
		}, map[string]float64{
			`redleader_pccrr_requests_total{type="other"}`:     1,
			`redleader_pccrr_errors_total{reason="malformed"}`: 1,
		}},
		{"too large", nil, func(t *testing.T, _ *Client, url string) {
			if code := post(t, url+Path, make([]byte, MaxRequestSize+1)); code != http.StatusRequestEntityTooLarge {
				t.Fatalf("status %d", code)
			}
		}, map[string]float64{
			`redleader_pccrr_requests_total{type="other"}`:     1,
			`redleader_pccrr_errors_total{reason="too_large"}`: 1,
		}},
		{"hosted cache GETSEGLIST", nil, func(t *testing.T, _ *Client, url string) {
			if code := post(t, url+Path, rawGetSegList); code != http.StatusBadRequest {
				t.Fatalf("status %d", code)
			}
		}, map[string]float64{
			`redleader_pccrr_requests_total{type="GETSEGLIST"}`:  1,
			`redleader_pccrr_errors_total{reason="unsupported"}`: 1,
		}},
		{"reply cut short", cutShort, func(t *testing.T, c *Client, url string) {
			if _, err := c.FetchBlock(t.Context(), url, seg, 0); err == nil {
				t.Fatal("fetched a block whose reply was cut short")
			}
		}, map[string]float64{
			`redleader_pccrr_requests_total{type="GETBLKS"}`: 1,
			`redleader_pccrr_blocks_served_total`:            1,
			`redleader_pccrr_bytes_served_total`:             content.BlockSize,
			`redleader_pccrr_errors_total{reason="write"}`:   1,
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			ts, _, _ := startPeer(t, newMemStore(info, data, held), ServerConfig{Metrics: NewMetrics(reg), Pace: tt.pace})
			c := NewClient(ClientConfig{})
			defer c.Close()
			tt.run(t, c, ts.URL)
			got := scrapePCCRR(t, reg)
			// 5 request types, 8 error reasons and the 2 plain counters.
			if len(got) != 15 {
				t.Errorf("%d redleader_pccrr_ series, want 15: %v", len(got), got)
			}
			for name, v := range got {
				if want := tt.want[name]; v != want {
					t.Errorf("%s = %v, want %v", name, v, want)
				}
			}
			for name := range tt.want {
				if _, ok := got[name]; !ok {
					t.Errorf("%s missing", name)
				}
			}
		})
	}
}

// TestMetricsShared: a second server's metrics on the same registry (a
// second agent in the process) reuse the registered collectors.
func TestMetricsShared(t *testing.T) {
	reg := prometheus.NewRegistry()
	a, b := NewMetrics(reg), NewMetrics(reg)
	a.BlocksServed.Inc()
	b.BlocksServed.Inc()
	b.Errors.WithLabelValues(reasonBusy.String()).Inc()
	got := scrapePCCRR(t, reg)
	if got["redleader_pccrr_blocks_served_total"] != 2 || got[`redleader_pccrr_errors_total{reason="busy"}`] != 1 {
		t.Fatalf("%v", got)
	}
}

// failingWriter fails every write, as a pace that gives up does.
type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("pace gave up") }
