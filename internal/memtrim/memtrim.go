// Package memtrim releases the resident pages of the agent's own
// executable once start-up is over.
//
// Most of an idle agent's resident set is not its heap but the pages of
// its executable: about 15 MB of code, read-only data and the function
// table, nearly all of it mapped in by start-up (the kernel maps a fault's
// neighbours too). Once start-up is over (flag and config parsing, TLS and
// certificate set-up, every package's init), most of them are never used
// again. Executable drops them from the process's page tables: they stay
// in the page cache, shared and clean, and whatever the agent still runs
// faults back in on its next use (a minor fault, no disk read). Only
// read-only mappings of the executable that hold no private (copied on
// write) page are touched, so nothing the process wrote can be lost.
package memtrim
