package jobs

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/redleader-p2p/redleader/election"
	"github.com/redleader-p2p/redleader/internal/atomicfile"
)

// On disk, each job is a directory <Dir>/<id>/ (mode 0700) holding:
//
//	job.json  the record (this file), replaced atomically (internal/atomicfile), 0600
//	headers   the extra request headers, a JSON list of "Name: value", 0600;
//	          written once, before job.json, and only read to run the job
//	data      the content (written by the Runner), 0600
//
// job.json is written last at submission: a directory without it is a
// submission that did not complete and is removed at load.
const (
	recordFile    = "job.json"
	headersFile   = "headers"
	dataFile      = "data"
	recordVersion = 1
)

// record is a job as persisted.
type record struct {
	Version       int           `json:"version"`
	ID            string        `json:"id"`
	Seq           uint64        `json:"seq"`
	URL           string        `json:"url"` // as requested: the query may hold credentials (0600 file)
	Priority      string        `json:"priority"`
	SHA256        string        `json:"sha256,omitempty"`
	Share         bool          `json:"share,omitempty"`
	HeaderNames   []string      `json:"header_names,omitempty"`
	State         State         `json:"state"`
	Error         string        `json:"error,omitempty"`
	Created       time.Time     `json:"created"`
	Started       time.Time     `json:"started,omitzero"`
	Finished      time.Time     `json:"finished,omitzero"`
	Total         int64         `json:"total"`
	Held          int64         `json:"held"`
	Bytes         Bytes         `json:"bytes"`
	Audit         []AuditRecord `json:"audit,omitempty"`
	Checkpoint    []byte        `json:"checkpoint,omitempty"`
	ContentSHA256 string        `json:"content_sha256,omitempty"`
	Resumes       int           `json:"resumes,omitempty"`
}

// clone returns a copy of r that shares no mutable memory with it.
func (r *record) clone() record {
	c := *r
	c.HeaderNames = append([]string(nil), r.HeaderNames...)
	c.Audit = append([]AuditRecord(nil), r.Audit...)
	c.Checkpoint = append([]byte(nil), r.Checkpoint...)
	c.Bytes = r.Bytes.clone()
	return c
}

// view is what readers see of r.
func (r *record) view() Job {
	c := r.clone()
	p, _ := election.ParsePriority(c.Priority)
	return Job{ID: c.ID, URL: Redact(c.URL), Priority: p, SHA256: c.SHA256, Share: c.Share, Headers: c.HeaderNames,
		State: c.State, Error: c.Error, Created: c.Created, Started: c.Started, Finished: c.Finished,
		Total: c.Total, Held: c.Held, Bytes: c.Bytes, Audit: c.Audit, ContentSHA256: c.ContentSHA256, Resumes: c.Resumes}
}

func (r *record) priority() election.Priority {
	p, _ := election.ParsePriority(r.Priority)
	return p
}

func writeRecord(dir string, r *record) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	if err := atomicfile.Write(filepath.Join(dir, recordFile), b, 0o600); err != nil {
		return fmt.Errorf("save job %s: %w", r.ID, err)
	}
	return nil
}

func writeHeaders(dir string, headers []string) error {
	b, err := json.Marshal(headers)
	if err != nil {
		return err
	}
	if err := atomicfile.Write(filepath.Join(dir, headersFile), b, 0o600); err != nil {
		return fmt.Errorf("save job headers: %w", err)
	}
	return nil
}

// readHeaders reads the headers a job was submitted with (none when the
// file does not exist).
func readHeaders(dir string) ([]string, error) {
	b, err := os.ReadFile(filepath.Join(dir, headersFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read job headers: %w", err)
	}
	var h []string
	if err := json.Unmarshal(b, &h); err != nil {
		return nil, fmt.Errorf("read job headers: %w", err)
	}
	return h, nil
}

// loadRecords reads every job under root. Directories of submissions that
// did not complete are removed; unreadable records are logged and left
// alone (a newer agent's format, a disk error).
func loadRecords(root string, log *slog.Logger) ([]*record, error) {
	entries, err := os.ReadDir(root)
	if err != nil {
		return nil, fmt.Errorf("read jobs dir: %w", err)
	}
	var out []*record
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		dir := filepath.Join(root, e.Name())
		b, err := os.ReadFile(filepath.Join(dir, recordFile))
		if errors.Is(err, fs.ErrNotExist) {
			log.Debug("removing an incomplete job submission", "dir", dir)
			if err := os.RemoveAll(dir); err != nil {
				log.Warn("cannot remove an incomplete job submission", "dir", dir, "err", err)
			}
			continue
		}
		var r record
		if err == nil {
			err = json.Unmarshal(b, &r)
		}
		switch {
		case err != nil:
			log.Warn("job record unreadable: skipped", "dir", dir, "err", err)
			continue
		case r.Version != recordVersion || r.ID != e.Name():
			log.Warn("job record of another version or place: skipped", "dir", dir, "version", r.Version)
			continue
		}
		if _, err := election.ParsePriority(r.Priority); err != nil {
			log.Warn("job record with a bad priority: skipped", "dir", dir, "err", err)
			continue
		}
		out = append(out, &r)
	}
	return out, nil
}
