package jobs

import (
	"context"

	"github.com/redleader-p2p/redleader/election"
)

// Runner moves one job's bytes. The Manager calls Run on its own goroutine
// for each job it starts, with a context that ends when the job is
// cancelled or the agent stops; Run returns when the content is complete
// and verified (nil error) or when it cannot be (the error, one line, is
// the job's). Run must return promptly once ctx ends; what it reported
// through Progress (and its last Checkpoint) stays with the job.
//
// The agent's Runner is the per-segment pipeline of peer/fetch.
type Runner interface {
	Run(ctx context.Context, w *Work, p Progress) (Result, error)
}

// Work is what a Runner is handed: the request (with its headers' values)
// and where the job stands.
type Work struct {
	ID      string
	Request Request
	// Resume is set when the job ran before (the agent stopped or crashed
	// meanwhile): the bytes already held are not to be fetched again. The
	// pipeline asks the segment cache which blocks of the content it holds
	// (every one of them verified when stored); a Runner may also read its
	// Checkpoint.
	Resume bool
	// Checkpoint is the Runner's last Progress.Checkpoint, nil if none.
	Checkpoint []byte
	// DataPath is a file the job owns (mode 0600, in the agent's data
	// dir) for the verified content: where the Runner writes it and where
	// GET /v1/jobs/{id}/content reads a done job's bytes. It may not exist.
	DataPath string
}

// Result is what a successful Run reports.
type Result struct {
	// SHA256 is the content's SHA-256 (hex), Size its length; the content
	// is at Work.DataPath.
	SHA256 string
	Size   int64
}

// Progress is how a Runner reports to the Manager. Its methods are safe
// for concurrent use and cheap (they only update memory; the Manager
// persists the job at least once a second), but Checkpoint, which writes
// the job record before it returns.
type Progress interface {
	// SetTotal sets the content's length once known.
	SetTotal(n int64)
	// SetHeld sets the number of the content's bytes held and verified
	// so far (on resume: what was found).
	SetHeld(n int64)
	// Fetched counts n bytes received from a source in the job's bytes
	// by source (every byte received, also one received twice).
	Fetched(from From, n int64)
	// Audit appends the record of a segment's bytes from one source.
	Audit(rec AuditRecord)
	// Checkpoint stores state (at most MaxCheckpoint bytes) with the job
	// durably before it returns; a resumed job's Work carries it.
	Checkpoint(state []byte) error
}

// MaxCheckpoint bounds a Runner's checkpoint.
const MaxCheckpoint = 64 << 10

// RankPublisher receives the agent's ranking inputs from its jobs: the
// highest priority of its active (queued or running) jobs — PriorityNone
// when there is none — and the bytes held of that job's content.
type RankPublisher interface {
	PublishRank(p election.Priority, progress uint64)
}
