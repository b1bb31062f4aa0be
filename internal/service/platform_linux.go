package service

import (
	"errors"
	"io"
	"os"
	"os/exec"
	"time"
)

// New is the systemd manager of the binary at binary.
func New(binary, version string, out io.Writer) (Manager, error) {
	if _, err := exec.LookPath("systemctl"); err != nil {
		return nil, errors.New("this machine has no systemd (systemctl not found): run `redleader agent` under your init system")
	}
	if fi, err := os.Stat("/run/systemd/system"); err != nil || !fi.IsDir() { // sd_booted(3)
		return nil, errors.New("systemd is not running on this machine (no /run/systemd/system): run `redleader agent` under your init system")
	}
	return &Systemd{Binary: binary, Version: version, Run: ExecRunner, Out: out, Settle: 2 * time.Second, Admin: requireRoot}, nil
}

func requireRoot() error {
	if os.Geteuid() != 0 {
		return errors.New("redleader service needs root: run it with sudo")
	}
	return nil
}
