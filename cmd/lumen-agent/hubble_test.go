package main

import (
	"path/filepath"
	"strings"
	"testing"
)

func TestHubbleConfig(t *testing.T) {
	base := []string{"--node-name", "n1", "--ipv4-pod-cidr", "10.200.1.0/24", "--state-dir", "/run/x"}
	c, err := parseConfig(base)
	if err != nil {
		t.Fatal(err)
	}
	if !c.EnableHubble || c.HubbleSocketPath != filepath.Join("/run/x", "hubble.sock") || c.HubbleEventBufferCapacity != 4095 ||
		strings.Join(c.hubbleMetricGroups, ",") != "flow,drop,tcp,lost" {
		t.Errorf("defaults: %+v", c.hubbleConfig)
	}
	c, err = parseConfig(append(base, "--hubble-metrics=", "--hubble-event-buffer-capacity", "65535",
		"--hubble-listen-address", ":4244", "--hubble-tls-cert-file", "c", "--hubble-tls-key-file", "k", "--hubble-tls-client-ca-files", "a,b"))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.hubbleMetricGroups) != 0 || c.HubbleEventBufferCapacity != 65535 || len(c.HubbleTLSClientCAFiles) != 2 {
		t.Errorf("flags: %+v", c.hubbleConfig)
	}
	bad := []struct {
		args []string
		want string
	}{
		{[]string{"--hubble-metrics", "flow,http"}, `hubble-metrics: invalid metric group "http"`},
		{[]string{"--hubble-event-buffer-capacity", "0"}, "hubble-event-buffer-capacity: invalid value 0"},
		{[]string{"--hubble-listen-address", "4244"}, `hubble-listen-address: invalid value "4244"`},
		{[]string{"--hubble-listen-address", ":4244", "--hubble-tls-cert-file", "c"}, "hubble-tls-cert-file, hubble-tls-key-file"},
		{[]string{"--hubble-tls-cert-file", "c", "--hubble-tls-key-file", "k"}, "hubble-tls-cert-file: TLS applies to hubble-listen-address"},
		{[]string{"--hubble-listen-address", ":4244", "--hubble-tls-client-ca-files", "ca"}, "hubble-tls-client-ca-files"},
	}
	for _, b := range bad {
		_, err := parseConfig(append(append([]string{}, base...), b.args...))
		if err == nil || !strings.Contains(err.Error(), b.want) {
			t.Errorf("%v: error %v, want %q", b.args, err, b.want)
		}
	}
}
