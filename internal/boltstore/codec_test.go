package boltstore

import (
	"bytes"
	"testing"
)

// FuzzDecode checks that decode never panics on damaged input and that
// whatever it accepts encodes to bytes that decode and encode to the same
// bytes.
func FuzzDecode(f *testing.F) {
	rec := fullRecord()
	f.Add(encode(nil, &rec))
	f.Add([]byte{recordFormat})
	f.Fuzz(func(t *testing.T, data []byte) {
		rec, err := decode(data)
		if err != nil {
			return
		}
		b1 := encode(nil, &rec)
		again, err := decode(b1)
		if err != nil {
			t.Fatalf("decode of an encoding: %v", err)
		}
		if b2 := encode(nil, &again); !bytes.Equal(b1, b2) {
			t.Fatalf("encoding changed by a round trip:\n%x\n%x", b1, b2)
		}
	})
}
