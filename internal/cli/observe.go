package cli

import (
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	observerpb "github.com/cilium/cilium/api/v1/observer"
	"github.com/spf13/cobra"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/lumen-net/lumen/internal/hubble/filters"
	"github.com/lumen-net/lumen/internal/hubble/parser"
	"github.com/lumen-net/lumen/internal/hubble/printer"
	"github.com/lumen-net/lumen/internal/hubble/transport"
	"github.com/lumen-net/lumen/internal/lab/labpath"
)

// observeOpts are the flags of `lumen observe`.
type observeOpts struct {
	server                   string
	tls                      bool
	tlsCA                    []string
	tlsCert, tlsKey, tlsSN   string
	pods, fromPods, toPods   []string
	namespace                string
	labels, fromLabels       []string
	toLabels                 []string
	ips, fromIPs, toIPs      []string
	verdicts, protocols      []string
	ports, types             []string
	nodeNames, dropReasons   []string
	tcpFlags                 []string
	direction, ipVersion     string
	since, until             string
	last, first              uint64
	all, follow, printNode   bool
	identities               []string
	fromIdentity, toIdentity []string
}

func newObserveCmd() *cobra.Command {
	o := &observeOpts{}
	cmd := &cobra.Command{
		Use:   "observe",
		Short: "Show flows from a node's agent or from lumen-relay (Hubble API)",
		Long: `Show the flows the datapath reports, filtered on the server like 'hubble observe'.

Without --server: the lab node given by --node, else the lab's relay
(<lab dir>/hubble-relay.sock) when it runs, else the agent next to --socket.
Without --since, --first or --all, the last 20 flows are shown.
Output (-o): compact (default), json, table or dict.`,
		Example: `  lumen observe --node n1 --pod shop/frontend --last 50
  lumen observe --server unix:///run/lumen/hubble.sock --verdict DROPPED -f
  lumen observe --namespace shop --protocol tcp --port 80 -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runObserve(cmd, o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.server, "server", os.Getenv("LUMEN_HUBBLE_SERVER"), "Hubble server: unix:///path or host:port (env LUMEN_HUBBLE_SERVER)")
	f.BoolVar(&o.tls, "tls", false, "use TLS (TCP servers)")
	f.StringSliceVar(&o.tlsCA, "tls-ca-cert-files", nil, "CA certificates that sign the server's certificate")
	f.StringVar(&o.tlsCert, "tls-client-cert-file", "", "client certificate (mutual TLS)")
	f.StringVar(&o.tlsKey, "tls-client-key-file", "", "client key (mutual TLS)")
	f.StringVar(&o.tlsSN, "tls-server-name", "", "name expected in the server's certificate")
	f.StringSliceVar(&o.pods, "pod", nil, "flows from or to this pod ([namespace/]name prefix)")
	f.StringSliceVar(&o.fromPods, "from-pod", nil, "flows from this pod")
	f.StringSliceVar(&o.toPods, "to-pod", nil, "flows to this pod")
	f.StringVarP(&o.namespace, "namespace", "n", "", "namespace of --pod/--from-pod/--to-pod; alone: flows from or to the namespace")
	f.StringSliceVarP(&o.labels, "label", "l", nil, "flows from or to endpoints matching this label selector (app=web,tier in (a,b))")
	f.StringSliceVar(&o.fromLabels, "from-label", nil, "flows from endpoints matching this label selector")
	f.StringSliceVar(&o.toLabels, "to-label", nil, "flows to endpoints matching this label selector")
	f.StringSliceVar(&o.ips, "ip", nil, "flows from or to this IP or CIDR")
	f.StringSliceVar(&o.fromIPs, "from-ip", nil, "flows from this IP or CIDR")
	f.StringSliceVar(&o.toIPs, "to-ip", nil, "flows to this IP or CIDR")
	f.StringSliceVar(&o.identities, "identity", nil, "flows from or to this security identity")
	f.StringSliceVar(&o.fromIdentity, "from-identity", nil, "flows from this security identity")
	f.StringSliceVar(&o.toIdentity, "to-identity", nil, "flows to this security identity")
	f.StringSliceVar(&o.verdicts, "verdict", nil, "FORWARDED, DROPPED, AUDIT, ...")
	f.StringSliceVar(&o.protocols, "protocol", nil, "tcp, udp, sctp, icmp, icmpv4, icmpv6")
	f.StringSliceVar(&o.ports, "port", nil, "flows from or to this L4 port")
	f.StringSliceVarP(&o.types, "type", "t", nil, "event type: trace, drop, policy-verdict, optionally :subtype (trace:to-endpoint, drop:132)")
	f.StringSliceVar(&o.nodeNames, "node-name", nil, "flows observed on this node ([cluster/]name pattern, * wildcards)")
	f.StringSliceVar(&o.dropReasons, "drop-reason", nil, "drop reason (POLICY_DENIED, INVALID_SOURCE_IP, ...)")
	f.StringSliceVar(&o.tcpFlags, "tcp-flags", nil, "TCP flags that must all be set, e.g. SYN or SYN,ACK (repeat for alternatives)")
	f.StringVar(&o.direction, "traffic-direction", "", "ingress or egress")
	f.StringVar(&o.ipVersion, "ip-version", "", "4 or 6")
	f.StringVar(&o.since, "since", "", "flows since this time (RFC 3339) or duration ago (5m)")
	f.StringVar(&o.until, "until", "", "flows until this time (RFC 3339) or duration ago")
	f.Uint64Var(&o.last, "last", 0, "the last N flows (default 20 unless --since, --first or --all)")
	f.Uint64Var(&o.first, "first", 0, "the first N flows")
	f.BoolVar(&o.all, "all", false, "every flow the server has")
	f.BoolVarP(&o.follow, "follow", "f", false, "keep showing new flows")
	f.BoolVar(&o.printNode, "print-node-name", false, "show the node of each flow")
	return cmd
}

func runObserve(cmd *cobra.Command, o *observeOpts) error {
	format, err := observeFormat(g.output)
	if err != nil {
		return err
	}
	if format == printer.Table && o.follow {
		return errors.New("--output table cannot be combined with --follow")
	}
	req, err := o.request(time.Now())
	if err != nil {
		return err
	}
	server := o.server
	if server == "" {
		server = defaultHubbleServer()
	}
	var ctls *transport.ClientTLS
	if o.tls {
		ctls = &transport.ClientTLS{Enabled: true, CAFiles: o.tlsCA, CertFile: o.tlsCert, KeyFile: o.tlsKey, ServerName: o.tlsSN}
	}
	conn, err := transport.Dial(server, ctls)
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	stream, err := observerpb.NewObserverClient(conn).GetFlows(ctx, req)
	if err != nil {
		return fmt.Errorf("getting flows from %s: %s", server, status.Convert(err).Message())
	}
	p, err := printer.New(cmd.OutOrStdout(), cmd.ErrOrStderr(), format, o.printNode)
	if err != nil {
		return err
	}
	defer p.Flush()
	for {
		r, err := stream.Recv()
		if errors.Is(err, io.EOF) || ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return fmt.Errorf("getting flows from %s: %s", server, status.Convert(err).Message())
		}
		if err := p.Write(r); err != nil {
			return err
		}
	}
}

// observeFormat maps the global --output onto the printer's formats.
func observeFormat(out string) (string, error) {
	switch out {
	case "", "text", "compact":
		return printer.Compact, nil
	case "json", "jsonpb":
		return printer.JSON, nil
	case "table", "tab":
		return printer.Table, nil
	case "dict":
		return printer.Dict, nil
	}
	return "", fmt.Errorf("invalid --output %q: want compact, json, table or dict", out)
}

// defaultHubbleServer picks the lab node's socket, the lab's relay or the
// agent next to --socket.
func defaultHubbleServer() string {
	if g.node != "" {
		return "unix://" + filepath.Join(labpath.NodeDir(g.lab, g.node), "hubble.sock")
	}
	if relay := filepath.Join(labpath.Dir(g.lab), "hubble-relay.sock"); fileExists(relay) {
		return "unix://" + relay
	}
	return "unix://" + filepath.Join(filepath.Dir(g.socket), "hubble.sock")
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// request builds the GetFlowsRequest as the hubble CLI does: flags about
// either side make two filters (the value as source, or as destination),
// everything else constrains both.
func (o *observeOpts) request(now time.Time) (*observerpb.GetFlowsRequest, error) {
	req := &observerpb.GetFlowsRequest{Follow: o.follow}
	base := &flowpb.FlowFilter{}
	srcSide, dstSide := &flowpb.FlowFilter{}, &flowpb.FlowFilter{}
	either := false

	qualify := func(pods []string) []string {
		out := make([]string, 0, len(pods))
		for _, p := range pods {
			if o.namespace != "" && !strings.Contains(p, "/") {
				p = o.namespace + "/" + p
			}
			out = append(out, p)
		}
		return out
	}
	base.SourcePod = qualify(o.fromPods)
	base.DestinationPod = qualify(o.toPods)
	if len(o.pods) > 0 {
		either = true
		srcSide.SourcePod, dstSide.DestinationPod = qualify(o.pods), qualify(o.pods)
	} else if o.namespace != "" && len(o.fromPods)+len(o.toPods) == 0 {
		either = true
		srcSide.SourcePod, dstSide.DestinationPod = []string{o.namespace + "/"}, []string{o.namespace + "/"}
	}
	// Checked here to name the flag; the server checks again.
	for flag, sels := range map[string][]string{"--label": o.labels, "--from-label": o.fromLabels, "--to-label": o.toLabels} {
		for _, s := range sels {
			if _, err := filters.ParseSelector(s); err != nil {
				return nil, filters.Invalid(flag, s, err.Error())
			}
		}
	}
	base.SourceLabel, base.DestinationLabel = o.fromLabels, o.toLabels
	if len(o.labels) > 0 {
		either = true
		srcSide.SourceLabel, dstSide.DestinationLabel = o.labels, o.labels
	}
	base.SourceIp, base.DestinationIp = o.fromIPs, o.toIPs
	if len(o.ips) > 0 {
		either = true
		srcSide.SourceIp, dstSide.DestinationIp = o.ips, o.ips
	}
	var err error
	if base.SourceIdentity, err = identities("--from-identity", o.fromIdentity); err != nil {
		return nil, err
	}
	if base.DestinationIdentity, err = identities("--to-identity", o.toIdentity); err != nil {
		return nil, err
	}
	if len(o.identities) > 0 {
		either = true
		ids, err := identities("--identity", o.identities)
		if err != nil {
			return nil, err
		}
		srcSide.SourceIdentity, dstSide.DestinationIdentity = ids, slices.Clone(ids)
	}
	if len(o.ports) > 0 {
		either = true
		srcSide.SourcePort, dstSide.DestinationPort = o.ports, o.ports
	}

	for _, v := range o.verdicts {
		n, ok := flowpb.Verdict_value[strings.ToUpper(v)]
		if !ok {
			return nil, fmt.Errorf("--verdict: invalid value %q: want FORWARDED, DROPPED, AUDIT, ERROR, REDIRECTED, TRACED or TRANSLATED", v)
		}
		base.Verdict = append(base.Verdict, flowpb.Verdict(n))
	}
	for _, r := range o.dropReasons {
		n, ok := flowpb.DropReason_value[strings.ToUpper(r)]
		if !ok {
			return nil, fmt.Errorf("--drop-reason: invalid value %q: want a Hubble drop reason such as POLICY_DENIED", r)
		}
		base.DropReasonDesc = append(base.DropReasonDesc, flowpb.DropReason(n))
	}
	base.Protocol = o.protocols
	base.NodeName = o.nodeNames
	for _, t := range o.types {
		et, err := eventTypeFilter(t)
		if err != nil {
			return nil, err
		}
		base.EventType = append(base.EventType, et)
	}
	for _, fl := range o.tcpFlags {
		tf := &flowpb.TCPFlags{}
		for _, name := range strings.Split(fl, ",") {
			switch strings.ToUpper(strings.TrimSpace(name)) {
			case "SYN":
				tf.SYN = true
			case "ACK":
				tf.ACK = true
			case "FIN":
				tf.FIN = true
			case "RST":
				tf.RST = true
			case "PSH":
				tf.PSH = true
			case "URG":
				tf.URG = true
			case "ECE":
				tf.ECE = true
			case "CWR":
				tf.CWR = true
			case "NS":
				tf.NS = true
			default:
				return nil, fmt.Errorf("--tcp-flags: invalid flag %q: want SYN, ACK, FIN, RST, PSH, URG, ECE, CWR or NS", name)
			}
		}
		base.TcpFlags = append(base.TcpFlags, tf)
	}
	switch strings.ToLower(o.direction) {
	case "":
	case "ingress":
		base.TrafficDirection = []flowpb.TrafficDirection{flowpb.TrafficDirection_INGRESS}
	case "egress":
		base.TrafficDirection = []flowpb.TrafficDirection{flowpb.TrafficDirection_EGRESS}
	default:
		return nil, fmt.Errorf("--traffic-direction: invalid value %q: want ingress or egress", o.direction)
	}
	switch o.ipVersion {
	case "":
	case "4", "v4", "ipv4":
		base.IpVersion = []flowpb.IPVersion{flowpb.IPVersion_IPv4}
	case "6", "v6", "ipv6":
		base.IpVersion = []flowpb.IPVersion{flowpb.IPVersion_IPv6}
	default:
		return nil, fmt.Errorf("--ip-version: invalid value %q: want 4 or 6", o.ipVersion)
	}

	if either {
		for _, side := range []*flowpb.FlowFilter{srcSide, dstSide} {
			merged := mergeFilter(base, side)
			req.Whitelist = append(req.Whitelist, merged)
		}
	} else if !isEmptyFilter(base) {
		req.Whitelist = []*flowpb.FlowFilter{base}
	}

	if req.Since, err = timeFlag("--since", o.since, now); err != nil {
		return nil, err
	}
	if req.Until, err = timeFlag("--until", o.until, now); err != nil {
		return nil, err
	}
	switch {
	case o.first > 0 && o.last > 0:
		return nil, errors.New("--first and --last cannot be combined")
	case o.first > 0 && o.follow:
		return nil, errors.New("--first cannot be combined with --follow")
	case o.first > 0:
		req.Number, req.First = o.first, true
	case o.last > 0:
		req.Number = o.last
	case o.all || req.Since != nil || req.Until != nil:
	case o.follow:
	default:
		req.Number = 20
	}
	return req, nil
}

// mergeFilter returns base with the side's fields added.
func mergeFilter(base, side *flowpb.FlowFilter) *flowpb.FlowFilter {
	m := &flowpb.FlowFilter{
		SourcePod:           append(append([]string{}, base.SourcePod...), side.SourcePod...),
		DestinationPod:      append(append([]string{}, base.DestinationPod...), side.DestinationPod...),
		SourceLabel:         append(append([]string{}, base.SourceLabel...), side.SourceLabel...),
		DestinationLabel:    append(append([]string{}, base.DestinationLabel...), side.DestinationLabel...),
		SourceIp:            append(append([]string{}, base.SourceIp...), side.SourceIp...),
		DestinationIp:       append(append([]string{}, base.DestinationIp...), side.DestinationIp...),
		SourceIdentity:      append(append([]uint32{}, base.SourceIdentity...), side.SourceIdentity...),
		DestinationIdentity: append(append([]uint32{}, base.DestinationIdentity...), side.DestinationIdentity...),
		SourcePort:          side.SourcePort, DestinationPort: side.DestinationPort,
		Verdict: base.Verdict, DropReasonDesc: base.DropReasonDesc, Protocol: base.Protocol, NodeName: base.NodeName,
		EventType: base.EventType, TcpFlags: base.TcpFlags, TrafficDirection: base.TrafficDirection, IpVersion: base.IpVersion,
	}
	return m
}

func isEmptyFilter(f *flowpb.FlowFilter) bool {
	return len(f.SourcePod)+len(f.DestinationPod)+len(f.SourceLabel)+len(f.DestinationLabel)+len(f.SourceIp)+
		len(f.DestinationIp)+len(f.SourceIdentity)+len(f.DestinationIdentity)+len(f.Verdict)+len(f.DropReasonDesc)+
		len(f.Protocol)+len(f.NodeName)+len(f.EventType)+len(f.TcpFlags)+len(f.TrafficDirection)+len(f.IpVersion) == 0
}

// eventTypeFilter reads "trace", "drop:132", "trace:to-endpoint", "policy-verdict".
func eventTypeFilter(s string) (*flowpb.EventTypeFilter, error) {
	name, sub, hasSub := strings.Cut(strings.ToLower(s), ":")
	f := &flowpb.EventTypeFilter{}
	switch name {
	case "trace":
		f.Type = 4
	case "drop":
		f.Type = 1
	case "policy-verdict":
		f.Type = 5
	default:
		return nil, fmt.Errorf("--type: invalid value %q: want trace, drop or policy-verdict, optionally with :subtype", s)
	}
	if !hasSub {
		return f, nil
	}
	f.MatchSubType = true
	if n, err := strconv.ParseUint(sub, 10, 8); err == nil {
		f.SubType = int32(n)
		return f, nil
	}
	if f.Type == 4 {
		if n, ok := parser.TraceSubtype(sub); ok {
			f.SubType = n
			return f, nil
		}
	}
	return nil, fmt.Errorf("--type: invalid subtype %q in %q", sub, s)
}

// timeFlag reads an RFC 3339 time or a duration before now.
func timeFlag(name, v string, now time.Time) (*timestamppb.Timestamp, error) {
	if v == "" {
		return nil, nil
	}
	if d, err := time.ParseDuration(v); err == nil {
		return timestamppb.New(now.Add(-d)), nil
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02 15:04:05", "2006-01-02"} {
		if t, err := time.ParseInLocation(layout, v, time.Local); err == nil {
			return timestamppb.New(t), nil
		}
	}
	return nil, fmt.Errorf("%s: invalid value %q: want a duration (5m) or a time (2006-01-02T15:04:05Z)", name, v)
}

// identities parses security identities: numbers that fit Hubble's (and
// Lumen's) 32-bit identity; a bigger one used to wrap around silently.
func identities(flag string, vals []string) ([]uint32, error) {
	var out []uint32
	for _, v := range vals {
		n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 32)
		if err != nil {
			return nil, fmt.Errorf("%s: invalid value %q: want a security identity, 0 to %d", flag, v, uint32(math.MaxUint32))
		}
		out = append(out, uint32(n))
	}
	return out, nil
}
