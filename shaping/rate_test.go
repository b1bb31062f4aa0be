package shaping

import (
	"errors"
	"testing"
)

func TestParseRate(t *testing.T) {
	tests := []struct {
		in   string
		want Rate
		err  bool
	}{
		{"0", 0, false},
		{"50Mbit", 50e6, false},
		{"256kbit", 256e3, false},
		{"256Kbit", 256e3, false},
		{"1Gbit", 1e9, false},
		{"1.5Mbit", 1.5e6, false},
		{"100bit", 100, false},
		{"10mbit", 10e6, false},
		{"10Mbps", 10e6, false},
		{"1MB", 8e6, false},
		{"2KB", 16e3, false},
		{" 8 Mbit ", 8e6, false},
		// The case rules of Rate's doc: bit units in any case, the
		// others exactly.
		{"10MBIT", 10e6, false},
		{"1gbit", 1e9, false},
		{"1Kbps", 1e3, false},
		{"1kB", 8e3, false},
		{"0Mbit", 0, false},
		{"0.0001bit", 1, false},
		{"1.9bit", 1, false},
		{"10Mb", 0, true},
		{"10mb", 0, true},
		{"10mbps", 0, true},
		{"10MBPS", 0, true},
		{"1gb", 0, true},
		{"1b", 0, true},
		{"1e6bit", 0, true},
		{"", 0, true},
		{"50", 0, true},
		{"fast", 0, true},
		{"-1Mbit", 0, true},
		{"5Xbit", 0, true},
		{"1e400Mbit", 0, true},
		{"NaNMbit", 0, true},
	}
	for _, tt := range tests {
		got, err := ParseRate(tt.in)
		if (err != nil) != tt.err {
			t.Errorf("ParseRate(%q) error = %v, want error %v", tt.in, err, tt.err)
			continue
		}
		if err != nil && !errors.Is(err, ErrBadRate) {
			t.Errorf("ParseRate(%q) error %v is not ErrBadRate", tt.in, err)
		}
		if got != tt.want {
			t.Errorf("ParseRate(%q) = %d, want %d", tt.in, got, tt.want)
		}
	}
}

func TestRateStringRoundTrip(t *testing.T) {
	for _, r := range []Rate{0, 1, 999, 1000, 256e3, 50e6, 1e9, 1500} {
		got, err := ParseRate(r.String())
		if err != nil || got != r {
			t.Errorf("round trip %d -> %q -> %d, %v", r, r.String(), got, err)
		}
	}
}
