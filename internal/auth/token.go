package auth

import (
	"encoding/base64"
	"fmt"
	"io"
)

// TokenPrefix starts every token [NewToken] makes, so that a leaked token
// is recognisable (and secret scanners can look for it).
const TokenPrefix = "sgt_"

// NewToken returns a new random token: [TokenPrefix] and 32 bytes of rand
// (crypto/rand.Reader in production) in unpadded base64url. Store only
// [HashToken] of it.
func NewToken(rand io.Reader) (string, error) {
	var b [32]byte
	if _, err := io.ReadFull(rand, b[:]); err != nil {
		return "", fmt.Errorf("new token: %w", err)
	}
	return TokenPrefix + base64.RawURLEncoding.EncodeToString(b[:]), nil
}
