//go:build !unix && !windows

package procs

// processCPU: not available here; New turns the Governor off.
func processCPU() float64 { return -1 }
