package origin

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"

	"github.com/redleader-p2p/redleader/peer/content"
)

// sameSecret compares two secrets through a segment secret they derive.
func sameSecret(a, b content.ServerSecret) bool {
	var hod content.Digest
	return a.SegmentSecret(content.SHA256, hod) == b.SegmentSecret(content.SHA256, hod)
}

func TestLoadOrCreateSecret(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	if _, err := LoadSecret(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("LoadSecret before creation: %v", err)
	}
	s1, created, err := LoadOrCreateSecret(dir)
	if err != nil || !created {
		t.Fatalf("create: created %v, err %v", created, err)
	}
	fi, err := os.Stat(filepath.Join(dir, SecretFile))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() != SecretSize {
		t.Fatalf("secret file %d bytes, want %d", fi.Size(), SecretSize)
	}
	if runtime.GOOS != "windows" && fi.Mode().Perm() != 0o600 {
		t.Fatalf("secret file mode %v, want 0600", fi.Mode().Perm())
	}
	s2, created, err := LoadOrCreateSecret(dir)
	if err != nil || created {
		t.Fatalf("reload: created %v, err %v", created, err)
	}
	if !sameSecret(s1, s2) {
		t.Fatal("reloaded secret differs")
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Fatalf("data dir holds %d files, want only %s", len(entries), SecretFile)
	}
}

func TestLoadOrCreateSecretRace(t *testing.T) {
	dir := t.TempDir()
	const n = 8
	secrets := make([]content.ServerSecret, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			s, _, err := LoadOrCreateSecret(dir)
			if err != nil {
				t.Error(err)
			}
			secrets[i] = s
		})
	}
	wg.Wait()
	for i := 1; i < n; i++ {
		if !sameSecret(secrets[0], secrets[i]) {
			t.Fatal("racing creators ended with different secrets")
		}
	}
}

func TestLoadSecretBad(t *testing.T) {
	for name, data := range map[string][]byte{"empty": nil, "huge": make([]byte, maxSecretSize+1)} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, SecretFile), data, 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := LoadSecret(dir); !errors.Is(err, ErrBadSecret) {
				t.Fatalf("err %v, want ErrBadSecret", err)
			}
			if _, _, err := LoadOrCreateSecret(dir); !errors.Is(err, ErrBadSecret) {
				t.Fatalf("LoadOrCreateSecret: err %v, want ErrBadSecret", err)
			}
		})
	}
	dir := t.TempDir()
	key := []byte("exported key bytes")
	if err := os.WriteFile(filepath.Join(dir, SecretFile), key, 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := LoadSecret(dir)
	if err != nil || !sameSecret(s, content.NewServerSecret(key)) {
		t.Fatalf("LoadSecret of a given key: %v", err)
	}
}
