//go:build unix

package peer

import "syscall"

// fdLimit is the process's soft limit of open files. Since Go 1.19 the
// runtime raises it to the hard limit at start (and restores the original
// for child processes), so this is what the agent really has.
func fdLimit() (uint64, bool) {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		return 0, false
	}
	return r.Cur, true
}
