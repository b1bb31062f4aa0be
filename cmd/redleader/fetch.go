package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/redleader-p2p/redleader/election"
	"github.com/redleader-p2p/redleader/peer/api"
)

// How fetch follows a job.
const (
	pollTerminal = 250 * time.Millisecond // progress bar refresh
	pollPlain    = time.Second            // without a terminal
	plainEvery   = 5 * time.Second        // a plain progress line at most this often
)

type fetchFlags struct {
	out, priority, sha256 string
	headers               []string
	share, detach         bool
}

func fetchCmd(g *globals) *cobra.Command {
	var f fetchFlags
	cmd := &cobra.Command{
		Use:   "fetch URL -o FILE",
		Short: "Download URL to FILE through the local agent (a job)",
		Long: "fetch queues a download job with the local agent, follows it (a progress bar on a terminal,\n" +
			"plain lines otherwise, one JSON object with --json) and writes FILE from the verified bytes the\n" +
			"agent streams back, as the calling user: into a temporary file in FILE's directory, renamed over\n" +
			"FILE only once complete and verified, so a failure leaves nothing at FILE. Exit 0 only then.\n" +
			"Ctrl-C cancels the job. --detach queues it and prints its ID at once; `redleader jobs get ID\n" +
			"-o FILE` writes it later.\n\n" +
			"Today the agent downloads from the origin on this machine only; LAN peers and one WAN copy per\n" +
			"subnet come with the pipeline. -H values (credentials) are sent to the origin only, kept by the\n" +
			"agent in a file only its user reads and never shown by the API; note that command-line arguments\n" +
			"are visible to other local users while fetch runs.",
		Args: func(_ *cobra.Command, args []string) error {
			switch {
			case len(args) != 1:
				return fmt.Errorf("%w: fetch takes one URL", errUsage)
			case f.detach && f.out != "":
				return fmt.Errorf("%w: --detach writes no file: leave -o out and run `redleader jobs get ID -o FILE` once the job is done", errUsage)
			case !f.detach && f.out == "":
				return fmt.Errorf("%w: fetch needs -o FILE (or --detach)", errUsage)
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			req, err := f.request(args[0])
			if err != nil {
				return err
			}
			return g.fetch(cmd, req, f)
		},
	}
	fl := cmd.Flags()
	fl.StringVarP(&f.out, "output", "o", "", "write the content to `FILE`")
	fl.StringVar(&f.priority, "priority", "normal", "job priority: foreground, high, normal or low")
	fl.StringVar(&f.sha256, "sha256", "", "expected SHA-256 of the content (`HEX`): the job fails when it differs")
	fl.StringArrayVarP(&f.headers, "header", "H", nil, "extra request header for the origin, `'Name: value'` (repeatable)")
	fl.BoolVar(&f.share, "share", false, "let the subnet learn of content fetched with credentials (takes effect with the LAN pipeline)")
	fl.BoolVar(&f.detach, "detach", false, "queue the job, print its ID and return")
	return cmd
}

// request checks the flags and makes the job request.
func (f fetchFlags) request(url string) (api.JobRequest, error) {
	p, err := election.ParsePriority(f.priority)
	if err != nil || p == election.PriorityNone {
		return api.JobRequest{}, fmt.Errorf("%w: --priority %q: want foreground, high, normal or low", errUsage, f.priority)
	}
	sum := strings.ToLower(strings.TrimSpace(f.sha256))
	if _, err := hex.DecodeString(sum); err != nil || (sum != "" && len(sum) != 64) {
		return api.JobRequest{}, fmt.Errorf("%w: --sha256 must be 64 hex digits", errUsage)
	}
	for _, h := range f.headers {
		if name, _, ok := strings.Cut(h, ":"); !ok || strings.TrimSpace(name) == "" {
			return api.JobRequest{}, fmt.Errorf("%w: -H %q: want 'Name: value'", errUsage, strings.TrimSpace(name))
		}
	}
	return api.JobRequest{URL: url, Priority: p.String(), SHA256: sum, Headers: f.headers, Share: f.share}, nil
}

// fetchResult is what fetch --json prints.
type fetchResult struct {
	Job    api.JobInfo `json:"job"`
	File   string      `json:"file,omitempty"`
	Bytes  int64       `json:"bytes"`
	SHA256 string      `json:"sha256,omitempty"`
}

func (g *globals) fetch(cmd *cobra.Command, req api.JobRequest, f fetchFlags) error {
	var d *dest
	if !f.detach {
		var err error
		if d, err = openDest(f.out); err != nil { // before the job: a destination we cannot write costs no download
			return err
		}
		defer d.abort()
	}
	c, err := g.client(cmd, true)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var j api.JobInfo
	err = g.call(ctx, c, func(ctx context.Context) (err error) {
		j, err = c.SubmitJob(ctx, req)
		return err
	})
	if err != nil {
		return err
	}
	if f.detach {
		if g.json {
			return g.printJSON(fetchResult{Job: j})
		}
		_, err := fmt.Fprintln(g.stdout, j.ID)
		return err
	}
	rep := g.newReporter(j)
	j, err = g.follow(ctx, c, j.ID, rep)
	if err != nil {
		rep.stop()
		if ctx.Err() != nil && cmd.Context().Err() == nil { // interrupted: cancel the job
			cctx, cancel := context.WithTimeout(context.Background(), apiTimeout)
			defer cancel()
			if _, cerr := c.DeleteJob(cctx, j.ID); cerr == nil {
				return fmt.Errorf("interrupted: job %s cancelled; nothing was written to %s", j.ID, d.path)
			}
			return fmt.Errorf("interrupted: job %s goes on (`redleader jobs cancel %s` stops it); nothing was written to %s", j.ID, j.ID, d.path)
		}
		return err
	}
	if err := g.jobOutcome(j); err != nil {
		rep.stop()
		return err
	}
	n, err := g.writeContent(ctx, c, j, d)
	rep.stop()
	if err != nil {
		return err
	}
	if g.json {
		return g.printJSON(fetchResult{Job: j, File: d.path, Bytes: n, SHA256: j.ContentSHA256})
	}
	_, err = fmt.Fprintf(g.stdout, "%s: %s\n", d.path, withFrom(sizeString(n)+", sha256 "+j.ContentSHA256, j.Bytes, ", "))
	return err
}

// call runs one API call bounded by apiTimeout and words its error.
func (g *globals) call(ctx context.Context, c *api.Client, f func(context.Context) error) error {
	cctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	return agentError(c.Addr(), f(cctx))
}

// follow polls job id until it is over, reporting its progress.
func (g *globals) follow(ctx context.Context, c *api.Client, id string, rep reporter) (api.JobInfo, error) {
	every := pollPlain
	if _, ok := rep.(*barReporter); ok {
		every = pollTerminal
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		var d api.JobDetail
		err := g.call(ctx, c, func(ctx context.Context) (err error) {
			d, err = c.Job(ctx, id, true)
			return err
		})
		switch {
		case ctx.Err() != nil:
			return api.JobInfo{ID: id}, ctx.Err()
		case errors.Is(err, api.ErrNoAgent):
			return d.JobInfo, fmt.Errorf("the agent at %s stopped while job %s ran; the job resumes when it starts again, "+
				"then `redleader jobs get %s -o FILE` writes it", c.Addr(), id, id)
		case err != nil:
			return d.JobInfo, err
		}
		rep.update(d.JobInfo)
		if d.Over() {
			return d.JobInfo, nil
		}
		select {
		case <-ctx.Done():
			return d.JobInfo, ctx.Err()
		case <-t.C:
		}
	}
}

// jobOutcome is nil for a done job, else the job's error in one line.
func (g *globals) jobOutcome(j api.JobInfo) error {
	switch j.State {
	case "done":
		return nil
	case "cancelled":
		return fmt.Errorf("job %s was cancelled", j.ID)
	}
	return fmt.Errorf("job %s %s: %s", j.ID, j.State, orDash(j.Error))
}

// writeContent streams done job j's content into d, checks its length and
// SHA-256 against the job, and puts it in place.
func (g *globals) writeContent(ctx context.Context, c *api.Client, j api.JobInfo, d *dest) (int64, error) {
	body, _, err := c.JobContent(ctx, j.ID)
	if err != nil {
		return 0, agentError(c.Addr(), err)
	}
	defer body.Close()
	n, err := d.write(body, j.Total, j.ContentSHA256)
	if err != nil {
		return n, agentError(c.Addr(), err)
	}
	return n, d.commit()
}

// dest is a download's destination: a temporary file in the destination's
// directory, renamed over it once complete and verified (commit), removed
// otherwise (abort). Nothing partial ever appears at path.
type dest struct {
	path string
	f    destFile
	mode os.FileMode
	done bool
}

// destFile is what dest writes to (an *os.File).
type destFile interface {
	io.Writer
	Sync() error
	Close() error
	Name() string
}

// openDest creates the temporary file next to path. The file gets path's
// mode if path exists, else 0644.
func openDest(path string) (*dest, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("cannot write %s: %w", path, err)
	}
	mode := os.FileMode(0o644)
	if fi, err := os.Stat(abs); err == nil {
		if !fi.Mode().IsRegular() {
			return nil, fmt.Errorf("cannot write %s: not a regular file", path)
		}
		mode = fi.Mode().Perm()
	}
	f, err := os.CreateTemp(filepath.Dir(abs), "."+filepath.Base(abs)+".redleader-*")
	if err != nil {
		return nil, fmt.Errorf("cannot write %s: %w", path, err)
	}
	return &dest{path: path, f: f, mode: mode}, nil
}

// write copies r into the temporary file, checking that it holds size
// bytes (size < 0: any) whose SHA-256 is sum ("": any).
func (d *dest) write(r io.Reader, size int64, sum string) (int64, error) {
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(&destWriter{d: d}, h), r)
	var we *destWriteError
	switch {
	case errors.As(err, &we):
		return n, fmt.Errorf("cannot write %s: %w (nothing was written to it)", d.path, pathless(we.err))
	case err != nil:
		return n, fmt.Errorf("read the content: %w (nothing was written to %s)", err, d.path)
	case size >= 0 && n != size:
		return n, fmt.Errorf("the agent sent %d bytes of %d (nothing was written to %s)", n, size, d.path)
	}
	if got := hex.EncodeToString(h.Sum(nil)); sum != "" && got != sum {
		return n, fmt.Errorf("the agent sent content with SHA-256 %s, the job says %s (nothing was written to %s)", got, sum, d.path)
	}
	return n, nil
}

// pathless drops the temporary file's name from a file error: the
// message names the destination instead.
func pathless(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// destWriter tells write errors (the destination) from read errors (the
// agent).
type destWriter struct{ d *dest }

type destWriteError struct{ err error }

func (e *destWriteError) Error() string { return e.err.Error() }
func (e *destWriteError) Unwrap() error { return e.err }

func (w *destWriter) Write(p []byte) (int, error) {
	n, err := w.d.f.Write(p)
	if err != nil {
		return n, &destWriteError{err}
	}
	return n, nil
}

// commit syncs the temporary file and renames it over path.
func (d *dest) commit() error {
	name := d.f.Name()
	err := d.f.Sync()
	if cerr := d.f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(name, d.mode)
	}
	if err == nil {
		err = os.Rename(name, d.path)
	}
	if err != nil {
		os.Remove(name)
		return fmt.Errorf("cannot write %s: %w (nothing was written to it)", d.path, pathless(err))
	}
	d.done = true
	return nil
}

// abort removes the temporary file unless commit put it in place.
func (d *dest) abort() {
	if d.done {
		return
	}
	d.done = true
	d.f.Close()
	os.Remove(d.f.Name())
}

// reporter shows a job's progress.
type reporter interface {
	update(j api.JobInfo)
	stop()
}

// newReporter picks the progress display: none with --json, a bar when
// stdout is a terminal, plain lines otherwise.
func (g *globals) newReporter(j api.JobInfo) reporter {
	switch {
	case g.json:
		return quietReporter{}
	case isTerminal(g.stdout):
		return newBarReporter(g.stdout, j)
	}
	fmt.Fprintf(g.stdout, "job %s queued: %s (priority %s)\n", j.ID, j.URL, j.Priority)
	return &lineReporter{w: g.stdout, state: j.State}
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

type quietReporter struct{}

func (quietReporter) update(api.JobInfo) {}
func (quietReporter) stop()              {}

// lineReporter prints a line at each state change and at most every
// plainEvery while running.
type lineReporter struct {
	w     io.Writer
	state string
	last  time.Time
	held  int64
}

func (r *lineReporter) update(j api.JobInfo) {
	now := time.Now()
	changed := j.State != r.state
	if !changed && (j.State != "running" || now.Sub(r.last) < plainEvery) {
		return
	}
	rate := ""
	if !changed && !r.last.IsZero() {
		rate = ", " + sizeString(int64(float64(j.Held-r.held)/now.Sub(r.last).Seconds())) + "/s"
	}
	fmt.Fprintf(r.w, "job %s %s: %s\n", j.ID, j.State, withFrom(progressLine(j)+rate, j.Bytes, ", "))
	r.state, r.last, r.held = j.State, now, j.Held
}

func (r *lineReporter) stop() {}

// barReporter draws a progress bar: bytes, rate, ETA and where the bytes
// came from. It renders only when updated (no goroutine of its own).
type barReporter struct {
	w       io.Writer
	bar     *progressbar.ProgressBar
	total   int64
	desc    string
	stopped bool
}

func newBarReporter(w io.Writer, j api.JobInfo) *barReporter {
	desc := j.ID + " " + j.State
	bar := progressbar.NewOptions64(j.Total,
		progressbar.OptionSetWriter(w),
		progressbar.OptionSetDescription(desc),
		progressbar.OptionShowBytes(true),
		progressbar.OptionShowCount(),
		progressbar.OptionUseIECUnits(true),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionSetWidth(30),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionSetSpinnerChangeInterval(0),
	)
	return &barReporter{w: w, bar: bar, total: j.Total, desc: desc}
}

func (r *barReporter) update(j api.JobInfo) {
	if r.stopped {
		return
	}
	if j.Total != r.total && j.Total > 0 {
		r.total = j.Total
		r.bar.ChangeMax64(j.Total)
	}
	desc := withFrom(j.ID+" "+j.State, j.Bytes, ", ")
	if desc != r.desc && !r.bar.IsFinished() {
		r.desc = desc
		r.bar.Describe(desc)
	}
	_ = r.bar.Set64(j.Held)
}

// stop leaves the bar as it is and ends its line.
func (r *barReporter) stop() {
	if r.stopped {
		return
	}
	r.stopped = true
	_ = r.bar.Exit()
	fmt.Fprintln(r.w)
}

// progressLine is "12.0 MiB of 64.0 MiB (18%)".
func progressLine(j api.JobInfo) string {
	if j.Total < 0 {
		return sizeString(j.Held) + " of ?"
	}
	pct := 100.0
	if j.Total > 0 {
		pct = 100 * float64(j.Held) / float64(j.Total)
	}
	return fmt.Sprintf("%s of %s (%.0f%%)", sizeString(j.Held), sizeString(j.Total), pct)
}

// fromLine says where the bytes came from: "from peers 80%, origin 20%,
// cache 0%"; "" before any came.
func fromLine(b api.JobBytes) string {
	all := b.Peers + b.Origin + b.Cache
	if all == 0 {
		return ""
	}
	pct := func(n int64) float64 { return 100 * float64(n) / float64(all) }
	return fmt.Sprintf("from peers %.0f%%, origin %.0f%%, cache %.0f%%", pct(b.Peers), pct(b.Origin), pct(b.Cache))
}

// withFrom appends sep and fromLine(b) to s when bytes came.
func withFrom(s string, b api.JobBytes, sep string) string {
	if f := fromLine(b); f != "" {
		return s + sep + f
	}
	return s
}
