package main

import (
	"context"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/redleader-p2p/redleader/peer/api"
)

// reloadCmd is `redleader reload`: the local agent re-reads the config it
// was started with (POST /v1/reload, token), as on SIGHUP.
func reloadCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "reload",
		Short: "Make the agent re-read its config file: live keys applied at once, the others named (like SIGHUP)",
		Long: "The agent re-reads the config file, environment and flags it was started with (never a file named here) " +
			"and applies the keys that can change live; keys that need a restart are listed and keep their values. " +
			"A bad file is refused whole (exit 1, the same messages as at start-up): the running config stays.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var out api.ReloadResponse
			err := g.callAgent(cmd, true, func(ctx context.Context, c *api.Client) (err error) {
				out, err = c.Reload(ctx)
				return err
			})
			if err != nil {
				return err
			}
			if g.json {
				return g.printJSON(out)
			}
			return printReload(g.stdout, out)
		},
	}
}

// printReload prints one line per changed key: applied, or left until a
// restart.
func printReload(w io.Writer, r api.ReloadResponse) error {
	file := r.File
	if file == "" {
		file = "(no config file: environment and flags)"
	}
	if len(r.Applied) == 0 && len(r.Restart) == 0 {
		_, err := fmt.Fprintf(w, "reloaded %s: no key changed\n", file)
		return err
	}
	if _, err := fmt.Fprintf(w, "reloaded %s\n", file); err != nil {
		return err
	}
	for _, ch := range r.Applied {
		line := fmt.Sprintf("  applied          %s: %s -> %s", ch.Key, ch.Old, ch.New)
		if ch.Policy != "" {
			line += fmt.Sprintf(" (the committed policy's %s stays in force: `redleader policy set` changes it)", ch.Policy)
		}
		if _, err := fmt.Fprintln(w, line); err != nil {
			return err
		}
	}
	for _, ch := range r.Restart {
		line := fmt.Sprintf("  needs a restart  %s: %s -> %s (left as it was)", ch.Key, ch.Old, ch.New)
		if ch.Note != "" {
			line += ": " + ch.Note
		}
		if _, err := fmt.Fprintln(w, line); err != nil {
			return err
		}
	}
	return nil
}
