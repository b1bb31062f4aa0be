package origin

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/redleader-p2p/redleader/peer/content"
)

// Server secret file.
const (
	// SecretFile is the file in the data directory holding the server
	// secret key (raw bytes) when none is configured.
	SecretFile = "origin-secret"
	// SecretSize is the size of a generated secret key.
	SecretSize = 32
	// maxSecretSize bounds the secret file read.
	maxSecretSize = 4096
)

// LoadSecret reads the server secret key kept in dataDir/SecretFile. The
// error wraps fs.ErrNotExist when there is none, and ErrBadSecret when the
// file is empty or larger than 4 KiB.
func LoadSecret(dataDir string) (content.ServerSecret, error) {
	p := filepath.Join(dataDir, SecretFile)
	f, err := os.Open(p)
	if err != nil {
		return content.ServerSecret{}, fmt.Errorf("read server secret: %w", err)
	}
	defer f.Close()
	key, err := io.ReadAll(io.LimitReader(f, maxSecretSize+1))
	if err != nil {
		return content.ServerSecret{}, fmt.Errorf("read server secret %s: %w", p, err)
	}
	if len(key) == 0 || len(key) > maxSecretSize {
		return content.ServerSecret{}, fmt.Errorf("server secret %s: %d bytes (want 1 to %d): %w",
			p, len(key), maxSecretSize, ErrBadSecret)
	}
	return content.NewServerSecret(key), nil
}

// LoadOrCreateSecret returns the server secret kept in dataDir, first
// generating SecretSize random bytes and storing them (mode 0600, the
// directory created with mode 0700) when there is none. created reports
// whether it did. Two processes racing here end up with the same key.
func LoadOrCreateSecret(dataDir string) (secret content.ServerSecret, created bool, err error) {
	secret, err = LoadSecret(dataDir)
	if !errors.Is(err, fs.ErrNotExist) {
		return secret, false, err
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return secret, false, fmt.Errorf("create server secret: %w", err)
	}
	tmp, err := os.CreateTemp(dataDir, "."+SecretFile+"-*") // mode 0600
	if err != nil {
		return secret, false, fmt.Errorf("create server secret: %w", err)
	}
	defer os.Remove(tmp.Name())
	key := make([]byte, SecretSize)
	_, _ = rand.Read(key) // never fails
	_, err = tmp.Write(key)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return secret, false, fmt.Errorf("create server secret: %w", err)
	}
	// A hard link publishes the complete file atomically and never
	// replaces a secret another process stored first.
	switch err := os.Link(tmp.Name(), filepath.Join(dataDir, SecretFile)); {
	case errors.Is(err, fs.ErrExist):
		secret, err = LoadSecret(dataDir)
		return secret, false, err
	case err != nil:
		return secret, false, fmt.Errorf("create server secret: %w", err)
	}
	return content.NewServerSecret(key), true, nil
}
