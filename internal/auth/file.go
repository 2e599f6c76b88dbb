// Package auth decides who may call sendgate: callers authenticated by a
// bearer token or a TLS client certificate, each with a role (mailer, reader
// or admin) and, for mailers, the sender IPs they may speak for. It also
// builds the TLS configurations of the server, with certificates reloaded
// when their files change, and of the CLI.
//
// The callers are listed in a YAML file (see [Parse]); tokens are stored
// only as the hex SHA-256 of the token. An [Authenticator] enforces the file
// with gRPC interceptors and an HTTP middleware.
package auth

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/sendgate/sendgate/internal/normalize"
)

// Role is what a caller may do. The zero value is invalid.
type Role uint8

// Roles.
const (
	RoleUnspecified Role = iota
	// RoleMailer may call the AdmissionService (CanSend, ReportResult and
	// their batches), optionally only for some sender IPs.
	RoleMailer
	// RoleReader may call the read-only AdminService RPCs (GetState,
	// ListStates, ResolveProvider, ClassifyReply) and read the HTTP pages
	// that need credentials (/metrics).
	RoleReader
	// RoleAdmin may call everything.
	RoleAdmin
)

// String returns the role's name as written in the file; it never panics.
func (r Role) String() string {
	switch r {
	case RoleMailer:
		return "mailer"
	case RoleReader:
		return "reader"
	case RoleAdmin:
		return "admin"
	}
	return "unspecified"
}

// ParseRole parses "mailer", "reader" or "admin".
func ParseRole(s string) (Role, error) {
	switch s {
	case "mailer":
		return RoleMailer, nil
	case "reader":
		return RoleReader, nil
	case "admin":
		return RoleAdmin, nil
	}
	return RoleUnspecified, fmt.Errorf("unknown role %q: want mailer, reader or admin", s)
}

// Principal is an authenticated caller.
type Principal struct {
	// Name is the entry's name in the file: the actor of its operator
	// actions and the name its calls are logged under.
	Name string
	// Role is what it may do.
	Role Role
	// SenderIPs, when not empty, are the only sender IPs a mailer may ask
	// about or report on.
	SenderIPs []netip.Prefix
	// Via is how it authenticated: "token" or "certificate".
	Via string
	// Subject is the certificate identity that matched (the SAN or CN), or
	// the first 8 hex digits of the token's hash.
	Subject string
}

// AllowsIP reports whether p may speak for the canonical sender IP ip: true
// when p has no SenderIPs.
func (p *Principal) AllowsIP(ip string) bool {
	if len(p.SenderIPs) == 0 {
		return true
	}
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return false
	}
	a = a.Unmap()
	for _, pf := range p.SenderIPs {
		if pf.Contains(a) {
			return true
		}
	}
	return false
}

// Token is one token entry: a caller known by the SHA-256 of its token.
type Token struct {
	Name      string
	Hash      [sha256.Size]byte
	Role      Role
	SenderIPs []netip.Prefix
}

// Identity is one certificate entry: a caller known by a SAN (URI, DNS name
// or e-mail address) or the subject CN of a client certificate the client
// CA verified. Exactly one of SAN and CN is set.
type Identity struct {
	Name      string
	SAN       string
	CN        string
	Role      Role
	SenderIPs []netip.Prefix
}

// File is a parsed callers file.
type File struct {
	Tokens     []Token
	Identities []Identity
}

// HashToken returns the hex SHA-256 of token, as the file stores it.
func HashToken(token string) string {
	s := sha256.Sum256([]byte(token))
	return hex.EncodeToString(s[:])
}

// Load reads and parses the callers file at path.
func Load(path string) (*File, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("auth file: %w", err)
	}
	return Parse(path, data)
}

// entry is a token or identity as written.
type entry struct {
	Name        string   `yaml:"name"`
	TokenSHA256 string   `yaml:"token_sha256"`
	SAN         string   `yaml:"san"`
	CN          string   `yaml:"cn"`
	Role        string   `yaml:"role"`
	SenderIPs   []string `yaml:"sender_ips"`
}

// Parse parses a callers file; name prefixes errors ("name:line: reason").
// The format:
//
//	tokens:
//	  - name: mailer-eu-1            # unique among tokens and identities
//	    token_sha256: 9f86d0...      # 64 hex digits: 'sendgate token hash'
//	    role: mailer                 # mailer, reader or admin
//	    sender_ips: [203.0.113.0/24, 198.51.100.7]   # mailers only; optional
//	identities:
//	  - name: alice
//	    san: spiffe://example.org/ops/alice  # or cn: alice
//	    role: admin
//
// A plain-text token in the file is refused: token_sha256 must be 64 hex
// digits. Unknown keys are refused.
func Parse(name string, data []byte) (*File, error) {
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return &File{}, nil
		}
		return nil, fmt.Errorf("%s: %s", name, strings.TrimPrefix(err.Error(), "yaml: "))
	}
	fail := func(n *yaml.Node, format string, a ...any) error {
		return fmt.Errorf("%s:%d: %s", name, n.Line, fmt.Sprintf(format, a...))
	}
	root := &doc
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = root.Content[0]
	}
	if root.Kind == yaml.ScalarNode && root.Tag == "!!null" {
		return &File{}, nil
	}
	if root.Kind != yaml.MappingNode {
		return nil, fail(root, "want a mapping with tokens and identities")
	}
	f := &File{}
	names := map[string]int{}
	hashes := map[[sha256.Size]byte]string{}
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		if k.Value != "tokens" && k.Value != "identities" {
			return nil, fail(k, "unknown key %q: want tokens or identities", k.Value)
		}
		if v.Kind == yaml.ScalarNode && v.Tag == "!!null" {
			continue
		}
		if v.Kind != yaml.SequenceNode {
			return nil, fail(v, "%s: want a list", k.Value)
		}
		for _, n := range v.Content {
			e, err := decodeEntry(n, k.Value == "tokens")
			if err != nil {
				return nil, fail(n, "%v", err)
			}
			if line, dup := names[e.Name]; dup {
				return nil, fail(n, "name %q already used on line %d", e.Name, line)
			}
			names[e.Name] = n.Line
			role, err := ParseRole(e.Role)
			if err != nil {
				return nil, fail(n, "%s: %v", e.Name, err)
			}
			ips, err := parsePrefixes(e.SenderIPs)
			if err != nil {
				return nil, fail(n, "%s: sender_ips: %v", e.Name, err)
			}
			if len(ips) > 0 && role != RoleMailer {
				return nil, fail(n, "%s: sender_ips apply only to role mailer, not %s", e.Name, role)
			}
			if k.Value == "tokens" {
				h, err := parseHash(e.TokenSHA256)
				if err != nil {
					return nil, fail(n, "%s: token_sha256: %v", e.Name, err)
				}
				if other, dup := hashes[h]; dup {
					return nil, fail(n, "%s: same token as %q", e.Name, other)
				}
				hashes[h] = e.Name
				f.Tokens = append(f.Tokens, Token{Name: e.Name, Hash: h, Role: role, SenderIPs: ips})
				continue
			}
			f.Identities = append(f.Identities, Identity{Name: e.Name, SAN: e.SAN, CN: e.CN, Role: role, SenderIPs: ips})
		}
	}
	return f, nil
}

// decodeEntry decodes one list item and checks the keys that its list
// allows.
func decodeEntry(n *yaml.Node, token bool) (entry, error) {
	if n.Kind != yaml.MappingNode {
		return entry{}, errors.New("want a mapping with name, role and token_sha256 or san/cn")
	}
	for i := 0; i < len(n.Content); i += 2 {
		switch k := n.Content[i].Value; k {
		case "name", "role", "sender_ips":
		case "token_sha256":
			if !token {
				return entry{}, errors.New("token_sha256 belongs in tokens, not identities")
			}
		case "san", "cn":
			if token {
				return entry{}, fmt.Errorf("%s belongs in identities, not tokens", k)
			}
		case "token":
			return entry{}, errors.New("plain-text token: store only its token_sha256 ('sendgate token hash')")
		default:
			return entry{}, fmt.Errorf("unknown key %q", k)
		}
	}
	var e entry
	if err := n.Decode(&e); err != nil {
		return entry{}, errors.New(strings.TrimPrefix(err.Error(), "yaml: "))
	}
	if e.Name == "" {
		return entry{}, errors.New("missing name")
	}
	if !token && (e.SAN == "") == (e.CN == "") {
		return entry{}, fmt.Errorf("%s: want exactly one of san and cn", e.Name)
	}
	return e, nil
}

// parseHash parses 64 hex digits.
func parseHash(s string) ([sha256.Size]byte, error) {
	var h [sha256.Size]byte
	if len(s) != 2*sha256.Size {
		return h, fmt.Errorf("want %d hex digits (the SHA-256 of the token, never the token), got %d characters", 2*sha256.Size, len(s))
	}
	if _, err := hex.Decode(h[:], []byte(strings.ToLower(s))); err != nil {
		return h, errors.New("not hexadecimal")
	}
	return h, nil
}

// parsePrefixes parses IPs and CIDRs; an IP is a /32 or /128.
func parsePrefixes(ss []string) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(ss))
	for _, s := range ss {
		if strings.Contains(s, "/") {
			p, err := netip.ParsePrefix(strings.TrimSpace(s))
			if err != nil {
				return nil, fmt.Errorf("%q: not an IP or CIDR", s)
			}
			if p.Addr().Is4In6() {
				return nil, fmt.Errorf("%q: write IPv4 ranges as IPv4", s)
			}
			out = append(out, p.Masked())
			continue
		}
		ip, err := normalize.IP(s)
		if err != nil {
			return nil, fmt.Errorf("%q: not an IP or CIDR", s)
		}
		a := netip.MustParseAddr(ip)
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
}
