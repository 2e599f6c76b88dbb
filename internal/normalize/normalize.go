// Package normalize turns the sender IP and recipient domain of a request into
// the canonical text used in keys, so that "::ffff:1.2.3.4" and "1.2.3.4", or
// "User@QQ.com." and "qq.com", name the same thing.
//
// Both functions are on the hot path of every request: when the input is
// already canonical they return it unchanged without allocating. Errors are
// short lowercase reasons without a field name (the caller adds it), quoting
// the offending value, shortened when long. The functions are pure and safe
// for concurrent use.
package normalize

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"unicode/utf8"

	"golang.org/x/net/idna"
)

// Limits on the accepted input.
const (
	// MaxIPLen is the longest sender IP text accepted, in bytes.
	MaxIPLen = 64
	// MaxDomainLen is the longest domain accepted, in bytes of its ASCII
	// form without the trailing dot (RFC 1035 section 2.3.4).
	MaxDomainLen = 253
	// MaxLabelLen is the longest label accepted, in bytes.
	MaxLabelLen = 63
	// maxInputLen bounds the raw input to Domain (an address with a local
	// part and spaces), so that no work is spent on absurd inputs.
	maxInputLen = 1024
	// maxQuoted is how much of an offending value an error message quotes.
	maxQuoted = 40
)

var errEmpty = errors.New("empty")

// IP returns the canonical text of a sender IP address: IPv4 in dotted
// decimal, IPv4-mapped IPv6 ("::ffff:1.2.3.4") as the IPv4 address, other IPv6
// in the compressed lower-case form of RFC 5952. Surrounding white space is
// ignored.
//
// It fails with "empty", "too long: …" (more than [MaxIPLen] bytes),
// `not an IP address: "999.1.1.1"` or `IPv6 zone not allowed: "fe80::1%eth0"`.
// A canonical input is returned as is, without allocating.
func IP(s string) (string, error) {
	s = strings.TrimSpace(s)
	switch {
	case s == "":
		return "", errEmpty
	case len(s) > MaxIPLen:
		return "", fmt.Errorf("too long: %d bytes, max %d: %s", len(s), MaxIPLen, quote(s))
	}
	addr, err := netip.ParseAddr(s)
	if err != nil {
		return "", fmt.Errorf("not an IP address: %s", quote(s))
	}
	if addr.Zone() != "" {
		return "", fmt.Errorf("IPv6 zone not allowed: %s", quote(s))
	}
	if addr.Is4() {
		// ParseAddr accepts only the canonical dotted-decimal form of IPv4
		// (no leading zeros, no short forms), so s is already canonical.
		return s, nil
	}
	addr = addr.Unmap()
	// Render into a stack buffer and compare, so that a canonical input (or
	// a mapped IPv4 written canonically) is returned without allocating; only
	// other forms cost the new string. The longest rendering is a full IPv6
	// address, 39 bytes.
	var buf [48]byte
	out := addr.AppendTo(buf[:0])
	if strings.HasSuffix(s, string(out)) {
		// Canonical, or a mapped "::ffff:1.2.3.4" whose tail is the answer.
		return s[len(s)-len(out):], nil
	}
	return string(out), nil
}

// Domain reduces a recipient domain, or a whole address, to the canonical
// domain: lower-case ASCII (IDNA ToASCII, so "bücher.de" becomes
// "xn--bcher-kva.de") without a trailing dot.
//
// Accepted forms are "qq.com", "QQ.COM.", "user@qq.com", "<user@qq.com>",
// "Name <user@qq.com>", `"odd@local"@qq.com` and any of them with surrounding
// white space; the domain is what follows the last '@'.
//
// The result has 1 to [MaxDomainLen] bytes, labels of 1 to [MaxLabelLen]
// bytes made of letters, digits, '-' and '_', with no label starting or ending
// with '-'. A single label ("localhost") is accepted. Address literals
// ("[1.2.3.4]", or a bare IP address) are rejected. Errors are short reasons
// quoting the value, such as `label too long: "aaa…"`.
//
// A canonical input is returned as is, without allocating; an address
// returns a substring of its input.
func Domain(s string) (string, error) {
	if len(s) > maxInputLen {
		return "", fmt.Errorf("too long: %d bytes: %s", len(s), quote(s))
	}
	d := extractDomain(s)
	if d == "" {
		return "", errEmpty
	}
	if d[0] == '[' {
		return "", fmt.Errorf("address literal not allowed: %s", quote(d))
	}
	d = strings.TrimSuffix(d, ".")

	// Fast path: already lower-case ASCII and valid. checkASCII does not
	// allocate unless it reports an error.
	switch needs := scan(d); {
	case needs == needsNothing:
		if err := checkASCII(d); err != nil {
			return "", err
		}
		return d, nil
	case needs == needsLower:
		// Upper-case ASCII only: lowering is all IDNA would do.
		d = strings.ToLower(d)
	default:
		a, err := idnaProfile.ToASCII(d)
		if err != nil {
			return "", fmt.Errorf("invalid international domain: %s", quote(d))
		}
		// Mapping may have produced a trailing dot (U+3002 and friends).
		d = strings.TrimSuffix(a, ".")
		if d == "" {
			return "", errEmpty
		}
	}
	if err := checkASCII(d); err != nil {
		return "", err
	}
	return d, nil
}

// idnaProfile is the UTS #46 lookup profile (mapping, bidi and joiner rules)
// except that it leaves the ASCII character set to checkASCII, which allows
// '_'. A Profile is immutable and safe for concurrent use.
var idnaProfile = idna.New(
	idna.MapForLookup(),
	idna.BidiRule(),
	idna.Transitional(false),
	idna.StrictDomainName(false),
)

// extractDomain returns the domain part of an address or domain s, with
// surrounding white space and angle brackets removed. It does not allocate.
func extractDomain(s string) string {
	s = strings.TrimSpace(s)
	// "<user@x.com>" and "Name <user@x.com>": keep what is inside the
	// brackets. A '<' in a quoted local part does no harm: the domain is
	// still what follows the last '@'.
	if strings.HasSuffix(s, ">") {
		if i := strings.LastIndexByte(s, '<'); i >= 0 {
			s = strings.TrimSpace(s[i+1 : len(s)-1])
		}
	}
	// The domain cannot contain '@' but a quoted local part can, so the
	// domain is what follows the last one.
	if i := strings.LastIndexByte(s, '@'); i >= 0 {
		s = s[i+1:]
	}
	return s
}

// What a domain needs before checkASCII can judge it.
const (
	needsNothing = iota // lower-case ASCII
	needsLower          // ASCII with upper-case letters
	needsIDNA           // non-ASCII
)

func scan(s string) int {
	needs := needsNothing
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= utf8.RuneSelf {
			return needsIDNA
		}
		if 'A' <= c && c <= 'Z' {
			needs = needsLower
		}
	}
	return needs
}

// checkASCII validates a lower-case ASCII domain without trailing dot. It
// allocates only for the error.
func checkASCII(d string) error {
	if d == "" {
		return errEmpty
	}
	if len(d) > MaxDomainLen {
		return fmt.Errorf("too long: %d bytes, max %d: %s", len(d), MaxDomainLen, quote(d))
	}
	if last := d[len(d)-1]; ('0' <= last && last <= '9') || strings.IndexByte(d, ':') >= 0 {
		// Only a domain ending in a digit can be a bare IPv4 address.
		if _, err := netip.ParseAddr(d); err == nil {
			return fmt.Errorf("address literal not allowed: %s", quote(d))
		}
	}
	for rest := d; ; {
		label, tail, more := strings.Cut(rest, ".")
		switch {
		case label == "":
			return fmt.Errorf("empty label: %s", quote(d))
		case len(label) > MaxLabelLen:
			return fmt.Errorf("label too long: %s", quote(label))
		case label[0] == '-' || label[len(label)-1] == '-':
			return fmt.Errorf("label starts or ends with hyphen: %s", quote(label))
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
				return fmt.Errorf("invalid character %q: %s", c, quote(d))
			}
		}
		if !more {
			return nil
		}
		rest = tail
	}
}

// quote quotes s for an error message, shortened to maxQuoted bytes (on a
// rune boundary) followed by "…".
func quote(s string) string {
	if len(s) <= maxQuoted {
		return fmt.Sprintf("%q", s)
	}
	cut := maxQuoted
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return fmt.Sprintf("%q", s[:cut]+"…")
}
