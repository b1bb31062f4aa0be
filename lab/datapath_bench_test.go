//go:build linux

package lab_test

// `make bench-lab` (issue #10 Build 11): the data-path cases at
// their sizes, redleader against the naive baseline (every machine
// downloads with curl), as WAN copies and as time to the last completion
// over the bound, calibrated in the same run; one table.

import (
	"flag"
	"fmt"
	"maps"
	"os"
	"slices"
	"testing"
	"text/tabwriter"
	"time"
)

var benchLab = flag.Bool("bench-lab", false, "run TestDataPathBench: the issue's data-path cases at their sizes, one table (make bench-lab)")

// benchRow is one line of the table.
type benchRow struct {
	lab    string // e.g. "2×5, 100mbit"
	c      dpCase
	size   int64
	needed int
	rl     *dpResult
	naive  *dpResult
}

// benchGroup is the cases run on one lab.
type benchGroup struct {
	name    string
	cfg     dpConfig
	cases   []dpCase
	size    int64
	noNaive map[string]bool // cases without a curl run
}

// TestDataPathBench is `make bench-lab`: it skips unless -bench-lab.
func TestDataPathBench(t *testing.T) {
	if !*benchLab {
		t.Skip("the data-path bench runs with -bench-lab (make bench-lab)")
	}
	const size = 64 << 20
	files := map[string]int64{}
	for _, c := range dpCases() {
		files[c.file] = size
	}
	groups := []benchGroup{
		{name: "2×5, 100mbit", cfg: dpConfig{subnets: []int{5, 5}, wanRate: "100mbit", files: files, plain: true, rtt: dpRTT},
			cases: dpCases(), size: size, noNaive: map[string]bool{"SIGKILL the Red Leader halfway": true}},
		{name: "1×8, 100mbit", cfg: dpConfig{subnets: []int{8}, wanRate: "100mbit", files: map[string]int64{"plain8.bin": size}, plain: true},
			cases: []dpCase{{name: "plain http, 8 agents", kind: kindPlain, file: "plain8.bin", maxCopies: 1.05}}, size: size},
		{name: "1×5, 4mbit", cfg: dpConfig{subnets: []int{5}, wanRate: "4mbit", files: map[string]int64{"thin.bin": 16 << 20}},
			cases: []dpCase{{name: "thin link, redleader origin", kind: kindOrigin, file: "thin.bin", maxCopies: 1.10}}, size: 16 << 20},
	}
	start := time.Now()
	var rows []*benchRow
	for _, g := range groups {
		t.Run(g.name, func(t *testing.T) {
			d := newDPLab(t, g.cfg)
			calHost := d.agents[0][0].h
			for _, c := range g.cases {
				row := &benchRow{lab: g.name, c: c, size: g.size, needed: len(g.cfg.subnets)}
				rows = append(rows, row)
				t.Run(c.name, func(t *testing.T) {
					cal := d.calibrate(t, calHost, d.files[c.file], d.url(c.kind, c.file))
					r := d.runRedleader(t, c, cal, row.needed)
					row.rl = &r
					t.Log(r)
					if !g.noNaive[c.name] {
						n := d.runCurl(t, c, cal, row.needed)
						row.naive = &n
						t.Log(n)
					}
				})
			}
		})
	}
	printBench(os.Stdout, rows, time.Since(start))
}

// printBench writes the table.
func printBench(w *os.File, rows []*benchRow, took time.Duration) {
	fmt.Fprintf(w, "\nredleader data path vs the naive baseline (every machine downloads with curl); copies = WAN bytes / one curl copy alone,\n"+
		"bound = copies needed × the time of one curl copy alone, calibrated per case in this run (%v)\n\n", took.Round(time.Second))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "lab\tcase\tsize\tneeded\tredleader copies\ttime/bound\tcurl copies\ttime/bound\tissue bound\tmet\tnon-leader origin\tpeak RSS\t")
	for _, r := range rows {
		rl, rlRatio, naive, naiveRatio, met, other, rss := "-", "-", "-", "-", "-", "-", "-"
		if x := r.rl; x != nil {
			rl, rlRatio = fmt.Sprintf("%.3f", x.copies), fmt.Sprintf("%.2f", x.ratio())
			ok := len(x.failed) == 0 && x.copies <= r.c.maxCopies && (r.c.maxRatio == 0 || x.ratio() <= r.c.maxRatio)
			met = map[bool]string{true: "yes", false: "NO"}[ok]
			if len(x.failed) > 0 {
				met += fmt.Sprintf(" (%d failed)", len(x.failed))
			}
			var n int64
			for _, k := range slices.Sorted(maps.Keys(x.reasons)) {
				if k != "red_leader_fetch" {
					n += x.reasons[k]
				}
			}
			other, rss = mib(n), mib(x.rss)
		}
		if x := r.naive; x != nil {
			naive, naiveRatio = fmt.Sprintf("%.3f", x.copies), fmt.Sprintf("%.2f", x.ratio())
		}
		bound := fmt.Sprintf("≤%.2f", r.c.maxCopies)
		if r.c.maxRatio > 0 {
			bound += fmt.Sprintf(", ≤%.1f×", r.c.maxRatio)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", r.lab, r.c.name, mib(r.size), r.needed,
			rl, rlRatio, naive, naiveRatio, bound, met, other, rss)
	}
	tw.Flush()
}
