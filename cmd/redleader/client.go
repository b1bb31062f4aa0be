package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/redleader-p2p/redleader/peer"
	"github.com/redleader-p2p/redleader/peer/api"
)

// apiTimeout bounds each call of a client command to the agent.
const apiTimeout = 15 * time.Second

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

// client is an API client of the agent at --api (else api_addr). With
// token (mutating calls) it carries the API token: api_token_file, else
// the data dir's api-token. Reads carry it only when the config sets
// api_allow_remote (the agent then wants it everywhere) and this user can
// read it: on loopback, reads need no token, and the CLI does not hand it
// to whatever listens on the address without need.
func (g *globals) client(cmd *cobra.Command, token bool) (*api.Client, error) {
	if !token {
		addr, err := g.apiAddr(cmd)
		if err != nil {
			return nil, err
		}
		var opts []api.Option
		if cfg, err := g.loadConfig(cmd.Flags()); err == nil && cfg.APIAllowRemote {
			if tok, err := peer.ReadTokenFor(cfg); err == nil {
				opts = append(opts, api.WithToken(tok))
			}
		}
		return api.New(addr, opts...), nil
	}
	cfg, err := g.loadConfig(cmd.Flags())
	if err != nil {
		return nil, err
	}
	addr := cfg.APIAddr
	if g.api != "" {
		addr = g.api
	}
	tok, err := peer.ReadTokenFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("%w (run as the agent's user, or pass --data-dir or the agent's --config)", err)
	}
	return api.New(addr, api.WithToken(tok)), nil
}

// callAgent runs call with a client of the agent (see client) and a
// context bounded by apiTimeout, and words its error for the command line.
func (g *globals) callAgent(cmd *cobra.Command, token bool, call func(context.Context, *api.Client) error) error {
	c, err := g.client(cmd, token)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(cmd.Context(), apiTimeout)
	defer cancel()
	return agentError(c.Addr(), call(ctx, c))
}

// agentError words an error of the API client at addr as one line: no
// agent running, an error answer, or no answer in time.
func agentError(addr string, err error) error {
	var ae *api.Error
	switch {
	case err == nil:
		return nil
	case errors.Is(err, api.ErrNoAgent):
		return &cliError{fmt.Sprintf("no redleader agent is running at %s (start one with `redleader agent`)", addr), err}
	case errors.As(err, &ae):
		return &cliError{fmt.Sprintf("agent at %s answered %d: %s", addr, ae.Status, ae.Message), err}
	case errors.Is(err, api.ErrTimeout):
		return &cliError{fmt.Sprintf("agent at %s did not answer within %v", addr, apiTimeout), err}
	}
	return err
}

// cliError is an error with a message of its own for the command line; it
// still unwraps to the error it words.
type cliError struct {
	msg string
	err error
}

func (e *cliError) Error() string { return e.msg }
func (e *cliError) Unwrap() error { return e.err }

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
			err := g.callAgent(cmd, false, func(ctx context.Context, c *api.Client) (err error) {
				st, err = c.Status(ctx)
				return err
			})
			if err != nil {
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
			err := g.callAgent(cmd, false, func(ctx context.Context, c *api.Client) (err error) {
				ms, err = c.Members(ctx)
				return err
			})
			if err != nil {
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
