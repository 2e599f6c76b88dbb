package client

import "time"

// SetClock replaces the clock that dates remembered deferrals.
func SetClock(c *Client, now func() time.Time) { c.now = now }

// Remembered returns how many deferrals c remembers.
func Remembered(c *Client) int {
	if c.defers == nil {
		return 0
	}
	return c.defers.len()
}
