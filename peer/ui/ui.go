// Package ui is the agent's dashboard: a read-only web page served on the
// local API under /ui/ (http://127.0.0.1:7380/ui/ by default), and the
// throughput recorder whose samples the page charts.
//
// The page is plain HTML, CSS and JavaScript in static/, embedded in the
// binary with go:embed: no build step, no library, nothing fetched from
// anywhere but the agent's own API. It polls the read endpoints every
// second (/v1/status, /v1/members, /v1/events, /v1/policy, /v1/jobs,
// /v1/throughput) and never sends the API token: mutating actions stay on
// the CLI. Edit the files in static/ and rebuild the binary to change it.
package ui

import (
	"embed"
	"io/fs"
	"net/http"
)

// Path is where the agent mounts Handler.
const Path = "/ui/"

//go:embed static
var static embed.FS

// contentSecurityPolicy lets the page load its own files and call its own
// API, nothing else: no inline script or style, no other origin, no frames.
const contentSecurityPolicy = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; " +
	"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// Handler serves the dashboard's files under Path (mount it there: the
// handler strips the prefix itself).
func Handler() http.Handler {
	sub, err := fs.Sub(static, "static")
	if err != nil {
		panic("ui: embedded static directory: " + err.Error()) // a build defect, caught by the tests
	}
	files := http.StripPrefix(Path[:len(Path)-1], http.FileServerFS(sub))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", contentSecurityPolicy)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		// The files change with the binary and carry no modification
		// time: always revalidate (they are a few KB on loopback).
		h.Set("Cache-Control", "no-cache")
		files.ServeHTTP(w, r)
	})
}
