// Package limiter is the core of sendgate: tiered token buckets and the
// reputation state machine for one (sender IP, provider) key, and the
// decisions made from them.
//
// The package imports only the standard library. Time is always a parameter
// (now time.Time); nothing here sleeps or reads the clock. Storage is behind
// the [Store] interface, which this package declares and the stores in other
// packages implement; every store runs the same arithmetic, the functions of
// this package, inside its own atomic step for the key.
package limiter

import (
	"fmt"
)

// Key identifies the unit every decision is about: one sender IP towards one
// provider. Both fields are canonical: IP as returned by normalisation
// ("1.2.3.4", "2001:db8::1"), Provider a provider name ("tencent") or, for a
// domain outside the provider table, the domain the resolver chose.
type Key struct {
	IP       string
	Provider string
}

// String returns "ip|provider", the form used in logs and store keys.
func (k Key) String() string { return k.IP + "|" + k.Provider }

// State is the reputation state of a key. The zero value is invalid; a key
// that was never seen is [Healthy].
type State uint8

// The reputation states, numbered as in the wire contract.
const (
	StateUnspecified State = iota
	Healthy
	Throttled
	Blocked
	Probing
	Held
)

var stateNames = [...]string{"UNSPECIFIED", "HEALTHY", "THROTTLED", "BLOCKED", "PROBING", "HELD"}

// String returns the state's name, e.g. "BLOCKED". It never panics.
func (s State) String() string {
	if int(s) < len(stateNames) {
		return stateNames[s]
	}
	return fmt.Sprintf("State(%d)", uint8(s))
}

// ParseState returns the state named s ("blocked" or "BLOCKED").
func ParseState(s string) (State, error) {
	for i, n := range stateNames {
		if i > 0 && equalFold(n, s) {
			return State(i), nil
		}
	}
	return StateUnspecified, fmt.Errorf("unknown state %q", s)
}

// Verdict is the answer of an admission check.
type Verdict uint8

// Verdicts. The zero value is invalid.
const (
	VerdictUnspecified Verdict = iota
	Allow
	Defer
)

// String returns "ALLOW" or "DEFER". It never panics.
func (v Verdict) String() string {
	switch v {
	case Allow:
		return "ALLOW"
	case Defer:
		return "DEFER"
	}
	return fmt.Sprintf("Verdict(%d)", uint8(v))
}

// Reason says why a check was deferred. [NoReason] for an ALLOW.
type Reason uint8

// Defer reasons, numbered as in the wire contract.
const (
	NoReason Reason = iota
	ReasonRateLimited
	ReasonBlocked
	ReasonProbing
	ReasonHeld
	// ReasonUnavailable: the store could not be reached and the caller
	// chose to fail closed.
	ReasonUnavailable
)

var reasonNames = [...]string{"", "RATE_LIMITED", "BLOCKED", "PROBING", "HELD", "UNAVAILABLE"}

// String returns the reason's name ("" for NoReason). It never panics.
func (r Reason) String() string {
	if int(r) < len(reasonNames) {
		return reasonNames[r]
	}
	return fmt.Sprintf("Reason(%d)", uint8(r))
}

// Class is what the reply rules made of an SMTP reply.
type Class uint8

// Classifications, numbered as in the wire contract.
const (
	ClassUnspecified Class = iota
	Delivered
	RateLimited
	IPBlocked
	ConnectionLimited
	ContentRejected
	AuthFailed
	RecipientFailed
	Transient
	NotAttempted
	numClasses
)

// NumClasses is the number of Class values, for arrays indexed by Class.
const NumClasses = int(numClasses)

var classNames = [...]string{"UNSPECIFIED", "DELIVERED", "RATE_LIMITED", "IP_BLOCKED", "CONNECTION_LIMITED",
	"CONTENT_REJECTED", "AUTH_FAILED", "RECIPIENT_FAILED", "TRANSIENT", "NOT_ATTEMPTED"}

// String returns the class's name, e.g. "IP_BLOCKED". It never panics.
func (c Class) String() string {
	if int(c) < len(classNames) {
		return classNames[c]
	}
	return fmt.Sprintf("Class(%d)", uint8(c))
}

// ParseClass returns the class named s ("ip_blocked" or "IP_BLOCKED").
func ParseClass(s string) (Class, error) {
	for i, n := range classNames {
		if i > 0 && equalFold(n, s) {
			return Class(i), nil
		}
	}
	return ClassUnspecified, fmt.Errorf("unknown classification %q", s)
}

// Negative reports whether reports of this class move the rates.
func (c Class) Negative() bool {
	return c == RateLimited || c == IPBlocked || c == ConnectionLimited
}

// equalFold compares ASCII case-insensitively, with '-' equal to '_'.
func equalFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'a' <= x && x <= 'z' {
			x -= 'a' - 'A'
		}
		if 'a' <= y && y <= 'z' {
			y -= 'a' - 'A'
		}
		if x == '-' {
			x = '_'
		}
		if y == '-' {
			y = '_'
		}
		if x != y {
			return false
		}
	}
	return true
}
