// Package jsontime provides time values in the JSON shapes sendgate's
// reports use: durations as a number of seconds.
package jsontime

import (
	"fmt"
	"strconv"
	"time"
)

// Seconds is a duration that JSON shows as a number of seconds.
type Seconds time.Duration

// MarshalJSON writes the duration in seconds.
func (s Seconds) MarshalJSON() ([]byte, error) {
	return strconv.AppendFloat(nil, time.Duration(s).Seconds(), 'f', -1, 64), nil
}

// UnmarshalJSON reads a number of seconds.
func (s *Seconds) UnmarshalJSON(b []byte) error {
	f, err := strconv.ParseFloat(string(b), 64)
	if err != nil {
		return fmt.Errorf("seconds: %w", err)
	}
	*s = Seconds(f * float64(time.Second))
	return nil
}

// String returns the duration rounded to the second ("2h10m0s").
func (s Seconds) String() string { return time.Duration(s).Round(time.Second).String() }
