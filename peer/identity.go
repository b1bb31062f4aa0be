package peer

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/google/uuid"

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

// loadOrCreateToken returns the local API token, readable only by the
// agent's own user. Mutating API calls must present it.
func loadOrCreateToken(dir string) (string, error) {
	path := filepath.Join(dir, tokenFile)
	if b, err := os.ReadFile(path); err == nil && len(strings.TrimSpace(string(b))) >= 32 {
		return strings.TrimSpace(string(b)), nil
	}
	buf := make([]byte, 32)
	if _, err := rand.Read(buf); err != nil {
		return "", fmt.Errorf("make api token: %w", err)
	}
	tok := hex.EncodeToString(buf)
	if err := atomicfile.Write(path, []byte(tok+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("write api token: %w", err)
	}
	return tok, nil
}

// ReadToken reads the local API token from a data dir (used by the CLI).
func ReadToken(dir string) (string, error) {
	b, err := os.ReadFile(filepath.Join(dir, tokenFile))
	if err != nil {
		return "", fmt.Errorf("read api token: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}
