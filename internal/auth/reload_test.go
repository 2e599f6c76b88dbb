package auth

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
)

func tokensFile(name, token, role string) []byte {
	return []byte("tokens:\n  - {name: " + name + ", token_sha256: " + HashToken(token) + ", role: " + role + "}\n")
}

// TestReload checks Reload, Watch and that a bad file keeps the old one.
func TestReload(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "callers.yaml")
	if err := os.WriteFile(path, tokensFile("old", "tok-old", "admin"), 0o600); err != nil {
		t.Fatal(err)
	}
	a, err := New(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	who := func(tok string) codes.Code {
		_, ref := a.authenticate(credentialsOf{authz: []string{"Bearer " + tok}})
		if ref != nil {
			return ref.code
		}
		return codes.OK
	}
	if who("tok-old") != codes.OK {
		t.Fatal("old token refused")
	}
	if err := os.WriteFile(path, []byte("tokens: [\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := a.Reload(); err == nil || who("tok-old") != codes.OK {
		t.Fatalf("a bad file: Reload = %v, and the old token must still work", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go a.Watch(ctx, time.Millisecond)
	if err := os.WriteFile(path, tokensFile("new", "tok-new-longer", "reader"), 0o600); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for who("tok-new-longer") != codes.OK {
		if time.Now().After(deadline) {
			t.Fatal("Watch never loaded the changed file")
		}
		time.Sleep(time.Millisecond)
	}
	if who("tok-old") != codes.Unauthenticated {
		t.Fatal("the removed token still works")
	}
}

func TestBearerToken(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{"Bearer abc": "abc", "bearer abc ": "abc", "Basic abc": "", "Bearer ": "", "abc": ""} {
		got, ok := bearerToken(in)
		if got != want || ok != (want != "") {
			t.Errorf("bearerToken(%q) = %q, %v", in, got, ok)
		}
	}
}

// TestHTTP checks the open paths and the roles of the HTTP middleware.
func TestHTTP(t *testing.T) {
	t.Parallel()
	f, err := Parse("f", []byte("tokens:\n  - {name: r, token_sha256: "+HashToken("tok-r")+", role: reader}\n  - {name: m, token_sha256: "+HashToken("tok-m")+", role: mailer}\n"))
	if err != nil {
		t.Fatal(err)
	}
	h := NewFromFile(f, nil).HTTP(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}), "/healthz", "/readyz")
	tests := []struct {
		path, token string
		want        int
	}{
		{"/healthz", "", 200},
		{"/readyz", "", 200},
		{"/metrics", "", 401},
		{"/metrics", "tok-bad", 401},
		{"/metrics", "tok-m", 403},
		{"/metrics", "tok-r", 200},
		{"/debug/anything", "", 401},
	}
	for _, tt := range tests {
		req := httptest.NewRequest("GET", tt.path, nil)
		if tt.token != "" {
			req.Header.Set("Authorization", "Bearer "+tt.token)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code != tt.want {
			t.Errorf("GET %s with %q: %d, want %d", tt.path, tt.token, w.Code, tt.want)
		}
	}
}
