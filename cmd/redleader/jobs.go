package main

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/redleader-p2p/redleader/peer/api"
)

func jobsCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "jobs",
		Short: "List the local agent's download jobs; show, cancel, remove one, write its content",
		Long: "jobs lists the local agent's download jobs (`redleader fetch`): state, priority, progress and\n" +
			"where the bytes came from. A finished job is kept for jobs.retention (24 h by default).",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var list []api.JobInfo
			err := g.callAgent(cmd, false, func(ctx context.Context, c *api.Client) (err error) {
				list, err = c.Jobs(ctx)
				return err
			})
			if err != nil {
				return err
			}
			if g.json {
				return g.printJSON(list)
			}
			w := tabwriter.NewWriter(g.stdout, 0, 0, 2, ' ', 0)
			fmt.Fprintln(w, "ID\tSTATE\tPRIORITY\tPROGRESS\tFROM\tURL\tERROR")
			for _, j := range list {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", j.ID, j.State, j.Priority, progressLine(j), orDash(fromLine(j.Bytes)), j.URL, orDash(j.Error))
			}
			return w.Flush()
		},
	}
	cmd.AddCommand(jobsShowCmd(g), jobsCancelCmd(g), jobsRmCmd(g), jobsGetCmd(g))
	return cmd
}

// oneJobArgs takes one job ID (a unique prefix of at least 4 characters
// will do).
func oneJobArgs(name string) cobra.PositionalArgs {
	return func(_ *cobra.Command, args []string) error {
		if len(args) != 1 {
			return fmt.Errorf("%w: jobs %s takes one job ID", errUsage, name)
		}
		return nil
	}
}

func jobsShowCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "show ID",
		Short: "Show a job and its audit: per segment, where its bytes came from and why",
		Args:  oneJobArgs("show"),
		RunE: func(cmd *cobra.Command, args []string) error {
			var d api.JobDetail
			err := g.callAgent(cmd, false, func(ctx context.Context, c *api.Client) (err error) {
				d, err = c.Job(ctx, args[0], false)
				return err
			})
			if err != nil {
				return err
			}
			if g.json {
				return g.printJSON(d)
			}
			return printJob(g, d)
		},
	}
}

func printJob(g *globals, d api.JobDetail) error {
	headers := "none"
	if len(d.Headers) > 0 {
		headers = strings.Join(d.Headers, ", ") + " (values not shown)"
	}
	when := func(t *time.Time) string {
		if t == nil {
			return "-"
		}
		return t.Local().Format(time.DateTime)
	}
	origin := sizeString(d.Bytes.Origin)
	if len(d.Bytes.OriginByReason) > 0 {
		var parts []string
		for _, r := range slices.Sorted(maps.Keys(d.Bytes.OriginByReason)) {
			parts = append(parts, r+" "+sizeString(d.Bytes.OriginByReason[r]))
		}
		origin += " (" + strings.Join(parts, ", ") + ")"
	}
	w := tabwriter.NewWriter(g.stdout, 0, 0, 2, ' ', 0)
	rows := [][2]string{
		{"Job", d.ID}, {"URL", d.URL}, {"State", d.State}, {"Error", orDash(d.Error)}, {"Priority", d.Priority},
		{"Expected SHA-256", orDash(d.SHA256)}, {"Headers", headers}, {"Share", yesNo(d.Share)},
		{"Created", when(&d.Created)}, {"Started", when(d.Started)}, {"Finished", when(d.Finished)},
		{"Progress", progressLine(d.JobInfo)}, {"Resumes", fmt.Sprint(d.Resumes)},
		{"Received", fmt.Sprintf("cache %s, peers %s, origin %s", sizeString(d.Bytes.Cache), sizeString(d.Bytes.Peers), origin)},
		{"SHA-256", orDash(d.ContentSHA256)},
	}
	for _, r := range rows {
		fmt.Fprintf(w, "%s:\t%s\n", r[0], r[1])
	}
	if err := w.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(g.stdout)
	if len(d.Segments) == 0 {
		_, err := fmt.Fprintln(g.stdout, "No segment stored yet.")
		return err
	}
	w = tabwriter.NewWriter(g.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "SEGMENT\tOFFSET\tLENGTH\tSOURCE\tBYTES\tWHY")
	for _, s := range d.Segments {
		src, why := s.Source, "-"
		switch s.Source {
		case "peer":
			src = "peer " + s.Peer
		case "origin":
			why = reasonText(s.Reason)
		}
		fmt.Fprintf(w, "%d\t%d\t%s\t%s\t%s\t%s\n", s.Segment, s.Offset, sizeString(s.Length), src, sizeString(s.Bytes), why)
	}
	return w.Flush()
}

// reasonText says why origin bytes crossed the WAN.
func reasonText(r string) string {
	switch r {
	case "red_leader_fetch":
		return r + ": this agent is the Red Leader and fetched for the subnet"
	case "no_red_leader":
		return r + ": the subnet had no confirmed Red Leader"
	case "fallback_after_delay":
		return r + ": no block came from the Red Leader for wan_fallback_delay"
	case "bad_block_from_peer":
		return r + ": a peer sent a bad block and no other peer had it"
	case "catalog_conflict":
		return r + ": the subnet catalog holds conflicting entries for the content"
	case "private_content":
		return r + ": fetched with credentials and not --share"
	case "standalone":
		return r + ": fetched on this machine alone (no single flight for this content)"
	}
	return r
}

func jobsCancelCmd(g *globals) *cobra.Command {
	return jobsDeleteCmd(g, "cancel", "Cancel a queued or running job (its bytes are dropped)", false,
		func(d api.JobDetail) error {
			return fmt.Errorf("job %s is already %s (`redleader jobs rm %s` removes it)", d.ID, d.State, d.ID)
		},
		func(del api.JobDeleteResponse) error {
			if !del.Cancelled {
				return fmt.Errorf("job %s %s before it could be cancelled", del.ID, del.State)
			}
			_, err := fmt.Fprintln(g.stdout, "cancelled", del.ID)
			return err
		})
}

func jobsRmCmd(g *globals) *cobra.Command {
	return jobsDeleteCmd(g, "rm", "Remove a finished job: its record, audit and content", true,
		func(d api.JobDetail) error {
			return fmt.Errorf("job %s is %s (`redleader jobs cancel %s` first)", d.ID, d.State, d.ID)
		},
		func(del api.JobDeleteResponse) error {
			_, err := fmt.Fprintln(g.stdout, "removed", del.ID)
			return err
		})
}

// jobsDeleteCmd is `jobs cancel` (finished false) and `jobs rm` (finished
// true): both DELETE the job, each only in its own states; refuse says why
// a job in the other states is left alone, done prints the outcome.
func jobsDeleteCmd(g *globals, name, short string, finished bool, refuse func(api.JobDetail) error,
	done func(api.JobDeleteResponse) error) *cobra.Command {
	return &cobra.Command{
		Use:   name + " ID",
		Short: short,
		Args:  oneJobArgs(name),
		RunE: func(cmd *cobra.Command, args []string) error {
			var del api.JobDeleteResponse
			err := g.callAgent(cmd, true, func(ctx context.Context, c *api.Client) error {
				d, err := c.Job(ctx, args[0], true)
				if err != nil {
					return err
				}
				if d.Over() != finished {
					return refuse(d)
				}
				del, err = c.DeleteJob(ctx, d.ID)
				return err
			})
			if err != nil {
				return err
			}
			if g.json {
				return g.printJSON(del)
			}
			return done(del)
		},
	}
}

func jobsGetCmd(g *globals) *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "get ID -o FILE",
		Short: "Write a done job's content to FILE (from the agent: no new download)",
		Long: "get writes the verified content of a done job to FILE, as the calling user, through a temporary\n" +
			"file in FILE's directory renamed over FILE once complete: a failure leaves nothing at FILE.",
		Args: func(c *cobra.Command, args []string) error {
			if err := oneJobArgs("get")(c, args); err != nil {
				return err
			}
			if out == "" {
				return fmt.Errorf("%w: jobs get needs -o FILE", errUsage)
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			d, err := openDest(out)
			if err != nil {
				return err
			}
			defer d.abort()
			c, err := g.client(cmd, true)
			if err != nil {
				return err
			}
			var j api.JobDetail
			if err := g.call(cmd.Context(), c, func(ctx context.Context) (err error) {
				j, err = c.Job(ctx, args[0], true)
				return err
			}); err != nil {
				return err
			}
			if err := g.jobOutcome(j.JobInfo); err != nil {
				return err
			}
			n, err := g.writeContent(cmd.Context(), c, j.JobInfo, d)
			if err != nil {
				return err
			}
			if g.json {
				return g.printJSON(fetchResult{Job: j.JobInfo, File: d.path, Bytes: n, SHA256: j.ContentSHA256})
			}
			_, err = fmt.Fprintf(g.stdout, "%s: %s, sha256 %s\n", d.path, sizeString(n), j.ContentSHA256)
			return err
		},
	}
	cmd.Flags().StringVarP(&out, "output", "o", "", "write the content to `FILE`")
	return cmd
}
