package jsontime

import (
	"encoding/json"
	"testing"
	"time"
)

func TestSecondsRoundTrip(t *testing.T) {
	t.Parallel()
	in := Seconds(1500 * time.Millisecond)
	b, err := json.Marshal(in)
	if err != nil || string(b) != "1.5" {
		t.Fatalf("marshal: %s %v", b, err)
	}
	var out Seconds
	if err := json.Unmarshal(b, &out); err != nil || out != in {
		t.Fatalf("unmarshal: %v %v", out, err)
	}
	if err := json.Unmarshal([]byte(`"x"`), &out); err == nil {
		t.Fatal("a string accepted as seconds")
	}
	if s := Seconds(90*time.Minute + 400*time.Millisecond).String(); s != "1h30m0s" {
		t.Fatalf("String: %s", s)
	}
}
