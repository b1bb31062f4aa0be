package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/redleader-p2p/redleader/peer"
	"github.com/redleader-p2p/redleader/peer/api"
)

// errNoAgent: nothing answers on the API address.
var errNoAgent = errors.New("no redleader agent is running")

// apiAddr is --api, else api_addr from the effective config.
func (g *globals) apiAddr(cmd *cobra.Command) (string, error) {
	if g.api != "" {
		return g.api, nil
	}
	cfg, err := g.loadConfig(cmd.Flags())
	if err != nil {
		return "", err
	}
	return cfg.APIAddr, nil
}

// getJSON fetches path from the local API into v.
func (g *globals) getJSON(cmd *cobra.Command, path string, v any) error {
	addr, err := g.apiAddr(cmd)
	if err != nil {
		return err
	}
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get("http://" + addr + path)
	if err != nil {
		var op *net.OpError
		if errors.As(err, &op) {
			return fmt.Errorf("%w at %s (start one with `redleader agent`)", errNoAgent, addr)
		}
		return fmt.Errorf("ask agent at %s: %w", addr, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 32<<20))
	if err != nil {
		return fmt.Errorf("read answer from %s: %w", addr, err)
	}
	if resp.StatusCode != http.StatusOK {
		var e api.ErrorResponse
		if json.Unmarshal(body, &e) == nil && e.Error != "" {
			return fmt.Errorf("agent at %s: %s", addr, e.Error)
		}
		return fmt.Errorf("agent at %s: HTTP %d", addr, resp.StatusCode)
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("agent at %s sent bad JSON: %w", addr, err)
	}
	return nil
}

func (g *globals) printJSON(v any) error {
	enc := json.NewEncoder(g.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func statusCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show the local agent's status",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var st api.StatusResponse
			if err := g.getJSON(cmd, "/v1/status", &st); err != nil {
				return err
			}
			if g.json {
				return g.printJSON(st)
			}
			w := tabwriter.NewWriter(g.stdout, 0, 0, 2, ' ', 0)
			rows := [][2]string{
				{"Node", st.Node}, {"Name", st.Name}, {"Subnet", st.Subnet}, {"Location", orDash(st.Location)},
				{"Address", fmt.Sprintf("%s:%d", st.Addr, st.GossipPort)}, {"Version", st.Version},
				{"Uptime", (time.Duration(st.UptimeS) * time.Second).String()},
				{"Members", fmt.Sprintf("%d (%d alive, %d suspect, %d left, %d dead)", st.Members.Total,
					st.Members.Alive, st.Members.Suspect, st.Members.Left, st.Members.Dead)},
				{"Role", st.Role},
				{"Red Leader", redLeaderLine(st.RedLeader)},
				{"Raft", fmt.Sprintf("%s, cluster %s, %d voters, %d standbys, term %d, commit %d, leader %s",
					st.Raft.State, orDash(st.Raft.ClusterID), st.Raft.Voters, st.Raft.Standbys, st.Raft.Term,
					st.Raft.CommitIndex, orDash(short(st.Raft.Leader)))},
			}
			for _, r := range rows {
				fmt.Fprintf(w, "%s:\t%s\n", r[0], r[1])
			}
			return w.Flush()
		},
	}
}

func membersCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "members",
		Short: "List the agents of the local agent's subnet",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var ms []api.MemberInfo
			if err := g.getJSON(cmd, "/v1/members", &ms); err != nil {
				return err
			}
			if g.json {
				return g.printJSON(ms)
			}
			w := tabwriter.NewWriter(g.stdout, 0, 0, 2, ' ', 0)
			fmt.Fprintln(w, "NODE\tNAME\tADDRESS\tSTATUS\tRANK\tPRIORITY\tVERSION\tPROGRESS\tUPTIME\tNLM")
			for _, m := range ms {
				name := m.Name
				if m.Self {
					name += " (self)"
				}
				rank := fmt.Sprint(m.Rank)
				if !m.Eligible {
					rank = "- (" + orDash(m.Ineligible) + ")"
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t%s\t%s\n", short(m.Node), name, m.Addr, m.Status,
					rank, m.Priority, m.Version, m.Progress, time.Duration(m.UptimeS)*time.Second, yesNo(m.NotLeaderMaterial))
			}
			return w.Flush()
		},
	}
}

func configCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "config",
		Short: "Print the effective configuration (defaults, file, environment)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := g.loadConfig(cmd.Flags())
			if err != nil {
				return err
			}
			if g.json {
				return g.printJSON(cfg.Map())
			}
			b, err := cfg.YAML()
			if err != nil {
				return err
			}
			_, err = g.stdout.Write(b)
			return err
		},
	}
}

func versionCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			if g.json {
				return g.printJSON(map[string]any{"version": version, "protocol_version": peer.ContentProtocolVersion})
			}
			_, err := fmt.Fprintf(g.stdout, "redleader %s (content protocol %d)\n", version, peer.ContentProtocolVersion)
			return err
		},
	}
}

func redLeaderLine(r *api.RedLeaderInfo) string {
	if r == nil {
		return "none"
	}
	state := "unconfirmed"
	if r.Confirmed {
		state = "confirmed"
	}
	return fmt.Sprintf("%s (%s), epoch %d, since %s, %s", short(r.Node), orDash(r.Name), r.Epoch,
		r.Since.Local().Format(time.DateTime), state)
}

func short(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return id
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
