//go:build !linux

// Package lab is Linux-only (network namespaces); on other systems it is
// empty so that `go build ./...` still works there.
package lab
