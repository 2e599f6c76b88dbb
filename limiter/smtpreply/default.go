package smtpreply

import "github.com/sendgate/sendgate/limiter"

// Words that, in the text of a reply, point at authentication or at content.
// Matched ASCII case-insensitively as substrings ("authenticat" covers
// "unauthenticated" and "authentication").
var (
	authWords    = [...]string{"spf", "dkim", "dmarc", "authenticat", "alignment"}
	contentWords = [...]string{"spam", "content", "policy", "unsolicited"}
)

// Default is the mapping by codes that decides when no rule matches
// (REPUTATION.md, "Classifying replies"). code is the basic reply code (0 for
// no reply), enhanced the enhanced code ("" to parse it from text), text the
// whole reply. In order:
//
//   - code 0 (no reply: connect failure, timeout): TRANSIENT;
//   - 2xx: DELIVERED;
//   - enhanced x.1.x or x.2.x (addressing and mailbox status, such as 4.2.1
//     "receiving too fast", 5.1.1 "no such user", 4.2.2 "mailbox full"):
//     RECIPIENT_FAILED;
//   - enhanced x.7.26, or any x.7.x whose text speaks of SPF, DKIM, DMARC,
//     authentication or alignment: AUTH_FAILED;
//   - other 4xx: TRANSIENT;
//   - other 5xx: CONTENT_REJECTED when the enhanced code is x.6.x or x.7.x or
//     the text speaks of spam, content, policy or unsolicited mail, else
//     RECIPIENT_FAILED;
//   - anything else (1xx, 3xx, out of range): TRANSIENT.
//
// It never returns NOT_ATTEMPTED or UNSPECIFIED, does not allocate, and is
// safe for concurrent use.
func Default(code uint32, enhanced, text string) limiter.Class {
	switch code / 100 {
	case 0:
		return limiter.Transient
	case 2:
		return limiter.Delivered
	}
	if enhanced == "" {
		enhanced = parseEnhanced(text, code)
	}
	_, subject, detail, ok := splitEnhanced(enhanced)
	if ok {
		switch {
		case subject == 1 || subject == 2:
			return limiter.RecipientFailed
		case subject == 7 && (detail == 26 || containsAny(text, authWords[:])):
			return limiter.AuthFailed
		}
	}
	switch code / 100 {
	case 4:
		return limiter.Transient
	case 5:
		if ok && (subject == 6 || subject == 7) || containsAny(text, contentWords[:]) {
			return limiter.ContentRejected
		}
		return limiter.RecipientFailed
	}
	return limiter.Transient
}

// containsAny reports whether text contains any of the lower-case words,
// ASCII case-insensitively.
func containsAny(text string, words []string) bool {
	for _, w := range words {
		if containsFold(text, w) {
			return true
		}
	}
	return false
}
