package smtpreply

import "strings"

// ParseEnhanced returns the enhanced status code (RFC 3463) of a reply text:
// the first "class.subject.detail" that follows a basic reply code and its
// separator (' ' or '-'), whose class digit (2, 4 or 5) is the basic code's.
// "421-4.7.28 [1.2.3.4] Our system..." gives "4.7.28", "550 5.7.1 ..." gives
// "5.7.1". In a multi-line reply joined into one string, a first line without
// an enhanced code ("554-gmx.net (mx) Nemesis ...") is skipped and the lines
// that repeat the basic code are tried in turn. A leading "smtp;" (as in a
// DSN's Diagnostic-Code) is ignored.
//
// It returns "" when there is none; otherwise the result is a substring of
// text (no allocation) matching ^[245]\.\d{1,3}\.\d{1,3}$. It never panics,
// whatever the input.
func ParseEnhanced(text string) string {
	return parseEnhanced(text, 0)
}

// maxLines bounds how many repeated basic codes parseEnhanced tries, so that
// a long pathological reply costs little.
const maxLines = 16

// parseEnhanced is ParseEnhanced for a reply whose basic code is known to be
// code (0 when unknown). When text does not start with a basic code but code
// is a valid 2xx/4xx/5xx code, an enhanced code at the very start of text
// (the reply without its code, "4.7.28 Our system ...") is accepted too.
func parseEnhanced(text string, code uint32) string {
	i := skipSpace(text, 0)
	if hasPrefixFold(text[i:], "smtp;") {
		i = skipSpace(text, i+len("smtp;"))
	}
	if i+3 > len(text) || !isDigit(text[i]) || !isDigit(text[i+1]) || !isDigit(text[i+2]) {
		// No basic code in the text: use the one we were given.
		if code < 200 || code > 599 {
			return ""
		}
		return enhancedAt(text, i, byte('0'+code/100))
	}
	basic := text[i : i+3]
	cls := text[i]
	for line := 0; line < maxLines; line++ {
		// text[i:i+3] is the basic code of a line.
		j := i + 3
		if j < len(text) && (text[j] == ' ' || text[j] == '-') {
			if e := enhancedAt(text, skipSpace(text, j+1), cls); e != "" {
				return e
			}
		}
		// Find the next line: the same basic code after white space,
		// followed by a separator.
		next := nextBasic(text, j, basic)
		if next < 0 {
			return ""
		}
		i = next
	}
	return ""
}

// nextBasic returns the index of the next occurrence of basic at or after
// from that is preceded by white space and followed by ' ' or '-', or -1.
func nextBasic(text string, from int, basic string) int {
	for k := from; k+len(basic) < len(text); k++ {
		if text[k] != basic[0] || !isSpace(text[k-1]) {
			continue
		}
		if text[k+1] == basic[1] && text[k+2] == basic[2] && (text[k+3] == ' ' || text[k+3] == '-') {
			return k
		}
	}
	return -1
}

// enhancedAt returns the enhanced code starting at text[i] if there is one
// with class digit cls, else "".
func enhancedAt(text string, i int, cls byte) string {
	if cls != '2' && cls != '4' && cls != '5' {
		return ""
	}
	if i+5 > len(text) || text[i] != cls || text[i+1] != '.' {
		return ""
	}
	j := digits(text, i+2)
	if j < 0 || j >= len(text) || text[j] != '.' {
		return ""
	}
	k := digits(text, j+1)
	if k < 0 {
		return ""
	}
	// The code must end here: not more digits, and not a longer dotted
	// number such as Yahoo's "4.16.55.1".
	if k < len(text) && (isDigit(text[k]) || (text[k] == '.' && k+1 < len(text) && isDigit(text[k+1]))) {
		return ""
	}
	return text[i:k]
}

// digits returns the index after 1 to 3 digits starting at i, or -1 when
// there are none or more than 3.
func digits(text string, i int) int {
	j := i
	for j < len(text) && j-i < 4 && isDigit(text[j]) {
		j++
	}
	if j == i || j-i > 3 {
		return -1
	}
	return j
}

// splitEnhanced returns the class, subject and detail of a well-formed
// enhanced code.
func splitEnhanced(e string) (cls byte, subject, detail int, ok bool) {
	if len(e) < 5 || (e[0] != '2' && e[0] != '4' && e[0] != '5') || e[1] != '.' {
		return 0, 0, 0, false
	}
	j := digits(e, 2)
	if j < 0 || j >= len(e) || e[j] != '.' {
		return 0, 0, 0, false
	}
	k := digits(e, j+1)
	if k != len(e) {
		return 0, 0, 0, false
	}
	return e[0], atoi(e[2:j]), atoi(e[j+1 : k]), true
}

// atoi converts 1 to 3 digits.
func atoi(s string) int {
	n := 0
	for i := 0; i < len(s); i++ {
		n = n*10 + int(s[i]-'0')
	}
	return n
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\r' || c == '\n' }

func skipSpace(s string, i int) int {
	for i < len(s) && isSpace(s[i]) {
		i++
	}
	return i
}

// lowerASCII lowers an ASCII letter and leaves every other byte alone.
func lowerASCII(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// hasPrefixFold reports whether s starts with lit, ASCII case-insensitively;
// lit is lower-case.
func hasPrefixFold(s, lit string) bool {
	if len(s) < len(lit) {
		return false
	}
	for i := 0; i < len(lit); i++ {
		if lowerASCII(s[i]) != lit[i] {
			return false
		}
	}
	return true
}

// containsFold reports whether s contains lit, ASCII case-insensitively;
// lit is non-empty lower-case ASCII. It does not allocate. Candidates are
// found with strings.IndexByte (vectorised) on both cases of lit's first
// byte.
func containsFold(s, lit string) bool {
	lo := lit[0]
	up := lo
	if 'a' <= lo && lo <= 'z' {
		up = lo - ('a' - 'A')
	}
	rest := lit[1:]
	// nextLo and nextUp are the next positions of each case at or after i,
	// -1 when there is none, or -2 when not yet searched.
	nextLo, nextUp := -2, -2
	if up == lo {
		nextUp = -1
	}
	for i := 0; i+len(lit) <= len(s); {
		if nextLo != -1 && nextLo < i {
			if nextLo = strings.IndexByte(s[i:], lo); nextLo >= 0 {
				nextLo += i
			}
		}
		if nextUp != -1 && nextUp < i {
			if nextUp = strings.IndexByte(s[i:], up); nextUp >= 0 {
				nextUp += i
			}
		}
		j := nextLo
		if j < 0 || (nextUp >= 0 && nextUp < j) {
			j = nextUp
		}
		if j < 0 || j+len(lit) > len(s) {
			return false
		}
		if hasPrefixFold(s[j+1:], rest) {
			return true
		}
		i = j + 1
	}
	return false
}
