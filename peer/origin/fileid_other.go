//go:build !unix

package origin

import "io/fs"

// fileID returns zeros: this platform's FileInfo carries no file ID, so a
// file version is told by size and modification time alone.
func fileID(fs.FileInfo) (dev, ino uint64) { return 0, 0 }
