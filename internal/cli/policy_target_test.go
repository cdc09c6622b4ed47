package cli

import "testing"

func TestSplitTarget(t *testing.T) {
	good := []struct {
		in, host, proto string
		port            uint16
	}{
		{"shop/web:80/tcp", "shop/web", "tcp", 80},
		{"[fd00::1]:53/UDP", "fd00::1", "udp", 53},
		{"10.0.0.1:8/icmp", "10.0.0.1", "icmp", 8},
		{"10.0.0.1:0/icmp", "10.0.0.1", "icmp", 0},
		{"[fd00::1]:128/icmpv6", "fd00::1", "icmpv6", 128},
	}
	for _, c := range good {
		host, port, proto, err := splitTarget(c.in)
		if err != nil || host != c.host || port != c.port || proto != c.proto {
			t.Errorf("splitTarget(%q) = %q %d %q %v", c.in, host, port, proto, err)
		}
	}
	for _, in := range []string{"x:0/tcp", "x:65536/udp", "x:256/icmp", "x:-1/icmp", "x:80/gre", "x/tcp", "x:80", "x:8\x00/icmp"} {
		if _, _, _, err := splitTarget(in); err == nil {
			t.Errorf("splitTarget(%q): no error", in)
		}
	}
}
