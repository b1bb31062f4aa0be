package service

import (
	"errors"
	"io"
	"os"
)

// New is the launchd manager of the binary at binary.
func New(binary, _ string, out io.Writer) (Manager, error) {
	return &Launchd{Binary: binary, Run: ExecRunner, Out: out, Admin: requireRoot}, nil
}

func requireRoot() error {
	if os.Geteuid() != 0 {
		return errors.New("redleader service needs root: run it with sudo")
	}
	return nil
}
