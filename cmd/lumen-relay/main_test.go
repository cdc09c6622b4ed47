package main

import (
	"strings"
	"testing"
)

func TestFlags(t *testing.T) {
	c, err := parseFlags([]string{"--peer", "unix:///a.sock,10.0.0.1:4244", "--peer", "/b.sock", "--socket", "/r.sock"})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(c.peers, " ") != "unix:///a.sock 10.0.0.1:4244 /b.sock" {
		t.Errorf("peers %v", c.peers)
	}
	bad := []struct {
		args []string
		want string
	}{
		{[]string{}, "peer, peer-service"},
		{[]string{"--peer", "nohost"}, `peer: server address "nohost"`},
		{[]string{"--peer", "/a", "--socket", ""}, "nothing to serve on"},
		{[]string{"--peer", "/a", "--tls-cert-file", "c", "--tls-key-file", "k"}, "tls-cert-file: TLS applies to listen-address"},
		{[]string{"--peer", "/a", "--sort-window", "0s"}, "sort-window: invalid value"},
		{[]string{"--peer", "/a", "--log-level", "loud"}, `log-level: invalid value "loud"`},
	}
	for _, b := range bad {
		if _, err := parseFlags(b.args); err == nil || !strings.Contains(err.Error(), b.want) {
			t.Errorf("%v: %v, want %q", b.args, err, b.want)
		}
	}
}
