package discovery

import (
	"github.com/hashicorp/golang-lru/v2/simplelru"

	"github.com/redleader-p2p/redleader/peer/content"
)

// Reply suppression (MS-PCCRD Appendix B note <8>, Windows 7 behaviour):
// when the agent fetched a segment itself it recorded how many ProbeMatches
// it got for it and how many of those were full-segment replies. With
// n = reply threshold:
//
//	replies < n                → always answer
//	replies ≥ n and full ≥ n   → never answer
//	replies ≥ n and full < n   → answer with the reply probability
//
// Segments the agent never recorded a fetch for are always answered.

// Defaults of the reply-suppression rule.
const (
	DefaultReplyThreshold   = 10
	DefaultReplyProbability = 0.33
)

// maxFetchRecords bounds the per-segment fetch records a responder keeps.
const maxFetchRecords = 1 << 16

// fetchRecord is what the agent saw when it probed for a segment.
type fetchRecord struct {
	replies, full int
}

// suppressor holds fetch records and applies the suppression rule. It is
// not safe for concurrent use; the Responder guards it with its mutex.
type suppressor struct {
	threshold   int
	probability float64
	// records is an LRU: recording or consulting a segment makes it the
	// most recently used, and a full table drops the least recently used
	// record (that segment is then always answered, the safe side).
	records *simplelru.LRU[content.SegmentID, fetchRecord]
}

func newSuppressor(threshold int, probability float64) *suppressor {
	return &suppressor{threshold: threshold, probability: probability, records: newLRU[content.SegmentID, fetchRecord](maxFetchRecords)}
}

// newLRU returns an LRU of the given size, which must be positive.
func newLRU[K comparable, V any](size int) *simplelru.LRU[K, V] {
	l, err := simplelru.NewLRU[K, V](size, nil)
	if err != nil {
		panic(err) // only for size <= 0: a constant in this package
	}
	return l
}

// record stores the fetch record of id, replacing an older one.
func (s *suppressor) record(id content.SegmentID, replies, full int) {
	s.records.Add(id, fetchRecord{replies: max(replies, 0), full: max(full, 0)})
}

func (s *suppressor) forget(id content.SegmentID) { s.records.Remove(id) }

// answer decides whether to answer a Probe for id; rnd returns a uniform
// number in [0, 1) and is called only in the probabilistic branch.
func (s *suppressor) answer(id content.SegmentID, rnd func() float64) bool {
	rec, ok := s.records.Get(id)
	if !ok {
		return true
	}
	return shouldAnswer(rec, s.threshold, s.probability, rnd)
}

// shouldAnswer is the suppression rule for one fetch record.
func shouldAnswer(rec fetchRecord, n int, p float64, rnd func() float64) bool {
	switch {
	case rec.replies < n:
		return true
	case rec.full >= n:
		return false
	default:
		return rnd() < p
	}
}
