package main

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/redleader-p2p/redleader/config"
)

// keygenCmd prints a new cluster key: base64 of 32 random bytes, the
// format of cluster_key and of each cluster_keys entry.
func keygenCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "keygen",
		Short: "Print a new cluster key (for cluster_key or cluster_keys)",
		Long: "keygen prints a new random cluster key (base64 of 32 bytes). Put it in cluster_key on every agent, " +
			"or roll it out with cluster_keys, one agent at a time: [old] → [old, new] → [new, old] → [new].",
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			k := make([]byte, config.ClusterKeySize)
			if _, err := rand.Read(k); err != nil {
				return fmt.Errorf("random key: %w", err)
			}
			s := base64.StdEncoding.EncodeToString(k)
			if g.json {
				return g.printJSON(map[string]string{"key": s})
			}
			_, err := fmt.Fprintln(g.stdout, s)
			return err
		},
	}
}
