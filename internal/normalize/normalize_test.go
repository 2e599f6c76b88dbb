package normalize_test

import (
	"strings"
	"testing"

	"github.com/sendgate/sendgate/internal/normalize"
)

func TestIP(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in, want, wantErr string
	}{
		{in: "1.2.3.4", want: "1.2.3.4"},
		{in: "  10.0.0.1\t", want: "10.0.0.1"},
		{in: "::ffff:1.2.3.4", want: "1.2.3.4"},
		{in: "::FFFF:192.0.2.1", want: "192.0.2.1"},
		{in: "2001:db8::1", want: "2001:db8::1"},
		{in: "2001:DB8:0:0:0:0:0:1", want: "2001:db8::1"},
		{in: "2001:0db8:0000:0000:0001:0000:0000:0001", want: "2001:db8::1:0:0:1"},
		{in: "::1", want: "::1"},
		{in: "::", want: "::"},
		{in: "", wantErr: "empty"},
		{in: "   ", wantErr: "empty"},
		{in: "999.1.1.1", wantErr: `not an IP address: "999.1.1.1"`},
		{in: "01.2.3.4", wantErr: `not an IP address: "01.2.3.4"`},
		{in: "1.2.3", wantErr: `not an IP address: "1.2.3"`},
		{in: "example.com", wantErr: `not an IP address: "example.com"`},
		{in: "[::1]", wantErr: `not an IP address: "[::1]"`},
		{in: "fe80::1%eth0", wantErr: `IPv6 zone not allowed: "fe80::1%eth0"`},
		{in: strings.Repeat("1", 65), wantErr: "too long: 65 bytes, max 64: " + `"1111111111111111111111111111111111111111…"`},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			got, err := normalize.IP(tt.in)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("IP(%q) = %q, %v; want error %q", tt.in, got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("IP(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestDomain(t *testing.T) {
	t.Parallel()
	label63 := strings.Repeat("a", 63)
	// 4 labels of 63 bytes and 3 dots: 255 bytes.
	long := strings.Join([]string{label63, label63, label63, label63}, ".")
	// 253 bytes exactly.
	longest := label63 + "." + label63 + "." + label63 + "." + strings.Repeat("b", 61)
	tests := []struct {
		name, in, want, wantErr string
	}{
		{name: "canonical", in: "qq.com", want: "qq.com"},
		{name: "upper", in: "QQ.Com", want: "qq.com"},
		{name: "trailing dot", in: "qq.com.", want: "qq.com"},
		{name: "address", in: "User@QQ.com", want: "qq.com"},
		{name: "angle", in: "<user@x.com>", want: "x.com"},
		{name: "display name", in: "Bob <bob@X.com>", want: "x.com"},
		{name: "quoted local", in: `"john@doe"@example.org`, want: "example.org"},
		{name: "quoted local angle", in: `<"a<b@c"@example.org>`, want: "example.org"},
		{name: "spaces", in: "  user@gmail.com \n", want: "gmail.com"},
		{name: "idna", in: "bücher.de", want: "xn--bcher-kva.de"},
		{name: "idna upper", in: "BÜCHER.DE", want: "xn--bcher-kva.de"},
		{name: "idna address", in: "jörg@Bücher.de.", want: "xn--bcher-kva.de"},
		{name: "punycode", in: "xn--bcher-kva.de", want: "xn--bcher-kva.de"},
		{name: "fullwidth", in: "ＱＱ。com", want: "qq.com"},
		{name: "chinese", in: "例子.测试", want: "xn--fsqu00a.xn--0zwm56d"},
		{name: "underscore", in: "_dmarc.example.com", want: "_dmarc.example.com"},
		{name: "single label", in: "localhost", want: "localhost"},
		{name: "digits label", in: "163.com", want: "163.com"},
		{name: "hyphen inside", in: "a-b.example", want: "a-b.example"},
		{name: "label 63", in: label63 + ".com", want: label63 + ".com"},
		{name: "total 253", in: longest, want: longest},
		{name: "total 253 with dot", in: longest + ".", want: longest},

		{name: "empty", in: "", wantErr: "empty"},
		{name: "blank", in: " \t", wantErr: "empty"},
		{name: "only dot", in: ".", wantErr: "empty"},
		{name: "address without domain", in: "user@", wantErr: "empty"},
		{name: "empty label", in: "a..com", wantErr: `empty label: "a..com"`},
		{name: "leading dot", in: ".a.com", wantErr: `empty label: ".a.com"`},
		{name: "two trailing dots", in: "a.com..", wantErr: `empty label: "a.com."`},
		{name: "label too long", in: strings.Repeat("a", 64) + ".com", wantErr: `label too long: "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa…"`},
		{name: "too long", in: long, wantErr: "too long: 255 bytes, max 253: " + `"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa…"`},
		{name: "leading hyphen", in: "-a.com", wantErr: `label starts or ends with hyphen: "-a"`},
		{name: "trailing hyphen", in: "a-.com", wantErr: `label starts or ends with hyphen: "a-"`},
		{name: "bad char", in: "a!b.com", wantErr: `invalid character '!': "a!b.com"`},
		{name: "space inside", in: "a b.com", wantErr: `invalid character ' ': "a b.com"`},
		{name: "quoted rest", in: `"user@x"`, wantErr: `invalid character '"': "x\""`},
		{name: "ipv4 literal", in: "[1.2.3.4]", wantErr: `address literal not allowed: "[1.2.3.4]"`},
		{name: "ipv6 literal", in: "user@[IPv6:::1]", wantErr: `address literal not allowed: "[IPv6:::1]"`},
		{name: "bare ipv4", in: "1.2.3.4", wantErr: `address literal not allowed: "1.2.3.4"`},
		{name: "bare ipv6", in: "::1", wantErr: `address literal not allowed: "::1"`},
		{name: "invalid idn", in: "a\u200db.com", wantErr: `invalid international domain: "a\u200db.com"`},
		{name: "huge", in: strings.Repeat("a", 2000), wantErr: `too long: 2000 bytes: "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa…"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := normalize.Domain(tt.in)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("Domain(%q) = %q, %v; want error %q", tt.in, got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("Domain(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
			}
		})
	}
}

// TestNoAllocs guards the hot path: canonical input costs no allocation.
func TestNoAllocs(t *testing.T) {
	for _, in := range []string{"1.2.3.4", "2001:db8::1", "::1", "::ffff:1.2.3.4"} {
		if n := testing.AllocsPerRun(100, func() { _, _ = normalize.IP(in) }); n != 0 {
			t.Errorf("IP(%q): %v allocs, want 0", in, n)
		}
	}
	for _, in := range []string{"qq.com", "user@qq.com", "_dmarc.example.com", "xn--bcher-kva.de", "1.example"} {
		if n := testing.AllocsPerRun(100, func() { _, _ = normalize.Domain(in) }); n != 0 {
			t.Errorf("Domain(%q): %v allocs, want 0", in, n)
		}
	}
}

func FuzzIP(f *testing.F) {
	for _, s := range []string{"1.2.3.4", "::ffff:1.2.3.4", "2001:DB8::1", "fe80::1%eth0", "999.1.1.1", "", " ::1 "} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out, err := normalize.IP(s)
		if err != nil {
			return
		}
		again, err := normalize.IP(out)
		if err != nil || again != out {
			t.Fatalf("IP(%q) = %q, but IP(%q) = %q, %v", s, out, out, again, err)
		}
	})
}

func FuzzDomain(f *testing.F) {
	for _, s := range []string{"qq.com", "User@QQ.com.", "<a@b.c>", `"x@y"@z.org`, "bücher.de", "ＱＱ。com", "[1.2.3.4]", "a..b", "-a.b", "xn--bcher-kva.de", "_x.y"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out, err := normalize.Domain(s)
		if err != nil {
			return
		}
		if out == "" || len(out) > normalize.MaxDomainLen || strings.HasSuffix(out, ".") || out != strings.ToLower(out) {
			t.Fatalf("Domain(%q) = %q: not canonical", s, out)
		}
		again, err := normalize.Domain(out)
		if err != nil || again != out {
			t.Fatalf("Domain(%q) = %q, but Domain(%q) = %q, %v", s, out, out, again, err)
		}
	})
}

func BenchmarkIP(b *testing.B) {
	for _, in := range []string{"1.2.3.4", "2001:db8::1", "::ffff:1.2.3.4"} {
		b.Run(in, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := normalize.IP(in); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkDomain(b *testing.B) {
	for _, in := range []string{"qq.com", "user@qq.com", "QQ.com", "bücher.de"} {
		b.Run(in, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := normalize.Domain(in); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
