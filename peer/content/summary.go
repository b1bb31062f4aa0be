package content

import (
	"bufio"
	"fmt"
	"io"
)

// WriteSummary writes a human-readable summary of info to w: version, hash,
// range, and per segment its offset, length, block counts, HoD and ID.
func WriteSummary(w io.Writer, info *Info) error {
	bw := bufio.NewWriter(w)
	start, end := info.Range()
	fmt.Fprintf(bw, "content information %v, %v, %d segments, range [%d, %d) (%d bytes)\n",
		info.Version, info.HashAlgo, len(info.Segments), start, end, end-start)
	for i := range info.Segments {
		s := &info.Segments[i]
		fmt.Fprintf(bw, "segment %d: offset %d, length %d, blocks %d (%d hashes listed)\n",
			i, s.Offset, s.Length, s.BlockCount(), len(s.BlockHashes))
		fmt.Fprintf(bw, "  HoD %v\n", s.HoD)
		fmt.Fprintf(bw, "  ID  %v\n", s.ID)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write content summary: %w", err)
	}
	return nil
}
