//go:build !linux

package procs

import (
	"errors"
	"time"
)

// defaultTimerSlack: timer slack is a Linux knob; elsewhere never governed.
const defaultTimerSlack = 0

var errNoTimerSlack = errors.New("timer slack: linux only")

func timerSlack() (time.Duration, error) { return 0, errNoTimerSlack }

func setTimerSlack(time.Duration) error { return errNoTimerSlack }
