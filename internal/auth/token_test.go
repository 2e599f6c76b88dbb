package auth

import (
	"bytes"
	"crypto/rand"
	"strings"
	"testing"
)

func TestNewToken(t *testing.T) {
	t.Parallel()
	a, err := NewToken(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := NewToken(rand.Reader)
	if a == b || !strings.HasPrefix(a, TokenPrefix) || len(a) != len(TokenPrefix)+43 {
		t.Fatalf("NewToken: %q, %q", a, b)
	}
	if _, err := NewToken(bytes.NewReader(nil)); err == nil {
		t.Fatal("NewToken from an empty reader: want an error")
	}
	if got := HashToken("hello"); got != hashA {
		t.Fatalf("HashToken(hello) = %s", got)
	}
}
