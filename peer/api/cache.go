package api

import (
	"context"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/url"
)

// PathCache is the agent's segment cache: POST adds content to it, GET
// lists it, DELETE PathCache/{segment} removes a segment.
const PathCache = "/v1/cache"

// MaxContentInfo is the largest content information POST /v1/cache
// accepts: 64 MiB, the v1 content information of about 128 GiB of content.
const MaxContentInfo = 64 << 20

// Parts of the multipart/form-data body of POST /v1/cache, in this order.
const (
	// PartContentInfo is the content information (MS-PCCRC v1 or v2) of
	// the content, as `redleader hash -o` writes it or an MS-PCCRTP
	// (peerdist) answer carries it.
	PartContentInfo = "content_info"
	// PartContent is the content: exactly the bytes of the content
	// information's range (the whole file for a whole-file content
	// information).
	PartContent = "content"
)

// CacheSegment is one segment of the cache in GET /v1/cache and in the
// answer to POST /v1/cache.
type CacheSegment struct {
	// Segment is the segment ID (HoHoDk), 64 lower-case hex digits, as
	// `redleader hash` prints it and `redleader probe` takes it.
	Segment string `json:"segment"`
	// Offset and Length place the segment in the content it was first
	// added from.
	Offset uint64 `json:"offset"`
	Length uint32 `json:"length"`
	// Blocks is the number of blocks held, of TotalBlocks.
	Blocks      int `json:"blocks"`
	TotalBlocks int `json:"total_blocks"`
	// Bytes is the size of the held blocks.
	Bytes int64 `json:"bytes"`
}

// CacheAddResponse is the answer to POST /v1/cache.
type CacheAddResponse struct {
	// Segments are the segments the content information lists, in content
	// order, as the cache holds them now (Blocks 0: none held, for example
	// a segment the range only touches).
	Segments []CacheSegment `json:"segments"`
	// Bytes is the number of content bytes received.
	Bytes int64 `json:"bytes"`
	// VerifiedBlocks were received and matched their hash; AddedBlocks of
	// them were not held before.
	VerifiedBlocks int `json:"verified_blocks"`
	AddedBlocks    int `json:"added_blocks"`
}

// CacheListResponse is the body of GET /v1/cache.
type CacheListResponse struct {
	// Segments are every cached segment, by ID.
	Segments []CacheSegment `json:"segments"`
	// Bytes is the cache's size (held blocks plus descriptions); MaxBytes
	// its cap (cache.max_size, 0: none).
	Bytes    int64 `json:"bytes"`
	MaxBytes int64 `json:"max_bytes"`
}

// CacheRemoveResponse is the answer to DELETE /v1/cache/{segment}.
type CacheRemoveResponse struct {
	Segment string `json:"segment"`
	Removed bool   `json:"removed"`
}

// CacheAdd is POST /v1/cache (token): it streams ci (content information)
// and then content (exactly the bytes of ci's range) to the agent, which
// verifies every block against ci before it stores it. The body is
// multipart/form-data with the parts PartContentInfo and PartContent;
// content is never held in memory. A content that does not match ci is an
// *Error with Status 422 saying where and what was kept. ctx bounds the
// whole upload: give big contents a long one (the agent itself gives up
// when nothing arrives for a minute).
func (c *Client) CacheAdd(ctx context.Context, ci []byte, content io.Reader) (CacheAddResponse, error) {
	const method, path = http.MethodPost, PathCache
	var out CacheAddResponse
	if len(ci) > MaxContentInfo {
		return out, fmt.Errorf("%s %s: content information of %d bytes, the agent takes at most %d", method, path, len(ci), MaxContentInfo)
	}
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	done := make(chan struct{})
	go func() { // ends when the form is written or pr is closed
		defer close(done)
		pw.CloseWithError(writeCacheForm(mw, ci, content))
	}()
	defer func() {
		pr.Close()
		<-done
	}()
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, pr)
	if err != nil {
		return out, fmt.Errorf("%s %s: %w", method, path, err)
	}
	req.Header.Set("Content-Type", mw.FormDataContentType())
	return out, c.send(req, &out)
}

// writeCacheForm writes the multipart body of POST /v1/cache.
func writeCacheForm(mw *multipart.Writer, ci []byte, content io.Reader) error {
	p, err := mw.CreateFormFile(PartContentInfo, "content-info")
	if err != nil {
		return err
	}
	if _, err := p.Write(ci); err != nil {
		return err
	}
	if p, err = mw.CreateFormFile(PartContent, "content"); err != nil {
		return err
	}
	if _, err := io.Copy(p, content); err != nil {
		return err
	}
	return mw.Close()
}

// Cache is GET /v1/cache: every cached segment.
func (c *Client) Cache(ctx context.Context) (CacheListResponse, error) {
	var out CacheListResponse
	return out, c.Do(ctx, http.MethodGet, PathCache, nil, &out)
}

// CacheRemove is DELETE /v1/cache/{segment} (token): it drops segment (64
// hex digits) from the cache. A segment not in the cache is an *Error with
// Status 404.
func (c *Client) CacheRemove(ctx context.Context, segment string) (CacheRemoveResponse, error) {
	var out CacheRemoveResponse
	return out, c.Do(ctx, http.MethodDelete, PathCache+"/"+url.PathEscape(segment), nil, &out)
}
