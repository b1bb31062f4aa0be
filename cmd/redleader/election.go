package main

import (
	"context"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/redleader-p2p/redleader/peer/api"
)

func eventsCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "events",
		Short: "Show the subnet's election event log (appointments, marks, policy)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var evs []api.EventInfo
			err := g.callAgent(cmd, false, func(ctx context.Context, c *api.Client) (err error) {
				evs, err = c.Events(ctx)
				return err
			})
			if err != nil {
				return err
			}
			if g.json {
				return g.printJSON(evs)
			}
			w := tabwriter.NewWriter(g.stdout, 0, 0, 2, ' ', 0)
			fmt.Fprintln(w, "SEQ\tTIME\tKIND\tNODE\tEPOCH\tSEVERITY\tREASON")
			for _, e := range evs {
				fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%d\t%s\t%s\n", e.Seq, e.Time.Local().Format(time.DateTime), e.Kind,
					orDash(short(e.Node)), e.Epoch, e.Severity, e.Reason)
			}
			return w.Flush()
		},
	}
}

func nlmCmd(g *globals) *cobra.Command {
	var reason string
	cmd := &cobra.Command{
		Use:   "nlm NODE on|off",
		Short: "Mark a member not-leader-material (on) or clear the mark (off), through consensus",
		Long:  "NODE is a node ID, a unique prefix of one, or a member name. Works from any agent of the subnet.",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			var on bool
			switch args[1] {
			case "on":
				on = true
			case "off":
			default:
				return fmt.Errorf("%w: want on or off, not %q", errUsage, args[1])
			}
			var out api.NLMResponse
			err := g.callAgent(cmd, true, func(ctx context.Context, c *api.Client) (err error) {
				out, err = c.NLM(ctx, api.NLMRequest{Node: args[0], On: on, Reason: reason})
				return err
			})
			if err != nil {
				return err
			}
			if g.json {
				return g.printJSON(out)
			}
			_, err = fmt.Fprintf(g.stdout, "%s: not leader material %s\n", out.Node, args[1])
			return err
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "reason recorded in the event log")
	return cmd
}

func policyCmd(g *globals) *cobra.Command {
	show := func(p api.PolicyInfo) error {
		if g.json {
			return g.printJSON(p)
		}
		w := tabwriter.NewWriter(g.stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintf(w, "version:\t%d\nleader_rate:\t%s\npeer_rate:\t%s\nlan_rate:\t%s\n", p.Version, p.LeaderRate, p.PeerRate, p.LANRate)
		return w.Flush()
	}
	cmd := &cobra.Command{
		Use:   "policy",
		Short: "Show the subnet's committed bandwidth policy",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var p api.PolicyInfo
			err := g.callAgent(cmd, false, func(ctx context.Context, c *api.Client) (err error) {
				p, err = c.Policy(ctx)
				return err
			})
			if err != nil {
				return err
			}
			return show(p)
		},
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "set KEY=VALUE...",
		Short: "Change the policy through consensus: leader_rate=20Mbit peer_rate=128kbit lan_rate=0",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var in api.PolicyInfo
			for _, kv := range args {
				k, v, ok := strings.Cut(kv, "=")
				if !ok || v == "" {
					return fmt.Errorf("%w: %q: want KEY=VALUE", errUsage, kv)
				}
				switch k {
				case "leader_rate":
					in.LeaderRate = v
				case "peer_rate":
					in.PeerRate = v
				case "lan_rate":
					in.LANRate = v
				default:
					return fmt.Errorf("%w: unknown policy key %q (leader_rate, peer_rate, lan_rate)", errUsage, k)
				}
			}
			var out api.PolicyInfo
			err := g.callAgent(cmd, true, func(ctx context.Context, c *api.Client) (err error) {
				out, err = c.SetPolicy(ctx, in)
				return err
			})
			if err != nil {
				return err
			}
			return show(out)
		},
	})
	return cmd
}

func probeCmd(g *globals) *cobra.Command {
	var blocks uint32
	cmd := &cobra.Command{
		Use:   "probe SEGMENT_ID",
		Short: "Ask the LAN which peers hold a segment (MS-PCCRD), through the local agent",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var out api.ProbeResponse
			err := g.callAgent(cmd, false, func(ctx context.Context, c *api.Client) (err error) {
				out, err = c.Probe(ctx, args[0], blocks)
				return err
			})
			if err != nil {
				return err
			}
			if g.json {
				return g.printJSON(out)
			}
			w := tabwriter.NewWriter(g.stdout, 0, 0, 2, ' ', 0)
			fmt.Fprintln(w, "PEER\tBLOCKS\tFULL\tLATENCY")
			for _, m := range out.Matches {
				fmt.Fprintf(w, "%s\t%d\t%s\t%.1fms\n", m.Peer, m.Blocks, yesNo(m.Full), m.LatencyMS)
			}
			if len(out.Matches) == 0 {
				fmt.Fprintln(w, "(no peer holds it)")
			}
			return w.Flush()
		},
	}
	cmd.Flags().Uint32Var(&blocks, "blocks", 0, "block count of the whole segment (a reply with fewer is partial)")
	return cmd
}
