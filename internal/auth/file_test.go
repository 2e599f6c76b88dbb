package auth

import (
	"strings"
	"testing"
)

const hashA = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824" // sha256("hello")

func TestParse(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		in   string
		want string // substring of the error; "" means no error
	}{
		{"empty", "", ""},
		{"full", `
tokens:
  - name: m1
    token_sha256: ` + hashA + `
    role: mailer
    sender_ips: [203.0.113.0/24, 198.51.100.7, "2001:db8::/32"]
identities:
  - name: alice
    san: spiffe://example.org/alice
    role: admin
  - name: r
    cn: reader-1
    role: reader
`, ""},
		{"plain token", "tokens:\n  - name: m\n    token: hello\n    role: mailer\n", "f.yaml:2: plain-text token"},
		{"short hash", "tokens:\n  - name: m\n    token_sha256: hello\n    role: mailer\n", "f.yaml:2: m: token_sha256: want 64 hex digits"},
		{"not hex", "tokens:\n  - name: m\n    token_sha256: " + strings.Repeat("z", 64) + "\n    role: mailer\n", "not hexadecimal"},
		{"bad role", "tokens:\n  - name: m\n    token_sha256: " + hashA + "\n    role: root\n", `unknown role "root"`},
		{"no name", "tokens:\n  - token_sha256: " + hashA + "\n    role: admin\n", "missing name"},
		{"duplicate name", "tokens:\n  - {name: m, token_sha256: " + hashA + ", role: admin}\nidentities:\n  - {name: m, cn: x, role: admin}\n", `f.yaml:4: name "m" already used on line 2`},
		{"duplicate hash", "tokens:\n  - {name: a, token_sha256: " + hashA + ", role: admin}\n  - {name: b, token_sha256: " + strings.ToUpper(hashA) + ", role: reader}\n", `b: same token as "a"`},
		{"ips on admin", "tokens:\n  - {name: a, token_sha256: " + hashA + ", role: admin, sender_ips: [10.0.0.1]}\n", "sender_ips apply only to role mailer"},
		{"bad cidr", "tokens:\n  - {name: a, token_sha256: " + hashA + ", role: mailer, sender_ips: [10.0.0.0/99]}\n", `"10.0.0.0/99": not an IP or CIDR`},
		{"bad ip", "tokens:\n  - {name: a, token_sha256: " + hashA + ", role: mailer, sender_ips: [999.1.1.1]}\n", "not an IP or CIDR"},
		{"san and cn", "identities:\n  - {name: a, san: x, cn: y, role: admin}\n", "exactly one of san and cn"},
		{"neither san nor cn", "identities:\n  - {name: a, role: admin}\n", "exactly one of san and cn"},
		{"hash in identity", "identities:\n  - {name: a, cn: y, token_sha256: " + hashA + ", role: admin}\n", "token_sha256 belongs in tokens"},
		{"unknown top key", "users: []\n", `f.yaml:1: unknown key "users"`},
		{"unknown entry key", "tokens:\n  - {name: a, token_sha256: " + hashA + ", role: admin, expires: never}\n", `unknown key "expires"`},
		{"not a list", "tokens: 3\n", "tokens: want a list"},
		{"not a mapping", "- a\n", "want a mapping"},
		{"syntax", "tokens: [\n", "f.yaml:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := Parse("f.yaml", []byte(tt.in))
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("Parse: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("Parse: got %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestAllowsIP(t *testing.T) {
	t.Parallel()
	f, err := Parse("f", []byte("tokens:\n  - {name: m, token_sha256: "+hashA+", role: mailer, sender_ips: [203.0.113.0/24, 198.51.100.7, \"2001:db8::/32\"]}\n"))
	if err != nil {
		t.Fatal(err)
	}
	p := &Principal{SenderIPs: f.Tokens[0].SenderIPs}
	for ip, want := range map[string]bool{
		"203.0.113.9": true, "203.0.114.1": false, "198.51.100.7": true, "198.51.100.8": false,
		"2001:db8::1": true, "2001:db9::1": false, "::ffff:203.0.113.9": true, "junk": false,
	} {
		if got := p.AllowsIP(ip); got != want {
			t.Errorf("AllowsIP(%s) = %v, want %v", ip, got, want)
		}
	}
	if !(&Principal{}).AllowsIP("10.0.0.1") {
		t.Error("a principal without SenderIPs must allow every IP")
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte("tokens:\n  - {name: a, token_sha256: " + hashA + ", role: mailer, sender_ips: [10.0.0.0/8]}\nidentities:\n  - {name: b, san: x, role: admin}\n"))
	f.Add([]byte("tokens: [\n"))
	f.Add([]byte("- a\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		file, err := Parse("f", data)
		if err != nil {
			return
		}
		for _, tk := range file.Tokens {
			if tk.Name == "" || tk.Role == RoleUnspecified || (len(tk.SenderIPs) > 0 && tk.Role != RoleMailer) {
				t.Fatalf("accepted an invalid token entry %+v", tk)
			}
		}
		for _, id := range file.Identities {
			if id.Name == "" || id.Role == RoleUnspecified || (id.SAN == "") == (id.CN == "") {
				t.Fatalf("accepted an invalid identity %+v", id)
			}
		}
	})
}
