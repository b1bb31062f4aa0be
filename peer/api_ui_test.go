package peer_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/redleader-p2p/redleader/internal/wait"
	"github.com/redleader-p2p/redleader/peer/api"
	"github.com/redleader-p2p/redleader/peer/peertest"
)

// TestDashboardRoutes: a running agent serves the dashboard at /ui/ (and
// sends / there) without the token, and GET /v1/throughput counts the
// bytes of a job from a loopback origin as WAN bytes, in its totals and
// in a per-second sample.
func TestDashboardRoutes(t *testing.T) {
	a := peertest.StartAgent(t, peertest.Config(t, 0, peertest.Options{}), false)
	base := "http://" + a.APIAddr()
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, tc := range []struct {
		path, ctype string
		status      int
		location    string
	}{
		{"/", "", http.StatusFound, "/ui/"},
		{"/ui", "", http.StatusTemporaryRedirect, "/ui/"}, // the mux's own redirect
		{"/ui/", "text/html", http.StatusOK, ""},
		{"/ui/app.js", "text/javascript", http.StatusOK, ""},
		{"/v1/throughput", "application/json", http.StatusOK, ""},
		{"/v1/throughput?since=x", "application/json", http.StatusBadRequest, ""},
	} {
		resp, err := noRedirect.Get(base + tc.path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.status || !strings.HasPrefix(resp.Header.Get("Content-Type"), tc.ctype) ||
			resp.Header.Get("Location") != tc.location {
			t.Errorf("GET %s: %d %q Location %q, want %d %q %q: %s", tc.path, resp.StatusCode,
				resp.Header.Get("Content-Type"), resp.Header.Get("Location"), tc.status, tc.ctype, tc.location, b)
		}
	}

	data := testData(3 << 20)
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("ETag", `"ui"`)
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(data))
	}))
	t.Cleanup(origin.Close)
	anon, tok := client(t, a, false), client(t, a, true)
	ctx := ctxFor(t, 60*time.Second)
	before, err := anon.Throughput(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	j, err := tok.SubmitJob(ctx, api.JobRequest{URL: origin.URL + "/f"})
	if err != nil {
		t.Fatal(err)
	}
	wait.ForErr(t, 30*time.Second, "job done", func() error {
		got, err := anon.Job(ctx, j.ID, true)
		if err == nil && got.State != "done" {
			err = fmt.Errorf("state %s %s", got.State, got.Error)
		}
		return err
	})
	// The recorder samples every second: the bytes show in a sample after
	// the one seen before the job.
	var tp api.ThroughputResponse
	wait.ForErr(t, 10*time.Second, "the job's bytes in the samples", func() error {
		tp, err = anon.Throughput(ctx, before.Seq)
		if err != nil {
			return err
		}
		var wan int64
		for _, s := range tp.Samples {
			if s.Seq <= before.Seq {
				return fmt.Errorf("sample %d is not after %d", s.Seq, before.Seq)
			}
			wan += s.WAN
		}
		if tp.Totals.WAN-before.Totals.WAN != int64(len(data)) || wan != int64(len(data)) {
			return fmt.Errorf("WAN total grew by %d, samples add up to %d; want %d", tp.Totals.WAN-before.Totals.WAN, wan, len(data))
		}
		return nil
	})
	if tp.IntervalS != 1 || len(tp.Samples) == 0 || tp.Samples[len(tp.Samples)-1].Seq != tp.Seq {
		t.Errorf("throughput: interval %d, seq %d, last sample %+v", tp.IntervalS, tp.Seq, tp.Samples[len(tp.Samples)-1])
	}
	var ae *api.Error
	if err := anon.Do(ctx, http.MethodPost, api.PathThroughput, nil, nil); !errors.As(err, &ae) || ae.Status != http.StatusMethodNotAllowed {
		t.Errorf("POST %s: %v, want 405", api.PathThroughput, err)
	}
}
