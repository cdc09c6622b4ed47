package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestBGPFlags(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "bgp.yaml")
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(good, []byte("peers: [{peer-address: 10.0.0.1, peer-asn: 65000, my-asn: 65001}]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bad, []byte("peers: [{peer-address: 10.0.0.1, peer-asn: 65000, my-asn: 65001, keepalive-time: 100s}]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	base := []string{"--node-name", "n", "--ipv4-pod-cidr", "10.200.1.0/24"}
	c, err := parseConfig(append(base, "--bgp-config-path", good, "--bgp-announce-pod-cidr", "--bgp-announce-lb-ip"))
	if err != nil {
		t.Fatal(err)
	}
	if c.BGPConfigPath != good || !c.BGPAnnouncePodCIDR || !c.BGPAnnounceLBIP || c.EnableBGPControlPlane {
		t.Errorf("flags: %+v", c.bgpConfig)
	}
	// The YAML file takes the same keys.
	file := filepath.Join(dir, "agent.yaml")
	if err := os.WriteFile(file, []byte("node-name: n\nipv4-pod-cidr: 10.200.1.0/24\nkvstore: unix:///x\nenable-bgp-control-plane: true\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if c, err := parseConfig([]string{"--config", file}); err != nil || !c.EnableBGPControlPlane {
		t.Errorf("YAML enable-bgp-control-plane: %v %+v", err, c)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--bgp-config-path", bad}, `bgp-config-path: ` + bad + `: peers[0].keepalive-time: invalid value "1m40s": keepalive time 1m40s must not exceed the hold time 1m30s`},
		{[]string{"--bgp-config-path", filepath.Join(dir, "missing.yaml")}, "bgp-config-path: reading BGP configuration"},
		{[]string{"--bgp-config-path", good, "--kvstore", "unix:///x", "--enable-bgp-control-plane"}, "bgp-config-path, enable-bgp-control-plane: choose one"},
		{[]string{"--enable-bgp-control-plane"}, "enable-bgp-control-plane: CiliumBGPPeeringPolicy objects live in the kvstore"},
		{[]string{"--bgp-announce-lb-ip"}, "bgp-announce-pod-cidr, bgp-announce-lb-ip: need --bgp-config-path"},
	} {
		_, err := parseConfig(append(append([]string{}, base...), tc.args...))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v:\n got %v\nwant %q", tc.args, err, tc.want)
		}
	}
}
