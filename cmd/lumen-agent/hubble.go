package main

// Flow observability's flags: the server itself is internal/hubble/server.

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"path/filepath"
	"strings"

	"github.com/lumen-net/lumen/internal/datapath"
	"github.com/lumen-net/lumen/internal/hubble"
	hubblemetrics "github.com/lumen-net/lumen/internal/hubble/metrics"
	"github.com/lumen-net/lumen/internal/hubble/observer"
	hubbleserver "github.com/lumen-net/lumen/internal/hubble/server"
	"github.com/lumen-net/lumen/internal/hubble/transport"
)

// hubbleConfig holds the agent's Hubble settings (flags and YAML keys).
type hubbleConfig struct {
	EnableHubble              bool     `json:"enable-hubble"`
	HubbleSocketPath          string   `json:"hubble-socket-path"`
	HubbleListenAddress       string   `json:"hubble-listen-address"`
	HubbleTLSCertFile         string   `json:"hubble-tls-cert-file"`
	HubbleTLSKeyFile          string   `json:"hubble-tls-key-file"`
	HubbleTLSClientCAFiles    []string `json:"hubble-tls-client-ca-files"`
	HubbleEventBufferCapacity int      `json:"hubble-event-buffer-capacity"`
	HubbleEventQueueSize      int      `json:"hubble-event-queue-size"`
	HubbleMetrics             string   `json:"hubble-metrics"`
	// MonitorAggregation is Cilium's name for the trace level; when set it
	// wins over trace-level.
	MonitorAggregation string `json:"monitor-aggregation"`
	BPFEventsRingSize  int    `json:"bpf-events-ring-size"`

	hubbleMetricGroups []string
}

// monitorAggregation maps Cilium's monitor aggregation levels to the
// datapath's trace levels.
var monitorAggregation = map[string]uint32{
	"none":    datapath.TraceAll,     // every packet at every observation point
	"low":     datapath.TraceLow,     // every packet, at to-* observation points only
	"medium":  datapath.TraceControl, // per connection: first packet each way, TCP flag changes
	"maximum": datapath.TraceMax,     // connection start and end only
	"max":     datapath.TraceMax,
}

// traceLevels are the older --trace-level names.
var traceLevels = map[string]uint32{
	"none":    datapath.TraceNone,
	"control": datapath.TraceControl,
	"all":     datapath.TraceAll,
}

// datapathTraceLevel is the trace level to program: --monitor-aggregation
// when given, else --trace-level (default control, i.e. medium).
func (c *config) datapathTraceLevel() uint32 {
	if l, ok := monitorAggregation[c.MonitorAggregation]; ok {
		return l
	}
	if l, ok := traceLevels[c.TraceLevel]; ok {
		return l
	}
	return datapath.TraceControl
}

// defaultEventsRing is the events ring buffer's size in bpf/lib/maps.h.
const defaultEventsRing = 4 << 20

func defaultHubbleConfig() hubbleConfig {
	return hubbleConfig{
		EnableHubble:              true,
		HubbleEventBufferCapacity: observer.DefaultCapacity,
		HubbleEventQueueSize:      observer.DefaultQueueSize,
		HubbleMetrics:             strings.Join(hubblemetrics.Default, ","),
		BPFEventsRingSize:         defaultEventsRing,
	}
}

func (h *hubbleConfig) flags(fs *flag.FlagSet) {
	fs.BoolVar(&h.EnableHubble, "enable-hubble", h.EnableHubble, "serve flows (Hubble API) on hubble.sock")
	fs.StringVar(&h.HubbleSocketPath, "hubble-socket-path", h.HubbleSocketPath, "Hubble API unix socket (default <state-dir>/hubble.sock)")
	fs.StringVar(&h.HubbleListenAddress, "hubble-listen-address", h.HubbleListenAddress, "also serve the Hubble API on this TCP address (e.g. :4244)")
	fs.StringVar(&h.HubbleTLSCertFile, "hubble-tls-cert-file", h.HubbleTLSCertFile, "TLS certificate of the TCP listener")
	fs.StringVar(&h.HubbleTLSKeyFile, "hubble-tls-key-file", h.HubbleTLSKeyFile, "TLS key of the TCP listener")
	fs.Func("hubble-tls-client-ca-files", "comma-separated CAs of client certificates: mutual TLS", func(s string) error {
		h.HubbleTLSClientCAFiles = strings.Split(s, ",")
		return nil
	})
	fs.IntVar(&h.HubbleEventBufferCapacity, "hubble-event-buffer-capacity", h.HubbleEventBufferCapacity, "number of flows kept in memory")
	fs.IntVar(&h.HubbleEventQueueSize, "hubble-event-queue-size", h.HubbleEventQueueSize, "datapath events waiting to be parsed before they are dropped")
	fs.StringVar(&h.HubbleMetrics, "hubble-metrics", h.HubbleMetrics, "flow metric groups ("+strings.Join(hubblemetrics.Groups, ",")+"); empty: none")
	fs.StringVar(&h.MonitorAggregation, "monitor-aggregation", h.MonitorAggregation,
		"trace events: none (every packet), low (every packet at to-* points), medium (per connection and TCP flag changes) or maximum (connection start and end); wins over --trace-level (default medium)")
	fs.IntVar(&h.BPFEventsRingSize, "bpf-events-ring-size", h.BPFEventsRingSize, "bytes of the datapath's events ring buffer (a power of two, at least 4096); a change replaces the ring on restart")
}

func (h *hubbleConfig) validate(stateDir string) error {
	if h.HubbleSocketPath == "" {
		h.HubbleSocketPath = filepath.Join(stateDir, "hubble.sock")
	}
	if (h.HubbleTLSCertFile == "") != (h.HubbleTLSKeyFile == "") {
		return errors.New("hubble-tls-cert-file, hubble-tls-key-file: give both or neither")
	}
	if len(h.HubbleTLSClientCAFiles) > 0 && h.HubbleTLSCertFile == "" {
		return errors.New("hubble-tls-client-ca-files: mutual TLS needs hubble-tls-cert-file and hubble-tls-key-file")
	}
	if h.HubbleTLSCertFile != "" && h.HubbleListenAddress == "" {
		return errors.New("hubble-tls-cert-file: TLS applies to hubble-listen-address, which is not set")
	}
	if h.HubbleListenAddress != "" {
		if _, _, err := net.SplitHostPort(h.HubbleListenAddress); err != nil {
			return fmt.Errorf("hubble-listen-address: invalid value %q: want host:port or :port", h.HubbleListenAddress)
		}
	}
	if h.HubbleEventBufferCapacity < 1 {
		return fmt.Errorf("hubble-event-buffer-capacity: invalid value %d: want at least 1", h.HubbleEventBufferCapacity)
	}
	if h.HubbleEventQueueSize < 1 {
		return fmt.Errorf("hubble-event-queue-size: invalid value %d: want at least 1", h.HubbleEventQueueSize)
	}
	if _, ok := monitorAggregation[h.MonitorAggregation]; !ok && h.MonitorAggregation != "" {
		return fmt.Errorf("monitor-aggregation: invalid value %q: want none, low, medium or maximum", h.MonitorAggregation)
	}
	if n := h.BPFEventsRingSize; n < 4096 || n > 1<<30 || n&(n-1) != 0 {
		return fmt.Errorf("bpf-events-ring-size: invalid value %d: want a power of two from 4096 to %d", n, 1<<30)
	}
	var err error
	if h.hubbleMetricGroups, err = hubblemetrics.Parse(h.HubbleMetrics); err != nil {
		return fmt.Errorf("hubble-metrics: %w", err)
	}
	return nil
}

// hubbleServer is the server configuration of the flags.
func (c *config) hubbleServer() hubbleserver.Config {
	hc := hubbleserver.Config{
		Enabled: c.EnableHubble, NodeName: c.NodeName, Zone: c.Zone, NodeLabels: c.nodeLabels,
		SocketPath: c.HubbleSocketPath, ListenAddress: c.HubbleListenAddress,
		Capacity: c.HubbleEventBufferCapacity, QueueSize: c.HubbleEventQueueSize, MetricGroups: c.hubbleMetricGroups,
	}
	if c.HubbleListenAddress != "" && c.HubbleTLSCertFile != "" {
		hc.TLS = &transport.ServerTLS{CertFile: c.HubbleTLSCertFile, KeyFile: c.HubbleTLSKeyFile, ClientCAFiles: c.HubbleTLSClientCAFiles}
	}
	return hc
}

// The version reported to Hubble clients follows the agent's.
func init() { hubble.Version = "lumen-" + version }
