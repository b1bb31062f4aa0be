//go:build unix

package procs

import "syscall"

// processCPU is the CPU time, user and system, in seconds, the process has
// used since it started; negative if it cannot be read.
func processCPU() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return -1
	}
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}
