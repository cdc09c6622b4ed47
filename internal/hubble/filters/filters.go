// Package filters compiles Hubble FlowFilters (GetFlowsRequest allow and deny
// lists) into predicates over flows, with Cilium's semantics: within one
// FlowFilter every set field must match, within a field any value may match;
// a flow passes when it matches any allow filter (or there is none) and no
// deny filter. Fields about data Lumen never records (L7, FQDNs, workloads,
// trace ids, CEL) are rejected with an error naming the field, rather than
// silently matching nothing.
package filters

import (
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"

	flowpb "github.com/cilium/cilium/api/v1/flow"

	"github.com/lumen-net/lumen/internal/fielderr"
)

// Func is a compiled filter.
type Func func(*flowpb.Flow) bool

// Invalid is the error for a filter field that cannot be compiled; field
// is the protobuf path ("whitelist[0].source_ip"), value what was sent
// (empty: not shown), quoted and cut short when long, as a client may
// send anything.
func Invalid(field, value, reason string) *fielderr.Error {
	switch {
	case value == "":
		return &fielderr.Error{Path: field, Msg: reason}
	case len(value) > 100:
		return fielderr.New(field, "invalid value %q... (%d characters): %s", value[:100], len(value), reason)
	}
	return fielderr.New(field, "invalid value %q: %s", value, reason)
}

// Filters is a compiled pair of allow (whitelist) and deny (blacklist) lists.
type Filters struct {
	allow, deny []Func
}

// New compiles the lists of a GetFlowsRequest.
func New(allow, deny []*flowpb.FlowFilter) (*Filters, error) {
	f := &Filters{}
	for i, ff := range allow {
		fn, err := Compile(ff, fmt.Sprintf("whitelist[%d]", i))
		if err != nil {
			return nil, err
		}
		f.allow = append(f.allow, fn)
	}
	for i, ff := range deny {
		fn, err := Compile(ff, fmt.Sprintf("blacklist[%d]", i))
		if err != nil {
			return nil, err
		}
		f.deny = append(f.deny, fn)
	}
	return f, nil
}

// Match reports whether the flow passes the lists.
func (f *Filters) Match(fl *flowpb.Flow) bool {
	if f == nil {
		return true
	}
	if len(f.allow) > 0 && !anyMatch(f.allow, fl) {
		return false
	}
	return !anyMatch(f.deny, fl)
}

// Empty reports whether nothing is filtered.
func (f *Filters) Empty() bool { return f == nil || len(f.allow)+len(f.deny) == 0 }

func anyMatch(fs []Func, fl *flowpb.Flow) bool {
	for _, fn := range fs {
		if fn(fl) {
			return true
		}
	}
	return false
}

// Compile builds the predicate of one FlowFilter; path prefixes field names
// in errors.
func Compile(ff *flowpb.FlowFilter, path string) (Func, error) {
	b := &builder{path: path}
	if ff == nil {
		return func(*flowpb.Flow) bool { return true }, nil
	}
	b.unsupported("source_fqdn", len(ff.SourceFqdn) > 0, "Lumen records no DNS names")
	b.unsupported("destination_fqdn", len(ff.DestinationFqdn) > 0, "Lumen records no DNS names")
	b.unsupported("source_workload", len(ff.SourceWorkload) > 0, "Lumen records no workloads")
	b.unsupported("destination_workload", len(ff.DestinationWorkload) > 0, "Lumen records no workloads")
	b.unsupported("http_status_code", len(ff.HttpStatusCode) > 0, "Lumen records no L7 data")
	b.unsupported("http_method", len(ff.HttpMethod) > 0, "Lumen records no L7 data")
	b.unsupported("http_path", len(ff.HttpPath) > 0, "Lumen records no L7 data")
	b.unsupported("http_url", len(ff.HttpUrl) > 0, "Lumen records no L7 data")
	b.unsupported("http_header", len(ff.HttpHeader) > 0, "Lumen records no L7 data")
	b.unsupported("dns_query", len(ff.DnsQuery) > 0, "Lumen records no L7 data")
	b.unsupported("trace_id", len(ff.TraceId) > 0, "Lumen records no trace context")
	b.unsupported("ip_trace_id", len(ff.IpTraceId) > 0, "Lumen records no IP trace ids")
	b.unsupported("experimental.cel_expression", len(ff.GetExperimental().GetCelExpression()) > 0, "CEL expressions are not supported")

	if len(ff.Uuid) > 0 {
		ids := ff.Uuid
		b.add(func(f *flowpb.Flow) bool { return slices.Contains(ids, f.GetUuid()) })
	}
	b.ips("source_ip", ff.SourceIp, func(f *flowpb.Flow) string { return f.GetIP().GetSource() })
	b.ips("source_ip_xlated", ff.SourceIpXlated, func(f *flowpb.Flow) string { return f.GetIP().GetSourceXlated() })
	b.ips("destination_ip", ff.DestinationIp, func(f *flowpb.Flow) string { return f.GetIP().GetDestination() })
	b.names("source_pod", ff.SourcePod, func(f *flowpb.Flow) (string, string) {
		return f.GetSource().GetNamespace(), f.GetSource().GetPodName()
	})
	b.names("destination_pod", ff.DestinationPod, func(f *flowpb.Flow) (string, string) {
		return f.GetDestination().GetNamespace(), f.GetDestination().GetPodName()
	})
	b.names("source_service", ff.SourceService, func(f *flowpb.Flow) (string, string) {
		return f.GetSourceService().GetNamespace(), f.GetSourceService().GetName()
	})
	b.names("destination_service", ff.DestinationService, func(f *flowpb.Flow) (string, string) {
		return f.GetDestinationService().GetNamespace(), f.GetDestinationService().GetName()
	})
	b.labels("source_label", ff.SourceLabel, func(f *flowpb.Flow) []string { return f.GetSource().GetLabels() })
	b.labels("destination_label", ff.DestinationLabel, func(f *flowpb.Flow) []string { return f.GetDestination().GetLabels() })
	b.labels("node_labels", ff.NodeLabels, func(f *flowpb.Flow) []string { return f.GetNodeLabels() })
	if len(ff.SourceClusterName) > 0 {
		names := ff.SourceClusterName
		b.add(func(f *flowpb.Flow) bool { return slices.Contains(names, f.GetSource().GetClusterName()) })
	}
	if len(ff.DestinationClusterName) > 0 {
		names := ff.DestinationClusterName
		b.add(func(f *flowpb.Flow) bool { return slices.Contains(names, f.GetDestination().GetClusterName()) })
	}
	if len(ff.TrafficDirection) > 0 {
		ds := ff.TrafficDirection
		b.add(func(f *flowpb.Flow) bool { return slices.Contains(ds, f.GetTrafficDirection()) })
	}
	if len(ff.Verdict) > 0 {
		vs := ff.Verdict
		b.add(func(f *flowpb.Flow) bool { return slices.Contains(vs, f.GetVerdict()) })
	}
	if len(ff.DropReasonDesc) > 0 {
		rs := ff.DropReasonDesc
		b.add(func(f *flowpb.Flow) bool { return slices.Contains(rs, f.GetDropReasonDesc()) })
	}
	if len(ff.Interface) > 0 {
		ifs := ff.Interface
		b.add(func(f *flowpb.Flow) bool {
			i := f.GetInterface()
			if i == nil {
				return false
			}
			for _, w := range ifs {
				if (w.GetIndex() == 0 || w.GetIndex() == i.GetIndex()) && (w.GetName() == "" || w.GetName() == i.GetName()) {
					return true
				}
			}
			return false
		})
	}
	if len(ff.EventType) > 0 {
		ts := ff.EventType
		b.add(func(f *flowpb.Flow) bool {
			et := f.GetEventType()
			if et == nil {
				return false
			}
			for _, w := range ts {
				if (w.GetType() == 0 || w.GetType() == et.GetType()) && (!w.GetMatchSubType() || w.GetSubType() == et.GetSubType()) {
					return true
				}
			}
			return false
		})
	}
	b.protocols(ff.Protocol)
	b.ports("source_port", ff.SourcePort, func(l *flowpb.Layer4) (uint32, bool) {
		switch {
		case l.GetTCP() != nil:
			return l.GetTCP().GetSourcePort(), true
		case l.GetUDP() != nil:
			return l.GetUDP().GetSourcePort(), true
		case l.GetSCTP() != nil:
			return l.GetSCTP().GetSourcePort(), true
		}
		return 0, false
	})
	b.ports("destination_port", ff.DestinationPort, func(l *flowpb.Layer4) (uint32, bool) {
		switch {
		case l.GetTCP() != nil:
			return l.GetTCP().GetDestinationPort(), true
		case l.GetUDP() != nil:
			return l.GetUDP().GetDestinationPort(), true
		case l.GetSCTP() != nil:
			return l.GetSCTP().GetDestinationPort(), true
		}
		return 0, false
	})
	if len(ff.Reply) > 0 {
		rs := ff.Reply
		// Unknown (is_reply absent) matches neither true nor false.
		b.add(func(f *flowpb.Flow) bool {
			r := f.GetIsReply()
			return r != nil && slices.Contains(rs, r.GetValue())
		})
	}
	if len(ff.SourceIdentity) > 0 {
		ids := ff.SourceIdentity
		b.add(func(f *flowpb.Flow) bool { return slices.Contains(ids, f.GetSource().GetIdentity()) })
	}
	if len(ff.DestinationIdentity) > 0 {
		ids := ff.DestinationIdentity
		b.add(func(f *flowpb.Flow) bool { return slices.Contains(ids, f.GetDestination().GetIdentity()) })
	}
	if len(ff.TcpFlags) > 0 {
		ws := ff.TcpFlags
		for i, w := range ws {
			if w == nil || !(w.FIN || w.SYN || w.RST || w.PSH || w.ACK || w.URG || w.ECE || w.CWR || w.NS) {
				b.fail(Invalid(fmt.Sprintf("%s.tcp_flags[%d]", path, i), "", "no flag set"))
			}
		}
		b.add(func(f *flowpb.Flow) bool {
			have := f.GetL4().GetTCP().GetFlags()
			if have == nil {
				return false
			}
			for _, w := range ws {
				if flagsSubset(w, have) {
					return true
				}
			}
			return false
		})
	}
	b.nodeNames(ff.NodeName)
	if len(ff.IpVersion) > 0 {
		vs := ff.IpVersion
		b.add(func(f *flowpb.Flow) bool {
			return f.GetIP() != nil && slices.Contains(vs, f.GetIP().GetIpVersion())
		})
	}
	if len(ff.Encrypted) > 0 {
		es := ff.Encrypted
		b.add(func(f *flowpb.Flow) bool { return f.GetIP() != nil && slices.Contains(es, f.GetIP().GetEncrypted()) })
	}
	if b.err != nil {
		return nil, b.err
	}
	fs := b.fs
	return func(f *flowpb.Flow) bool {
		for _, fn := range fs {
			if !fn(f) {
				return false
			}
		}
		return true
	}, nil
}

func flagsSubset(w, have *flowpb.TCPFlags) bool {
	return !(w.FIN && !have.FIN || w.SYN && !have.SYN || w.RST && !have.RST || w.PSH && !have.PSH ||
		w.ACK && !have.ACK || w.URG && !have.URG || w.ECE && !have.ECE || w.CWR && !have.CWR || w.NS && !have.NS)
}

// builder collects the predicates of one FlowFilter and its first error.
type builder struct {
	path string
	fs   []Func
	err  error
}

func (b *builder) add(f Func) { b.fs = append(b.fs, f) }

func (b *builder) fail(err *fielderr.Error) {
	if b.err == nil {
		b.err = err
	}
}

func (b *builder) field(name string, i int) string { return fmt.Sprintf("%s.%s[%d]", b.path, name, i) }

func (b *builder) unsupported(name string, set bool, why string) {
	if set {
		b.fail(Invalid(b.path+"."+name, "", "not supported: "+why))
	}
}

// ips matches exact addresses or CIDRs.
func (b *builder) ips(name string, vals []string, get func(*flowpb.Flow) string) {
	if len(vals) == 0 {
		return
	}
	var exact []string
	var prefixes []netip.Prefix
	for i, v := range vals {
		if strings.Contains(v, "/") {
			p, err := netip.ParsePrefix(v)
			if err != nil {
				b.fail(Invalid(b.field(name, i), v, "want an IP address or CIDR"))
				continue
			}
			prefixes = append(prefixes, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(v)
		if err != nil {
			b.fail(Invalid(b.field(name, i), v, "want an IP address or CIDR"))
			continue
		}
		exact = append(exact, a.Unmap().String())
	}
	b.add(func(f *flowpb.Flow) bool {
		s := get(f)
		if s == "" {
			return false
		}
		if slices.Contains(exact, s) {
			return true
		}
		if len(prefixes) == 0 {
			return false
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return false
		}
		for _, p := range prefixes {
			if p.Contains(a) {
				return true
			}
		}
		return false
	})
}

// names matches "namespace/prefix" (as Kubernetes: no slash means the
// "default" namespace), "namespace/" and "/prefix" (any namespace).
func (b *builder) names(name string, vals []string, get func(*flowpb.Flow) (ns, name string)) {
	if len(vals) == 0 {
		return
	}
	type nf struct{ ns, prefix string }
	var nfs []nf
	for i, v := range vals {
		if v == "" || v == "/" {
			b.fail(Invalid(b.field(name, i), v, "want [namespace/][name-prefix]"))
			continue
		}
		parts := strings.Split(v, "/")
		switch len(parts) {
		case 1:
			nfs = append(nfs, nf{"default", parts[0]})
		case 2:
			nfs = append(nfs, nf{parts[0], parts[1]})
		default:
			b.fail(Invalid(b.field(name, i), v, "want [namespace/][name-prefix]"))
		}
	}
	b.add(func(f *flowpb.Flow) bool {
		ns, n := get(f)
		if ns == "" && n == "" {
			return false
		}
		for _, x := range nfs {
			if (x.prefix == "" || strings.HasPrefix(n, x.prefix)) && (x.ns == "" || x.ns == ns) {
				return true
			}
		}
		return false
	})
}

func (b *builder) labels(name string, vals []string, get func(*flowpb.Flow) []string) {
	if len(vals) == 0 {
		return
	}
	var sels []Selector
	for i, v := range vals {
		s, err := ParseSelector(v)
		if err != nil {
			b.fail(Invalid(b.field(name, i), v, err.Error()))
			continue
		}
		sels = append(sels, s)
	}
	b.add(func(f *flowpb.Flow) bool {
		ls := get(f)
		for _, s := range sels {
			if s.Matches(ls) {
				return true
			}
		}
		return false
	})
}

func (b *builder) protocols(vals []string) {
	if len(vals) == 0 {
		return
	}
	var ps []string
	for i, v := range vals {
		p := strings.ToLower(v)
		switch p {
		case "tcp", "udp", "sctp", "icmp", "icmpv4", "icmpv6":
			ps = append(ps, p)
		case "http", "dns", "kafka":
			b.fail(Invalid(b.field("protocol", i), v, "not supported: Lumen records no L7 data"))
		default:
			b.fail(Invalid(b.field("protocol", i), v, "want tcp, udp, sctp, icmp, icmpv4 or icmpv6"))
		}
	}
	b.add(func(f *flowpb.Flow) bool {
		l := f.GetL4()
		for _, p := range ps {
			switch {
			case p == "tcp" && l.GetTCP() != nil, p == "udp" && l.GetUDP() != nil, p == "sctp" && l.GetSCTP() != nil,
				p == "icmp" && (l.GetICMPv4() != nil || l.GetICMPv6() != nil),
				p == "icmpv4" && l.GetICMPv4() != nil, p == "icmpv6" && l.GetICMPv6() != nil:
				return true
			}
		}
		return false
	})
}

func (b *builder) ports(name string, vals []string, get func(*flowpb.Layer4) (uint32, bool)) {
	if len(vals) == 0 {
		return
	}
	var ps []uint32
	for i, v := range vals {
		n, err := strconv.ParseUint(v, 10, 16)
		if err != nil {
			b.fail(Invalid(b.field(name, i), v, "want a port number 0-65535"))
			continue
		}
		ps = append(ps, uint32(n))
	}
	b.add(func(f *flowpb.Flow) bool {
		p, ok := get(f.GetL4())
		return ok && slices.Contains(ps, p)
	})
}

// nodeNames matches node name patterns as Cilium does: "[cluster/]node",
// where '*' matches any run of [-.0-9a-z] and a node name without a
// cluster belongs to "default".
func (b *builder) nodeNames(vals []string) {
	if len(vals) == 0 {
		return
	}
	var alts []string
	for i, v := range vals {
		re, err := nodePattern(v)
		if err != nil {
			b.fail(Invalid(b.field("node_name", i), v, err.Error()))
			continue
		}
		alts = append(alts, re)
	}
	if b.err != nil {
		return
	}
	re := regexp.MustCompile(`\A(?:` + strings.Join(alts, "|") + `)\z`)
	b.add(func(f *flowpb.Flow) bool {
		n := f.GetNodeName()
		if n == "" {
			return false
		}
		if !strings.Contains(n, "/") {
			n = "default/" + n
		}
		return re.MatchString(n)
	})
}

const anyName = `(?:[-0-9_a-z]+(?:\.[-0-9_a-z]+)*)`

func nodePattern(p string) (string, error) {
	if p == "" {
		return "", fmt.Errorf("empty pattern")
	}
	cluster, node := "", p
	if parts := strings.Split(p, "/"); len(parts) == 2 {
		cluster, node = parts[0], parts[1]
	} else if len(parts) > 2 {
		return "", fmt.Errorf("too many slashes: want [cluster/]node")
	}
	var sb strings.Builder
	if cluster == "" {
		sb.WriteString(anyName)
	} else if err := globRegexp(&sb, cluster); err != nil {
		return "", err
	}
	sb.WriteByte('/')
	if node == "" {
		sb.WriteString(anyName)
	} else if err := globRegexp(&sb, node); err != nil {
		return "", err
	}
	return sb.String(), nil
}

func globRegexp(sb *strings.Builder, p string) error {
	p = strings.ToLower(strings.TrimSuffix(strings.TrimSpace(p), "."))
	if p == "" {
		return fmt.Errorf("empty pattern")
	}
	for _, r := range p {
		switch {
		case r == '.':
			sb.WriteString(`\.`)
		case r == '*':
			sb.WriteString(`[-.0-9a-z]*`)
		case r == '-', r == '_', '0' <= r && r <= '9', 'a' <= r && r <= 'z':
			sb.WriteRune(r)
		default:
			return fmt.Errorf("invalid character %q in pattern", r)
		}
	}
	return nil
}
