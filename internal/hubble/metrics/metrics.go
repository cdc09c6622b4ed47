// Package metrics derives Prometheus metrics (lumen_hubble_*) from the flows
// the observer records: flows by type and verdict, drops by reason and
// direction, TCP flags, ports and lost events. Which groups are on is
// configurable (the agent's --hubble-metrics flag).
package metrics

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/lumen-net/lumen/internal/hubble/parser"
)

// Metric groups.
const (
	GroupFlow = "flow"              // lumen_hubble_flows_processed_total{type,subtype,verdict}
	GroupDrop = "drop"              // lumen_hubble_drop_total{reason,direction,protocol}
	GroupTCP  = "tcp"               // lumen_hubble_tcp_flags_total{flag,family}
	GroupPort = "port-distribution" // lumen_hubble_port_distribution_total{protocol,port}
	GroupLost = "lost"              // lumen_hubble_lost_events_total{source}
)

// Groups lists every group; Default the ones on unless configured.
var (
	Groups  = []string{GroupFlow, GroupDrop, GroupTCP, GroupPort, GroupLost}
	Default = []string{GroupFlow, GroupDrop, GroupTCP, GroupLost}
)

// Parse reads a comma-separated list of groups; "" means none.
func Parse(s string) ([]string, error) {
	var out []string
	for _, g := range strings.Split(s, ",") {
		g = strings.TrimSpace(g)
		if g == "" {
			continue
		}
		if !slices.Contains(Groups, g) {
			return nil, fmt.Errorf("invalid metric group %q: want some of %s", g, strings.Join(Groups, ", "))
		}
		if !slices.Contains(out, g) {
			out = append(out, g)
		}
	}
	return out, nil
}

// Metrics holds the enabled collectors. OnFlow is called from the
// observer's single goroutine; OnLost may be called from any.
type Metrics struct {
	flows *prometheus.CounterVec
	drops *prometheus.CounterVec
	tcp   *prometheus.CounterVec
	ports *prometheus.CounterVec
	lost  *prometheus.CounterVec

	// Counters cached by label values: WithLabelValues per flow is slow.
	flowCache map[flowKey]prometheus.Counter
	dropCache map[dropKey]prometheus.Counter
	tcpCache  map[tcpKey][]prometheus.Counter // one counter per flag set
	portCache map[portKey]prometheus.Counter
}

type flowKey struct {
	typ, sub int32
	verdict  flowpb.Verdict
}

type dropKey struct {
	reason flowpb.DropReason
	dir    flowpb.TrafficDirection
	proto  string
}

type tcpKey struct {
	flags   *flowpb.TCPFlags // shared per flags byte by the parser
	version flowpb.IPVersion
}

type portKey struct {
	proto string
	port  uint32
}

// New builds the collectors of the given groups.
func New(groups []string) (*Metrics, error) {
	m := &Metrics{
		flowCache: map[flowKey]prometheus.Counter{}, dropCache: map[dropKey]prometheus.Counter{},
		tcpCache: map[tcpKey][]prometheus.Counter{}, portCache: map[portKey]prometheus.Counter{},
	}
	for _, g := range groups {
		switch g {
		case GroupFlow:
			m.flows = prometheus.NewCounterVec(prometheus.CounterOpts{
				Name: "lumen_hubble_flows_processed_total", Help: "Flows recorded by the observer, by event type, subtype and verdict.",
			}, []string{"type", "subtype", "verdict"})
		case GroupDrop:
			m.drops = prometheus.NewCounterVec(prometheus.CounterOpts{
				Name: "lumen_hubble_drop_total", Help: "Dropped flows by drop reason, traffic direction and protocol.",
			}, []string{"reason", "direction", "protocol"})
		case GroupTCP:
			m.tcp = prometheus.NewCounterVec(prometheus.CounterOpts{
				Name: "lumen_hubble_tcp_flags_total", Help: "TCP flows by flag and IP family.",
			}, []string{"flag", "family"})
		case GroupPort:
			m.ports = prometheus.NewCounterVec(prometheus.CounterOpts{
				Name: "lumen_hubble_port_distribution_total", Help: "Forwarded flows by protocol and destination port.",
			}, []string{"protocol", "port"})
		case GroupLost:
			m.lost = prometheus.NewCounterVec(prometheus.CounterOpts{
				Name: "lumen_hubble_lost_events_total", Help: "Events that never became flows, by where they were lost.",
			}, []string{"source"})
		default:
			return nil, fmt.Errorf("invalid metric group %q", g)
		}
	}
	return m, nil
}

// Collectors returns the enabled collectors, to register.
func (m *Metrics) Collectors() []prometheus.Collector {
	var out []prometheus.Collector
	for _, c := range []*prometheus.CounterVec{m.flows, m.drops, m.tcp, m.ports, m.lost} {
		if c != nil {
			out = append(out, c)
		}
	}
	return out
}

// Lost event sources (the label of lumen_hubble_lost_events_total).
const (
	LostRingBuffer = "perf_event_ring_buffer" // datapath could not reserve ring-buffer space
	LostQueue      = "observer_events_queue"  // the observer fell behind the reader
	LostHubbleRing = "hubble_ring_buffer"     // a client fell behind the flow ring
	LostParse      = "parse_error"            // an event the parser rejected
)

// OnLost counts lost events.
func (m *Metrics) OnLost(source string, n uint64) {
	if m == nil || m.lost == nil || n == 0 {
		return
	}
	m.lost.WithLabelValues(source).Add(float64(n))
}

// OnFlow counts one flow.
func (m *Metrics) OnFlow(f *flowpb.Flow) {
	if m == nil {
		return
	}
	if m.flows != nil {
		et := f.GetEventType()
		k := flowKey{et.GetType(), et.GetSubType(), f.GetVerdict()}
		c, ok := m.flowCache[k]
		if !ok {
			typ, sub := typeNames(f)
			c = m.flows.WithLabelValues(typ, sub, f.GetVerdict().String())
			m.flowCache[k] = c
		}
		c.Inc()
	}
	if m.drops != nil && f.GetVerdict() == flowpb.Verdict_DROPPED {
		k := dropKey{f.GetDropReasonDesc(), f.GetTrafficDirection(), protocol(f.GetL4())}
		c, ok := m.dropCache[k]
		if !ok {
			c = m.drops.WithLabelValues(k.reason.String(), k.dir.String(), k.proto)
			m.dropCache[k] = c
		}
		c.Inc()
	}
	if m.tcp != nil {
		if fl := f.GetL4().GetTCP().GetFlags(); fl != nil {
			k := tcpKey{fl, f.GetIP().GetIpVersion()}
			cs, ok := m.tcpCache[k]
			if !ok {
				cs = m.flagCounters(k)
				if len(m.tcpCache) < 4096 {
					m.tcpCache[k] = cs
				}
			}
			for _, c := range cs {
				c.Inc()
			}
		}
	}
	if m.ports != nil && f.GetVerdict() == flowpb.Verdict_FORWARDED {
		proto := protocol(f.GetL4())
		var port uint32
		switch l := f.GetL4(); {
		case l.GetTCP() != nil:
			port = l.GetTCP().GetDestinationPort()
		case l.GetUDP() != nil:
			port = l.GetUDP().GetDestinationPort()
		case l.GetSCTP() != nil:
			port = l.GetSCTP().GetDestinationPort()
		default:
			return
		}
		k := portKey{proto, port}
		c, ok := m.portCache[k]
		if !ok {
			c = m.ports.WithLabelValues(proto, strconv.Itoa(int(port)))
			if len(m.portCache) < 1<<16 {
				m.portCache[k] = c
			}
		}
		c.Inc()
	}
}

// flagCounters are the counters of each flag a flags message has set. The
// parser shares one message per flags byte, so the cache keyed by it stays
// small and a data packet (PSH, ACK) costs two increments, no label hashing.
func (m *Metrics) flagCounters(k tcpKey) []prometheus.Counter {
	family := k.version.String()
	var out []prometheus.Counter
	for _, x := range []struct {
		on   bool
		name string
	}{{k.flags.SYN, "SYN"}, {k.flags.ACK, "ACK"}, {k.flags.RST, "RST"}, {k.flags.FIN, "FIN"}, {k.flags.PSH, "PSH"},
		{k.flags.URG, "URG"}, {k.flags.ECE, "ECE"}, {k.flags.CWR, "CWR"}, {k.flags.NS, "NS"}} {
		if x.on {
			out = append(out, m.tcp.WithLabelValues(x.name, family))
		}
	}
	return out
}

func typeNames(f *flowpb.Flow) (typ, sub string) {
	et := f.GetEventType()
	switch et.GetType() {
	case 4:
		return "Trace", parser.TraceName(et.GetSubType())
	case 1:
		return "Drop", flowpb.DropReason(et.GetSubType()).String()
	case 5:
		return "PolicyVerdict", matchName(f.GetPolicyMatchType())
	}
	return strconv.Itoa(int(et.GetType())), strconv.Itoa(int(et.GetSubType()))
}

func matchName(m uint32) string {
	switch m {
	case 0:
		return "none"
	case 1:
		return "L3-Only"
	case 2:
		return "L3-L4"
	case 3:
		return "L4-Only"
	case 4:
		return "all"
	}
	return strconv.Itoa(int(m))
}

func protocol(l *flowpb.Layer4) string {
	switch {
	case l.GetTCP() != nil:
		return "TCP"
	case l.GetUDP() != nil:
		return "UDP"
	case l.GetSCTP() != nil:
		return "SCTP"
	case l.GetICMPv4() != nil:
		return "ICMPv4"
	case l.GetICMPv6() != nil:
		return "ICMPv6"
	}
	return "unknown"
}
