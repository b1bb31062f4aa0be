package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/redleader-p2p/redleader/peer/api"
	"github.com/redleader-p2p/redleader/peer/content"
	"github.com/redleader-p2p/redleader/peer/origin"
)

func cacheCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cache",
		Short: "Pre-stage content in the local agent's segment cache, list it, drop segments",
		Long: "cache manages the local agent's segment cache: content added here is served to LAN peers\n" +
			"(MS-PCCRD, MS-PCCRR) under the segment IDs a later download of the same content probes for.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return fmt.Errorf("%w: cache needs a subcommand: add, list or rm", errUsage)
		},
	}
	cmd.AddCommand(cacheAddCmd(g), cacheListCmd(g), cacheRmCmd(g))
	return cmd
}

func cacheAddCmd(g *globals) *cobra.Command {
	var ciPath, passphrase string
	cmd := &cobra.Command{
		Use:   "add FILE (--content-info CI | --secret-passphrase P)",
		Short: "Add a file's content to the cache, every block verified against its content information",
		Long: "add streams FILE (read as the calling user; the agent never opens it) to the local agent, which\n" +
			"verifies every block against the content information before it stores it. The content information\n" +
			"is --content-info CI (from the origin: `redleader hash FILE -o CI`, or an MS-PCCRTP answer; a range's\n" +
			"content information adds that range of FILE), or is computed here from FILE with the server secret\n" +
			"of --secret-passphrase (like `redleader hash`). A file that does not match is refused: segments\n" +
			"completed before the mismatch stay, the failing one is removed again (unless it was cached before).",
		Args: func(_ *cobra.Command, args []string) error {
			switch {
			case len(args) != 1:
				return fmt.Errorf("%w: cache add takes one FILE", errUsage)
			case (ciPath == "") == (passphrase == ""):
				return fmt.Errorf("%w: cache add needs --content-info CI or --secret-passphrase P (one of them)", errUsage)
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			f, size, err := openRegular(args[0])
			if err != nil {
				return err
			}
			defer f.Close()
			ci, info, err := contentInfo(cmd.Context(), f, ciPath, passphrase)
			if err != nil {
				return err
			}
			start, end := info.Range()
			if uint64(size) < end {
				return fmt.Errorf("%s has %d bytes, its content information describes bytes [%d, %d): not this file?",
					args[0], size, start, end)
			}
			if uint64(size) > end {
				fmt.Fprintf(g.stderr, "redleader: note: %s has %d bytes after the %d its content information describes; they are not added\n",
					args[0], uint64(size)-end, end)
			}
			c, err := g.client(cmd, true)
			if err != nil {
				return err
			}
			// No overall timeout: a big file over a slow disk takes what
			// it takes; the agent drops an upload that stalls for a minute.
			res, err := c.CacheAdd(cmd.Context(), ci, io.NewSectionReader(f, int64(start), int64(end-start)))
			if err != nil {
				return agentError(c.Addr(), err)
			}
			if g.json {
				return g.printJSON(res)
			}
			if err := printCacheSegments(g, res.Segments); err != nil {
				return err
			}
			_, err = fmt.Fprintf(g.stdout, "%s: %s verified in %d blocks, %d of them new to the cache\n",
				args[0], sizeString(res.Bytes), res.VerifiedBlocks, res.AddedBlocks)
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&ciPath, "content-info", "", "content information of FILE (`CI` file: MS-PCCRC v1 or v2 bytes)")
	f.StringVar(&passphrase, "secret-passphrase", "", "compute the content information with the server secret of passphrase `P`")
	return cmd
}

// openRegular opens path, which must be a regular file, and returns its size.
func openRegular(path string) (*os.File, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, err
	}
	fi, err := f.Stat()
	if err == nil && !fi.Mode().IsRegular() {
		err = fmt.Errorf("%s: %w", path, origin.ErrNotRegular)
	}
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	return f, fi.Size(), nil
}

// contentInfo reads and parses the content information at ciPath, or
// computes f's with the passphrase's secret; it returns its bytes and
// parsed form.
func contentInfo(ctx context.Context, f *os.File, ciPath, passphrase string) ([]byte, *content.Info, error) {
	if ciPath == "" {
		info, err := content.Generate(ctx, io.NewSectionReader(f, 0, 1<<62), content.PassphraseSecret(passphrase))
		if err != nil {
			return nil, nil, fmt.Errorf("hash %s: %w", f.Name(), err)
		}
		ci, err := info.MarshalBinary()
		return ci, info, err
	}
	cf, err := os.Open(ciPath)
	if err != nil {
		return nil, nil, fmt.Errorf("content information: %w", err)
	}
	defer cf.Close()
	ci, err := io.ReadAll(io.LimitReader(cf, api.MaxContentInfo+1))
	switch {
	case err != nil:
		return nil, nil, fmt.Errorf("content information: %w", err)
	case len(ci) > api.MaxContentInfo:
		return nil, nil, fmt.Errorf("content information %s: larger than %d bytes", ciPath, api.MaxContentInfo)
	}
	info, err := content.Parse(ci)
	if err != nil {
		return nil, nil, fmt.Errorf("content information %s: %w", ciPath, err)
	}
	return ci, info, nil
}

func cacheListCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List the cached segments: ID, blocks held of the segment's total, bytes",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var out api.CacheListResponse
			err := g.callAgent(cmd, false, func(ctx context.Context, c *api.Client) (err error) {
				out, err = c.Cache(ctx)
				return err
			})
			if err != nil {
				return err
			}
			if g.json {
				return g.printJSON(out)
			}
			if err := printCacheSegments(g, out.Segments); err != nil {
				return err
			}
			limit := "no cap"
			if out.MaxBytes > 0 {
				limit = "cap " + sizeString(out.MaxBytes)
			}
			_, err = fmt.Fprintf(g.stdout, "%d segments, %s (%s)\n", len(out.Segments), sizeString(out.Bytes), limit)
			return err
		},
	}
}

func cacheRmCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "rm SEGMENT_ID...",
		Short: "Drop segments from the cache",
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) == 0 {
				return fmt.Errorf("%w: cache rm takes one or more SEGMENT_IDs", errUsage)
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			var errs []error
			for _, id := range args {
				err := g.callAgent(cmd, true, func(ctx context.Context, c *api.Client) error {
					_, err := c.CacheRemove(ctx, id)
					return err
				})
				var ae *api.Error
				switch {
				case err == nil:
					fmt.Fprintln(g.stdout, "removed", id)
				case errors.As(err, &ae) && ae.Status == http.StatusNotFound:
					errs = append(errs, fmt.Errorf("%s: not in the cache", id))
				case errors.As(err, &ae) && ae.Status != http.StatusUnauthorized:
					errs = append(errs, fmt.Errorf("%s: %w", id, err))
				default:
					return err // no agent, refused token: the same for every ID
				}
			}
			return errors.Join(errs...)
		},
	}
}

// printCacheSegments prints segments as a table.
func printCacheSegments(g *globals, segs []api.CacheSegment) error {
	w := tabwriter.NewWriter(g.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "SEGMENT\tOFFSET\tBLOCKS\tBYTES")
	for _, s := range segs {
		fmt.Fprintf(w, "%s\t%d\t%d/%d\t%s\n", s.Segment, s.Offset, s.Blocks, s.TotalBlocks, sizeString(s.Bytes))
	}
	return w.Flush()
}

// sizeString is n bytes in IEC units: 512 B, 64.0 KiB, 1.5 GiB.
func sizeString(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTP"[exp])
}
