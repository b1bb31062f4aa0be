package shaping

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"unicode"
)

// ErrBadRate is returned (wrapped) for a rate string that cannot be parsed.
var ErrBadRate = errors.New("bad rate")

// Rate is a bandwidth in bits per second. Zero means unlimited.
//
// Rates are written as a non-negative decimal number (no exponent) and a
// unit, powers of 1000 as tc and network gear count them:
//   - bits per second: bit, kbit, Mbit, Gbit, in any case ("MBIT" too);
//   - the same as bps, kbps or Kbps, Mbps, Gbps, written exactly so;
//   - bytes per second: B, KB or kB, MB, GB (KB = 1000 bytes), written
//     exactly so.
//
// Any other spelling, such as "Mb", "mb" or "mbps", is an error: bits and
// bytes are never guessed. Spaces around the number and unit are ignored.
// "0" needs no unit; any zero rate means unlimited. A positive rate below
// 1 bit/s becomes 1 bit/s; other fractions of a bit are dropped.
type Rate int64

// Unlimited is the zero Rate: no limit.
const Unlimited Rate = 0

var rateUnits = []struct {
	suffix string // matched exactly; the "bit" units also in any case
	bits   float64
}{
	{"Gbit", 1e9}, {"Mbit", 1e6}, {"kbit", 1e3}, {"Kbit", 1e3}, {"bit", 1},
	{"Gbps", 1e9}, {"Mbps", 1e6}, {"kbps", 1e3}, {"Kbps", 1e3}, {"bps", 1},
	{"GB", 8e9}, {"MB", 8e6}, {"KB", 8e3}, {"kB", 8e3}, {"B", 8},
}

// ParseRate parses a rate string such as "50Mbit", "256kbit", "1.5MB" or "0".
func ParseRate(s string) (Rate, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, fmt.Errorf("%w: empty (use 0 for unlimited)", ErrBadRate)
	}
	i := strings.IndexFunc(s, func(r rune) bool { return !(unicode.IsDigit(r) || r == '.') })
	num, unit := s, ""
	if i >= 0 {
		num, unit = strings.TrimSpace(s[:i]), strings.TrimSpace(s[i:])
	}
	v, err := strconv.ParseFloat(num, 64)
	if err != nil || v < 0 || math.IsInf(v, 0) || math.IsNaN(v) {
		return 0, fmt.Errorf("%w: %q: want a non-negative number and a unit like 50Mbit", ErrBadRate, s)
	}
	if unit == "" {
		if v == 0 {
			return Unlimited, nil
		}
		return 0, fmt.Errorf("%w: %q: missing unit (bit, kbit, Mbit, Gbit, B, KB, MB, GB)", ErrBadRate, s)
	}
	mult, ok := unitBits(unit)
	if !ok {
		return 0, fmt.Errorf("%w: %q: unknown unit %q (bit, kbit, Mbit, Gbit, B, KB, MB, GB)", ErrBadRate, s, unit)
	}
	bits := v * mult
	if bits > math.MaxInt64/2 {
		return 0, fmt.Errorf("%w: %q: too large", ErrBadRate, s)
	}
	if bits > 0 && bits < 1 {
		bits = 1
	}
	return Rate(bits), nil
}

func unitBits(unit string) (float64, bool) {
	for _, u := range rateUnits {
		if unit == u.suffix {
			return u.bits, true
		}
	}
	for _, u := range rateUnits {
		if strings.EqualFold(unit, u.suffix) && strings.HasSuffix(strings.ToLower(u.suffix), "bit") {
			return u.bits, true
		}
	}
	return 0, false
}

// BytesPerSecond is the rate in bytes per second (0 for unlimited).
func (r Rate) BytesPerSecond() float64 { return float64(r) / 8 }

// String formats the rate in the largest whole unit: "50Mbit", "256kbit", "0".
func (r Rate) String() string {
	switch {
	case r == 0:
		return "0"
	case r%1e9 == 0:
		return strconv.FormatInt(int64(r/1e9), 10) + "Gbit"
	case r%1e6 == 0:
		return strconv.FormatInt(int64(r/1e6), 10) + "Mbit"
	case r%1e3 == 0:
		return strconv.FormatInt(int64(r/1e3), 10) + "kbit"
	}
	return strconv.FormatInt(int64(r), 10) + "bit"
}

// MarshalText implements encoding.TextMarshaler.
func (r Rate) MarshalText() ([]byte, error) { return []byte(r.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (r *Rate) UnmarshalText(b []byte) error {
	v, err := ParseRate(string(b))
	if err != nil {
		return err
	}
	*r = v
	return nil
}
