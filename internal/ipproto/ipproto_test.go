package ipproto

import "testing"

func TestNameParse(t *testing.T) {
	for _, c := range []struct {
		p    uint8
		name string
	}{{0, "any"}, {1, "ICMP"}, {6, "TCP"}, {17, "UDP"}, {58, "ICMPv6"}, {132, "SCTP"}} {
		if got := Name(c.p); got != c.name {
			t.Errorf("Name(%d) = %q, want %q", c.p, got, c.name)
		}
		for _, s := range []string{c.name, lower(c.name)} {
			if p, ok := Parse(s); !ok || p != c.p {
				t.Errorf("Parse(%q) = %d, %v, want %d", s, p, ok, c.p)
			}
		}
	}
	if got := Name(47); got != "47" {
		t.Errorf("Name(47) = %q, want the number", got)
	}
	for _, s := range []string{"", "gre", "47", "icmpv4"} {
		if p, ok := Parse(s); ok {
			t.Errorf("Parse(%q) = %d, want no protocol", s, p)
		}
	}
}

func lower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}
