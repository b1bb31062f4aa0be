//go:build windows

package procs

import "golang.org/x/sys/windows"

// processCPU is the CPU time, user and system, in seconds, the process has
// used since it started; negative if it cannot be read.
func processCPU() float64 {
	var created, exited, kernel, user windows.Filetime
	if err := windows.GetProcessTimes(windows.CurrentProcess(), &created, &exited, &kernel, &user); err != nil {
		return -1
	}
	// Filetime counts 100 ns units in two 32-bit halves.
	ticks := func(f windows.Filetime) float64 { return float64(uint64(f.HighDateTime)<<32 | uint64(f.LowDateTime)) }
	return (ticks(kernel) + ticks(user)) / 1e7
}
