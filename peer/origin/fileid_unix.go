//go:build unix

package origin

import (
	"io/fs"
	"syscall"
)

// fileID returns the device and inode numbers of fi, or zeros when the
// platform does not report them.
func fileID(fi fs.FileInfo) (dev, ino uint64) {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return uint64(st.Dev), uint64(st.Ino) //nolint:unconvert // field types differ by platform
	}
	return 0, 0
}
