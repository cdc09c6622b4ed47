package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/lumen-net/lumen/internal/datapath"
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

// --monitor-aggregation takes Cilium's level names and wins over the older
// --trace-level, which stays an alias; the ring size is a power of two.
func TestMonitorAggregation(t *testing.T) {
	base := []string{"--node-name", "n1", "--ipv4-pod-cidr", "10.200.1.0/24", "--state-dir", "/run/x"}
	for _, c := range []struct {
		args []string
		want uint32
	}{
		{nil, datapath.TraceControl},
		{[]string{"--monitor-aggregation", "none"}, datapath.TraceAll},
		{[]string{"--monitor-aggregation", "low"}, datapath.TraceLow},
		{[]string{"--monitor-aggregation", "medium"}, datapath.TraceControl},
		{[]string{"--monitor-aggregation", "maximum"}, datapath.TraceMax},
		{[]string{"--monitor-aggregation", "max"}, datapath.TraceMax},
		{[]string{"--trace-level", "all"}, datapath.TraceAll},
		{[]string{"--trace-level", "none"}, datapath.TraceNone},
		{[]string{"--trace-level", "control"}, datapath.TraceControl},
		{[]string{"--trace-level", "all", "--monitor-aggregation", "maximum"}, datapath.TraceMax},
	} {
		cfg, err := parseConfig(append(append([]string{}, base...), c.args...))
		if err != nil {
			t.Fatalf("%v: %v", c.args, err)
		}
		if got := cfg.datapathTraceLevel(); got != c.want {
			t.Errorf("%v: trace level %d, want %d", c.args, got, c.want)
		}
	}
	cfg, err := parseConfig(append(append([]string{}, base...), "--bpf-events-ring-size", "16777216"))
	if err != nil || cfg.BPFEventsRingSize != 16<<20 {
		t.Fatalf("ring size: %v %+v", err, cfg)
	}
	if cfg, _ := parseConfig(base); cfg.BPFEventsRingSize != 4<<20 {
		t.Errorf("default ring size %d, want 4 MiB (bpf/lib/maps.h)", cfg.BPFEventsRingSize)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--monitor-aggregation", "loud"}, `monitor-aggregation: invalid value "loud": want none, low, medium or maximum`},
		{[]string{"--monitor-aggregation", "Medium"}, `monitor-aggregation: invalid value "Medium"`},
		{[]string{"--bpf-events-ring-size", "5000"}, "bpf-events-ring-size: invalid value 5000"},
		{[]string{"--bpf-events-ring-size", "2048"}, "bpf-events-ring-size: invalid value 2048"},
	} {
		_, err := parseConfig(append(append([]string{}, base...), c.args...))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: error %v, want %q", c.args, err, c.want)
		}
	}
}
