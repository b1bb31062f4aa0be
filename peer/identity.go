package peer

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/google/uuid"

	"github.com/redleader-p2p/redleader/config"
	"github.com/redleader-p2p/redleader/internal/atomicfile"
)

const (
	nodeIDFile = "node-id"
	tokenFile  = "api-token"
)

// loadOrCreateNodeID returns the node's UUID, creating it on first start.
// The ID is the node's identity in gossip and Raft; it never changes with
// the hostname or the address.
func loadOrCreateNodeID(dir string) (string, error) {
	path := filepath.Join(dir, nodeIDFile)
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		id, perr := uuid.Parse(strings.TrimSpace(string(b)))
		if perr != nil {
			return "", fmt.Errorf("node id file %s is corrupt (delete it to make a new identity): %w", path, perr)
		}
		return id.String(), nil
	case !errors.Is(err, fs.ErrNotExist):
		return "", fmt.Errorf("read node id: %w", err)
	}
	id := uuid.NewString()
	if err := atomicfile.Write(path, []byte(id+"\n"), 0o644); err != nil {
		return "", fmt.Errorf("write node id: %w", err)
	}
	return id, nil
}

// minTokenLen is the shortest API token accepted from a file: the
// generated one has 64 hex digits.
const minTokenLen = 32

// checkFileModes is false where file modes do not express who may read a
// file (Windows: the ACL of the data dir does).
const checkFileModes = runtime.GOOS != "windows"

// loadOrCreateToken returns the local API token of <dir>/api-token,
// creating the file (mode 0600) on first start or when it holds no valid
// token. A file that group or others may read is repaired to 0600: the mode
// it had is returned (0 when nothing was repaired) so that the caller logs it.
func loadOrCreateToken(dir string) (tok string, loose fs.FileMode, err error) {
	path := filepath.Join(dir, tokenFile)
	if t, mode, err := readTokenFile(path); err == nil && validToken(t) == nil {
		if checkFileModes && mode&0o077 != 0 {
			if err := os.Chmod(path, 0o600); err != nil {
				return "", 0, fmt.Errorf("repair mode of api token %s: %w", path, err)
			}
			loose = mode
		}
		return t, loose, nil
	}
	buf := make([]byte, 32)
	if _, err := rand.Read(buf); err != nil {
		return "", 0, fmt.Errorf("make api token: %w", err)
	}
	tok = hex.EncodeToString(buf)
	if err := atomicfile.Write(path, []byte(tok+"\n"), 0o600); err != nil {
		return "", 0, fmt.Errorf("write api token: %w", err)
	}
	return tok, 0, nil
}

// loadDeployedToken reads a token file an admin deployed (api_token_file,
// api_metrics_token_file, named by key). Unlike the generated one it is
// never written: a file group or others may read is refused, and so is
// one without a valid token. Errors wrap config.ErrInvalid.
func loadDeployedToken(key, path string) (string, error) {
	tok, mode, err := readTokenFile(path)
	if err != nil {
		return "", fmt.Errorf("%w: %s: %w", config.ErrInvalid, key, err)
	}
	if checkFileModes && mode&0o077 != 0 {
		return "", fmt.Errorf("%w: %s: %s has mode %04o: group or others may read the token (chmod 600 it)",
			config.ErrInvalid, key, path, mode)
	}
	if err := validToken(tok); err != nil {
		return "", fmt.Errorf("%w: %s: %s: %w", config.ErrInvalid, key, path, err)
	}
	return tok, nil
}

// readTokenFile reads a token file (surrounding white space trimmed) and
// the permission bits it had when read. It reads at most 4 KiB.
func readTokenFile(path string) (string, fs.FileMode, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", 0, err
	}
	if !fi.Mode().IsRegular() {
		return "", 0, fmt.Errorf("%s is not a regular file", path)
	}
	b, err := io.ReadAll(io.LimitReader(f, 4<<10))
	if err != nil {
		return "", 0, err
	}
	return strings.TrimSpace(string(b)), fi.Mode().Perm(), nil
}

// validToken checks a token read from a file: long enough, and printable
// ASCII without spaces, so that it fits an Authorization header as is.
func validToken(tok string) error {
	if len(tok) < minTokenLen {
		return fmt.Errorf("the token has %d characters, want at least %d", len(tok), minTokenLen)
	}
	for _, c := range []byte(tok) {
		if c <= ' ' || c > '~' {
			return errors.New("the token must be printable ASCII without spaces")
		}
	}
	return nil
}

// ReadToken reads the local API token from a data dir's api-token.
func ReadToken(dir string) (string, error) {
	b, err := os.ReadFile(filepath.Join(dir, tokenFile))
	if err != nil {
		return "", fmt.Errorf("read api token: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// TokenPath is the file the API token of an agent with cfg is in:
// api_token_file, else <data_dir>/api-token.
func TokenPath(cfg config.Config) string {
	if cfg.APITokenFile != "" {
		return cfg.APITokenFile
	}
	return filepath.Join(cfg.DataDir, tokenFile)
}

// ReadTokenFor reads the API token of the agent with cfg (used by the
// CLI, which reads the agent's config): api_token_file, else the data
// dir's api-token.
func ReadTokenFor(cfg config.Config) (string, error) {
	b, err := os.ReadFile(TokenPath(cfg))
	if err != nil {
		return "", fmt.Errorf("read api token: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}
