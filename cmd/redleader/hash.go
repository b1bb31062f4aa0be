package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/spf13/cobra"

	"github.com/redleader-p2p/redleader/config"
	"github.com/redleader-p2p/redleader/peer/content"
	"github.com/redleader-p2p/redleader/peer/origin"
)

// hashJSON is `redleader hash --json` output.
type hashJSON struct {
	File             string            `json:"file"`
	Size             int64             `json:"size"`
	Version          string            `json:"version"`
	HashAlgo         string            `json:"hash_algo"`
	ContentInfoBytes int               `json:"content_info_bytes"`
	Segments         []hashSegmentJSON `json:"segments"`
}

type hashSegmentJSON struct {
	Index  int    `json:"index"`
	Offset uint64 `json:"offset"`
	Length uint32 `json:"length"`
	Blocks int    `json:"blocks"`
	HoD    string `json:"hod"`
	ID     string `json:"id"`
}

func hashCmd(g *globals) *cobra.Command {
	var passphrase, output string
	cmd := &cobra.Command{
		Use:   "hash FILE",
		Short: "Print a file's content information summary (segments, HoD, segment IDs)",
		Long: "hash computes a file's v1 content information as `redleader origin` serves it: with the secret of\n" +
			"--secret-passphrase, else the origin's secret kept in the data dir.",
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) != 1 {
				return fmt.Errorf("%w: hash takes one FILE", errUsage)
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			secret, err := g.hashSecret(cmd, passphrase)
			if err != nil {
				return err
			}
			info, size, err := hashFile(args[0], secret)
			if err != nil {
				return err
			}
			ci, err := info.MarshalBinary()
			if err != nil {
				return err
			}
			if output != "" {
				if err := os.WriteFile(output, ci, 0o644); err != nil {
					return fmt.Errorf("write content information: %w", err)
				}
			}
			if !g.json {
				return content.WriteSummary(g.stdout, info)
			}
			out := hashJSON{File: args[0], Size: size, Version: info.Version.String(), HashAlgo: info.HashAlgo.String(),
				ContentInfoBytes: len(ci), Segments: []hashSegmentJSON{}}
			for i := range info.Segments {
				s := &info.Segments[i]
				out.Segments = append(out.Segments, hashSegmentJSON{Index: i, Offset: s.Offset, Length: s.Length,
					Blocks: s.BlockCount(), HoD: s.HoD.String(), ID: s.ID.String()})
			}
			return g.printJSON(out)
		},
	}
	f := cmd.Flags()
	f.StringVar(&passphrase, "secret-passphrase", "", "server secret passphrase (default: the origin's secret in the data dir)")
	f.StringVarP(&output, "output", "o", "", "also write the raw content information bytes to `FILE`")
	return cmd
}

// hashSecret is the passphrase's secret, else the origin's secret from the
// data dir, else (with a warning) the empty key: block hashes and HoDs do
// not depend on the secret, segment secrets and IDs do.
func (g *globals) hashSecret(cmd *cobra.Command, passphrase string) (content.ServerSecret, error) {
	if passphrase != "" {
		return content.PassphraseSecret(passphrase), nil
	}
	cfg, err := g.loadConfig(cmd.Flags())
	if err != nil {
		return content.ServerSecret{}, err
	}
	secret, err := origin.LoadSecret(cfg.DataDir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		fmt.Fprintf(g.stderr, "redleader: no origin secret in %s (pass --secret-passphrase or run `redleader origin` once): "+
			"segment IDs below use an empty secret\n", cfg.DataDir)
		return content.NewServerSecret(nil), nil
	case errors.Is(err, origin.ErrBadSecret):
		return secret, fmt.Errorf("%w: %w", config.ErrInvalid, err)
	}
	return secret, err
}

// hashFile generates the content information of the regular file path.
func hashFile(path string, secret content.ServerSecret) (*content.Info, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, 0, err
	}
	if !fi.Mode().IsRegular() {
		return nil, 0, fmt.Errorf("hash %s: %w", path, origin.ErrNotRegular)
	}
	info, err := content.Generate(context.Background(), f, secret)
	if err != nil {
		return nil, 0, fmt.Errorf("hash %s: %w", path, err)
	}
	return info, fi.Size(), nil
}
