package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseConfigFlagsAndFile(t *testing.T) {
	file := filepath.Join(t.TempDir(), "agent.yaml")
	yaml := "node-name: from-file\nipv4-pod-cidr: 10.200.9.0/24\nrouting: vxlan\ndevices: [eth0, eth1]\n"
	if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := parseConfig([]string{"--config", file, "--node-name", "from-flag"})
	if err != nil {
		t.Fatal(err)
	}
	if c.NodeName != "from-flag" {
		t.Errorf("node-name %q: the flag must win over the file", c.NodeName)
	}
	if c.Routing != "vxlan" || c.v4.String() != "10.200.9.0/24" || strings.Join(c.Devices, ",") != "eth0,eth1" {
		t.Errorf("file values lost: %+v", c)
	}
	c, err = parseConfig([]string{"--node-name", "n", "--ipv6-pod-cidr", "fd00::/64", "--tunnel", "vxlan"})
	if err != nil || c.Routing != "vxlan" {
		t.Fatalf("--tunnel=vxlan: %v %+v", err, c)
	}
	if c.LBMode != "snat" {
		t.Errorf("bpf-lb-mode defaults to %q, want snat", c.LBMode)
	}
	c, err = parseConfig([]string{"--node-name", "n", "--ipv4-pod-cidr", "10.0.0.0/24", "--bpf-lb-mode", "dsr"})
	if err != nil || c.LBMode != "dsr" {
		t.Fatalf("--bpf-lb-mode=dsr with native routing: %v %+v", err, c)
	}
}

func TestParseConfigRejects(t *testing.T) {
	file := filepath.Join(t.TempDir(), "bad.yaml")
	_ = os.WriteFile(file, []byte("node-name: x\nipv4-pod-cidr: 10.0.0.0/24\nroutnig: vxlan\n"), 0o600)
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--node-name", "n"}, "at least one pod CIDR"},
		{[]string{"--ipv4-pod-cidr", "10.0.0.0/33"}, `ipv4-pod-cidr: invalid value "10.0.0.0/33"`},
		{[]string{"--ipv4-pod-cidr", "fd00::/64"}, `ipv4-pod-cidr: invalid value "fd00::/64"`},
		{[]string{"--ipv4-pod-cidr", "10.0.0.0/24", "--routing", "geneve"}, `routing: invalid value "geneve"`},
		{[]string{"--ipv4-pod-cidr", "10.0.0.0/24", "--tunnel", "geneve"}, `--tunnel: invalid value "geneve"`},
		{[]string{"--ipv4-pod-cidr", "10.0.0.0/24", "--trace-level", "loud"}, `trace-level: invalid value "loud"`},
		{[]string{"--ipv4-pod-cidr", "10.0.0.0/24", "--bpf-lb-mode", "hybrid"}, `bpf-lb-mode: invalid value "hybrid"`},
		{[]string{"--ipv4-pod-cidr", "10.0.0.0/24", "--bpf-lb-mode", "dsr", "--routing", "vxlan"}, `bpf-lb-mode: dsr needs --routing=native`},
		{[]string{"--ipv4-pod-cidr", "10.0.0.0/24", "--bpf-lb-mode=dsr", "--tunnel=vxlan"}, `bpf-lb-mode: dsr needs --routing=native`},
		{[]string{"--ipv4-pod-cidr", "10.0.0.0/24", "--log-level", "chatty"}, `log-level: invalid value "chatty"`},
		{[]string{"--config", file}, `unknown field "routnig"`},
		{[]string{"--ipv4-pod-cidr", "10.0.0.0/24", "extra"}, `unexpected argument "extra"`},
	}
	for _, c := range cases {
		_, err := parseConfig(c.args)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: error %v, want it to mention %q", c.args, err, c.want)
		}
	}
}

func FuzzConfigFile(f *testing.F) {
	f.Add("node-name: n\nipv4-pod-cidr: 10.0.0.0/24\n")
	f.Add("devices: [eth+]\nrouting: vxlan\nipv6-pod-cidr: fd00::/64\n")
	f.Add("trace-level: [1, 2]\n")
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, content string) {
		file := filepath.Join(dir, "c.yaml")
		if err := os.WriteFile(file, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := parseConfig([]string{"--config", file})
		if err == nil && !c.v4.IsValid() && !c.v6.IsValid() {
			t.Fatalf("accepted a config without pod CIDR: %q", content)
		}
	})
}
