package api

import (
	"bytes"
	"context"
	"errors"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestCacheAdd: the client streams a form of the content information and
// then the content, with the token, and decodes the answer.
func TestCacheAdd(t *testing.T) {
	ci, data := []byte("content information"), bytes.Repeat([]byte("0123456789"), 100_000)
	c := serve(t, func(w http.ResponseWriter, r *http.Request) {
		mt, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
		switch {
		case r.Method != http.MethodPost || r.URL.Path != PathCache:
			http.Error(w, r.Method+" "+r.URL.Path, http.StatusTeapot)
			return
		case r.Header.Get("Authorization") != "Bearer secret":
			http.Error(w, "token", http.StatusUnauthorized)
			return
		case err != nil || mt != "multipart/form-data":
			http.Error(w, "content type "+r.Header.Get("Content-Type"), http.StatusTeapot)
			return
		}
		mr := multipart.NewReader(r.Body, params["boundary"])
		var got [][]byte
		for _, name := range []string{PartContentInfo, PartContent} {
			p, err := mr.NextPart()
			if err != nil || p.FormName() != name {
				http.Error(w, "part "+name, http.StatusTeapot)
				return
			}
			b, _ := io.ReadAll(p)
			got = append(got, b)
		}
		if _, err := mr.NextPart(); !errors.Is(err, io.EOF) || !bytes.Equal(got[0], ci) || !bytes.Equal(got[1], data) {
			http.Error(w, "parts differ", http.StatusTeapot)
			return
		}
		io.WriteString(w, `{"segments": [{"segment": "ab", "blocks": 2, "total_blocks": 3}], "bytes": 1000000, "verified_blocks": 2}`)
	})
	res, err := c.CacheAdd(context.Background(), ci, bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Segments) != 1 || res.Segments[0] != (CacheSegment{Segment: "ab", Blocks: 2, TotalBlocks: 3}) ||
		res.Bytes != int64(len(data)) || res.VerifiedBlocks != 2 {
		t.Errorf("answer %+v", res)
	}
	if _, err := c.CacheAdd(context.Background(), make([]byte, MaxContentInfo+1), strings.NewReader("")); err == nil ||
		!strings.Contains(err.Error(), "at most") {
		t.Errorf("oversized content information: err = %v", err)
	}
}

// TestCacheAddRefusedEarly: an agent that answers before reading the
// upload (a wrong token) is heard, and the client stops reading the
// content: CacheAdd returns without waiting for a content that never ends.
func TestCacheAddRefusedEarly(t *testing.T) {
	c := serve(t, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		io.WriteString(w, `{"error": "missing or wrong API token"}`)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := c.CacheAdd(ctx, []byte("ci"), endless{})
	var e *Error
	if !errors.As(err, &e) || e.Status != http.StatusUnauthorized || e.Message != "missing or wrong API token" {
		t.Fatalf("err = %v, want the 401", err)
	}
}

// endless is a content that never ends.
type endless struct{}

func (endless) Read(p []byte) (int, error) { return len(p), nil }

func TestCacheRemove(t *testing.T) {
	c := serve(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodDelete || r.URL.EscapedPath() != PathCache+"/a%2Fb" {
			http.Error(w, r.Method+" "+r.URL.EscapedPath(), http.StatusTeapot)
			return
		}
		io.WriteString(w, `{"segment": "a/b", "removed": true}`)
	})
	res, err := c.CacheRemove(context.Background(), "a/b")
	if err != nil || res != (CacheRemoveResponse{Segment: "a/b", Removed: true}) {
		t.Fatalf("%+v %v", res, err)
	}
}
