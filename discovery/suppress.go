package discovery

import "github.com/redleader-p2p/redleader/peer/content"

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

// fetchRecord is what the agent saw when it fetched a segment.
type fetchRecord struct {
	replies, full int
}

// suppressor holds fetch records and applies the suppression rule. It is
// not safe for concurrent use; the Responder guards it with its mutex.
type suppressor struct {
	threshold   int
	probability float64
	records     map[content.SegmentID]fetchRecord
}

func newSuppressor(threshold int, probability float64) *suppressor {
	return &suppressor{threshold: threshold, probability: probability, records: map[content.SegmentID]fetchRecord{}}
}

// record stores the fetch record of id, replacing an older one. When the
// table is full an arbitrary record is evicted (that segment is then
// always answered, the safe side).
func (s *suppressor) record(id content.SegmentID, replies, full int) {
	if _, ok := s.records[id]; !ok && len(s.records) >= maxFetchRecords {
		for k := range s.records {
			delete(s.records, k)
			break
		}
	}
	s.records[id] = fetchRecord{replies: max(replies, 0), full: max(full, 0)}
}

func (s *suppressor) forget(id content.SegmentID) { delete(s.records, id) }

// answer decides whether to answer a Probe for id; rnd returns a uniform
// number in [0, 1) and is called only in the probabilistic branch.
func (s *suppressor) answer(id content.SegmentID, rnd func() float64) bool {
	rec, ok := s.records[id]
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
