package policy

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// Entities of the Cilium policy language.
var entities = []string{"all", "world", "cluster", "host", "remote-node", "kube-apiserver", "health", "init", "unmanaged"}

// ciliumPolicy decodes the spec and/or specs of a CiliumNetworkPolicy or
// CiliumClusterwideNetworkPolicy, following the Cilium policy language:
//   - a CiliumNetworkPolicy's endpointSelector applies in its namespace only;
//     its peer selectors too, unless they name the namespace
//     (k8s:io.kubernetes.pod.namespace), namespace labels
//     (io.cilium.k8s.namespace.labels.*) or a reserved label;
//   - a clusterwide policy's peer selectors without a namespace match pods
//     only (identities carrying a namespace), so `toEndpoints: [{}]` never
//     means world; entity `all` (and L4-only rules) is the wildcard;
//   - nodeSelector (clusterwide only) selects the host endpoint, and an
//     endpointSelector never does;
//   - an endpoint selected by a rule that has ingress or ingressDeny
//     elements is enforced at ingress (same for egress), unless the rule
//     sets enableDefaultDeny.ingress: false; `ingress: [{}]` enforces and
//     allows nothing; a rule with only toPorts allows those ports from
//     every peer;
//   - protocol ANY with a port means TCP, UDP and SCTP; port 0 or none
//     means every port.
func (w *walker) ciliumPolicy(p *Policy, spec, specs any) {
	if spec == nil && specs == nil {
		w.required("spec")
		return
	}
	if spec != nil {
		w.ciliumRule(p, "spec", spec)
	}
	for i, x := range w.list("specs", specs) {
		w.ciliumRule(p, index("specs", i), x)
	}
	if len(p.rules) == 0 && len(w.errs) == 0 {
		w.errf("specs", "must contain at least one rule")
	}
}

func (w *walker) ciliumRule(p *Policy, path string, v any) {
	start, scoped := w.n, 0 // errors of the rule itself: w.n - start - scoped
	m := w.object(path, v, "endpointSelector", "nodeSelector", "ingress", "ingressDeny", "egress", "egressDeny",
		"description", "labels", "enableDefaultDeny")
	if m == nil {
		if v == nil {
			w.required(path)
		}
		return
	}
	r := &rule{policy: p, index: len(p.rules), path: path}
	p.rules = append(p.rules, r)
	if d := m["description"]; d != nil {
		w.str(child(path, "description"), d)
	}
	if l := m["labels"]; l != nil {
		for i, x := range w.list(child(path, "labels"), l) {
			lm := w.object(index(child(path, "labels"), i), x, "key", "value", "source")
			for _, f := range []string{"key", "value", "source"} {
				if lm[f] != nil {
					w.str(child(index(child(path, "labels"), i), f), lm[f])
				}
			}
		}
	}

	es, ns := m["endpointSelector"], m["nodeSelector"]
	subjectStart := w.n
	switch {
	case es != nil && ns != nil:
		w.errf(path, "endpointSelector and nodeSelector are mutually exclusive")
	case ns != nil && p.Kind != KindCiliumClusterwideNetworkPolicy:
		w.errf(child(path, "nodeSelector"), "only allowed in a %s", KindCiliumClusterwideNetworkPolicy)
	case es == nil && ns == nil:
		w.errf(path, "required value: one of endpointSelector or nodeSelector")
	}
	if ns != nil {
		r.subjectKind = subjectNode
		r.subject = w.labelSelector(child(path, "nodeSelector"), ns, keysCilium)
	} else {
		r.subjectKind = subjectEndpoints
		r.subject = w.labelSelector(child(path, "endpointSelector"), es, keysCilium)
		if p.Namespace != "" {
			// The endpointSelector of a namespaced policy always applies in the
			// policy's namespace (Cilium replaces any namespace match).
			r.namespace = p.Namespace
			kept := r.subject.reqs[:0]
			for _, q := range r.subject.reqs {
				if !(q.key == PodNamespaceLabel && (q.source == SourceK8s || q.source == SourceAny)) {
					kept = append(kept, q)
				}
			}
			r.subject.reqs = kept
		}
	}
	if w.n > subjectStart {
		r.noSubject = true
		scoped += w.n - subjectStart
	}

	type sectionKind struct {
		field        string
		egress, deny bool
	}
	for _, k := range []sectionKind{{"ingress", false, false}, {"ingressDeny", false, true}, {"egress", true, false}, {"egressDeny", true, true}} {
		list := w.list(child(path, k.field), m[k.field])
		if len(list) > 0 {
			if k.egress {
				r.egress = true
			} else {
				r.ingress = true
			}
		}
		for i, x := range list {
			before := w.n
			s := w.ciliumSection(p, index(child(path, k.field), i), x, k.egress, k.deny)
			if w.n > before {
				scoped += w.n - before
				if !s.selfContained {
					s.failClosed()
				}
			}
			r.sections = append(r.sections, s)
		}
	}
	r.ingressDefaultDeny, r.egressDefaultDeny = r.ingress, r.egress
	if dd := w.object(child(path, "enableDefaultDeny"), m["enableDefaultDeny"], "ingress", "egress"); dd != nil {
		if x := dd["ingress"]; x != nil {
			if b, ok := w.boolean(child(path, "enableDefaultDeny.ingress"), x); ok && !b {
				r.ingressDefaultDeny = false
			}
		}
		if x := dd["egress"]; x != nil {
			if b, ok := w.boolean(child(path, "enableDefaultDeny.egress"), x); ok && !b {
				r.egressDefaultDeny = false
			}
		}
	}
	if w.n > start+scoped {
		r.failClosed()
	}
}

// failClosed makes a rule Lumen cannot read entirely (lenient decoding)
// enforce both directions with default deny and allow nothing; its deny
// sections still deny.
func (r *rule) failClosed() {
	r.ingress, r.egress, r.ingressDefaultDeny, r.egressDefaultDeny = true, true, true, true
	kept := r.sections[:0]
	for _, s := range r.sections {
		if s.deny {
			kept = append(kept, s)
		}
	}
	r.sections = kept
}

// failClosed makes a section Lumen cannot enforce as written (lenient
// decoding) allow nothing, or, for a deny section, deny every peer on every
// port. An unreadable requirement requires what no identity has.
func (s *section) failClosed() {
	if s.brokenRequires {
		s.requires = []*selector{newSelector(requirement{source: SourceAny, key: "unreadable-requirement", op: opIn})}
	}
	if s.deny {
		s.peers = []*peer{{desc: "any peer (unenforceable deny section: fail closed)", kind: peerAll}}
		s.allPorts, s.ports = true, nil
		return
	}
	s.peers, s.ports, s.allPorts = nil, nil, false
}

func (w *walker) ciliumSection(p *Policy, path string, v any, egress, deny bool) *section {
	dir := "from"
	if egress {
		dir = "to"
	}
	fEndpoints, fEntities, fCIDR, fCIDRSet := dir+"Endpoints", dir+"Entities", dir+"CIDR", dir+"CIDRSet"
	fRequires := dir + "Requires"
	known := []string{fEndpoints, fEntities, fCIDR, fCIDRSet, "toPorts", fRequires, dir + "Groups", dir + "Nodes", "icmps"}
	unsupported := []string{dir + "Groups", dir + "Nodes"}
	if egress {
		known = append(known, "toServices", "toFQDNs")
		unsupported = append(unsupported, "toServices", "toFQDNs")
	}
	if !deny {
		known = append(known, "authentication")
		unsupported = append(unsupported, "authentication")
	}
	sectionStart := w.n
	m := w.object(path, v, known...)
	w.notSupported(path, m, unsupported...)
	s := &section{name: path[strings.LastIndexByte(path, '.')+1:], egress: egress, deny: deny}

	for i, x := range w.list(child(path, fEndpoints), m[fEndpoints]) {
		ep := index(child(path, fEndpoints), i)
		sel := w.labelSelector(ep, x, keysCilium)
		w.scopePeerSelector(p, sel)
		s.peers = append(s.peers, &peer{desc: fmt.Sprintf("%s[%d] %s", fEndpoints, i, sel), kind: peerSelector, sel: sel, endpoints: true})
	}
	// Requirements are not namespace-scoped (Cilium adds no namespace to
	// them): they restrict, never grant.
	reqStart := w.n
	for i, x := range w.list(child(path, fRequires), m[fRequires]) {
		s.requires = append(s.requires, w.labelSelector(index(child(path, fRequires), i), x, keysCilium))
	}
	s.brokenRequires = w.n > reqStart
	for i, x := range w.list(child(path, fEntities), m[fEntities]) {
		ep := index(child(path, fEntities), i)
		name, ok := w.str(ep, x)
		if !ok {
			continue
		}
		pe := entityPeer(name)
		if pe == nil {
			w.unsupported(ep, name, entities...)
			continue
		}
		pe.desc = fmt.Sprintf("%s[%d] %s", fEntities, i, name)
		s.peers = append(s.peers, pe)
	}
	for i, x := range w.list(child(path, fCIDR), m[fCIDR]) {
		ep := index(child(path, fCIDR), i)
		if pfx, ok := w.cidr(ep, x, true); ok {
			s.peers = append(s.peers, &peer{desc: fmt.Sprintf("%s[%d] %s", fCIDR, i, pfx), kind: peerCIDR, prefix: pfx})
		}
	}
	for i, x := range w.list(child(path, fCIDRSet), m[fCIDRSet]) {
		ep := index(child(path, fCIDRSet), i)
		cm := w.object(ep, x, "cidr", "except", "cidrGroupRef", "cidrGroupSelector")
		if cm == nil {
			continue
		}
		w.notSupported(ep, cm, "cidrGroupRef", "cidrGroupSelector")
		if cm["cidr"] == nil {
			if cm["cidrGroupRef"] == nil && cm["cidrGroupSelector"] == nil {
				w.required(child(ep, "cidr"))
			}
			continue
		}
		pfx, ok := w.cidr(child(ep, "cidr"), cm["cidr"], true)
		pe := &peer{kind: peerCIDR, prefix: pfx}
		for j, e := range w.list(child(ep, "except"), cm["except"]) {
			xp := index(child(ep, "except"), j)
			ex, eok := w.cidr(xp, e, true)
			if !eok || !ok {
				continue
			}
			if !within(ex, pfx) {
				w.invalid(xp, e, "must be inside cidr "+pfx.String())
				continue
			}
			pe.except = append(pe.except, ex)
		}
		if ok {
			pe.desc = fmt.Sprintf("%s[%d] %s", fCIDRSet, i, describeCIDR(pfx, pe.except))
			s.peers = append(s.peers, pe)
		}
	}

	toPorts := w.list(child(path, "toPorts"), m["toPorts"])
	icmps := w.list(child(path, "icmps"), m["icmps"])
	if len(toPorts) > 0 && len(icmps) > 0 {
		w.errf(path, "toPorts and icmps are mutually exclusive")
	}
	s.allPorts = len(toPorts) == 0 && len(icmps) == 0
	for i, x := range icmps {
		s.ports = append(s.ports, w.icmpRule(index(child(path, "icmps"), i), x)...)
	}
	portErrs := 0
	for i, x := range toPorts {
		before := w.n
		pp := index(child(path, "toPorts"), i)
		known := []string{"ports"}
		if !deny {
			known = append(known, "rules", "terminatingTLS", "originatingTLS", "serverNames", "listener")
		}
		pm := w.object(pp, x, known...)
		if r, ok := pm["rules"]; ok && r != nil {
			w.errf(child(pp, "rules"), msgL7)
		}
		w.notSupported(pp, pm, "terminatingTLS", "originatingTLS", "serverNames", "listener")
		var ports []portSpec
		for j, y := range w.list(child(pp, "ports"), pm["ports"]) {
			ports = append(ports, w.ciliumPort(index(child(pp, "ports"), j), y)...)
		}
		if w.n > before {
			// A port rule Lumen cannot enforce (L7, SNI, bad port) allows
			// nothing (lenient decoding); the section's other port rules stay.
			portErrs += w.n - before
			continue
		}
		s.ports = append(s.ports, ports...)
	}
	// An allow section whose only problems are in whole port rules keeps
	// its other port rules; any other problem fails the section closed.
	s.selfContained = !deny && portErrs > 0 && w.n-sectionStart == portErrs
	// No L3 selector at all: the rule is L4-only and applies to every peer
	// when it has ports; without ports it allows (or denies) nothing.
	if len(s.peers) == 0 && !s.allPorts {
		s.peers = []*peer{{desc: "any peer (toPorts only)", kind: peerAll}}
	}
	return s
}

// scopePeerSelector applies the implicit namespace scoping of Cilium peer
// selectors.
func (w *walker) scopePeerSelector(p *Policy, sel *selector) {
	if sel.hasSource(SourceReserved) || sel.hasKey(PodNamespaceLabel) {
		return
	}
	if p.Namespace == "" {
		sel.add(requirement{source: SourceK8s, key: PodNamespaceLabel, op: opExists})
		return
	}
	if !sel.hasKeyPrefix(NamespaceLabelsPrefix) {
		sel.add(requirement{source: SourceK8s, key: PodNamespaceLabel, op: opIn, values: []string{p.Namespace}})
	}
}

func entityPeer(name string) *peer {
	reserved := func(key string) *peer {
		return &peer{kind: peerSelector, sel: newSelector(requirement{source: SourceReserved, key: key, op: opExists})}
	}
	switch name {
	case "all":
		return &peer{kind: peerAll}
	case "cluster":
		return &peer{kind: peerSelector, sel: newSelector(requirement{source: SourceReserved, key: "world", op: opDoesNotExist})}
	case "world", "host", "remote-node", "kube-apiserver", "health", "init", "unmanaged":
		return reserved(name)
	}
	return nil
}

// ciliumPort decodes one PortProtocol into port specs (ANY with a port
// becomes TCP, UDP and SCTP).
func (w *walker) ciliumPort(path string, v any) []portSpec {
	m := w.object(path, v, "port", "endPort", "protocol")
	if m == nil {
		return nil
	}
	ok := true
	protoName := "ANY"
	var proto uint8
	if x := m["protocol"]; x != nil {
		s, sok := w.str(child(path, "protocol"), x)
		switch {
		case !sok:
			ok = false
		case s == "TCP":
			proto, protoName = ProtoTCP, s
		case s == "UDP":
			proto, protoName = ProtoUDP, s
		case s == "SCTP":
			proto, protoName = ProtoSCTP, s
		case s == "ANY" || s == "":
		default:
			w.unsupported(child(path, "protocol"), s, "TCP", "UDP", "SCTP", "ANY")
			ok = false
		}
	}
	var port uint16
	name, portStr := "", ""
	switch x := m["port"].(type) {
	case nil:
	case json.Number, string:
		s := fmt.Sprint(x)
		portStr = s
		if n, err := strconv.ParseInt(s, 10, 64); err == nil {
			if n < 0 || n > 65535 {
				w.invalid(child(path, "port"), x, "must be between 0 and 65535, inclusive (0: every port)")
				ok = false
			}
			port = uint16(n)
		} else if _, isNum := x.(json.Number); isNum {
			w.invalid(child(path, "port"), x, "must be an integer")
			ok = false
		} else if msg := portName(s); msg != "" {
			w.invalid(child(path, "port"), s, "must be a port number or a port name: "+msg)
			ok = false
		} else {
			name = s
		}
	default:
		w.errf(child(path, "port"), "must be a port number or a port name, not %s", typeName(x))
		ok = false
	}
	hi := port
	var end int64
	if x := m["endPort"]; x != nil {
		n, iok := w.integer(child(path, "endPort"), x)
		switch {
		case !iok:
			ok = false
		case name != "":
			w.invalid(child(path, "port"), name, "a named port cannot have an endPort")
			ok = false
		case n == 0:
		case port == 0:
			w.errf(child(path, "endPort"), "may not be specified without a port")
			ok = false
		case n < 0 || n > 65535:
			w.invalid(child(path, "endPort"), x, "must be between 0 and 65535, inclusive")
			ok = false
		case n < int64(port):
			w.invalid(child(path, "endPort"), x, fmt.Sprintf("must be greater than or equal to port %d", port))
			ok = false
		default:
			hi, end = uint16(n), n
		}
	}
	if !ok {
		return nil
	}
	desc := describePorts(protoName, portStr, end)
	switch {
	case name != "":
		return []portSpec{{desc: desc, proto: proto, name: name}}
	case port == 0:
		return []portSpec{{desc: desc, proto: proto, lo: 0, hi: 65535}}
	case proto != ProtoAny:
		return []portSpec{{desc: desc, proto: proto, lo: port, hi: hi}}
	}
	out := make([]portSpec, 0, len(portProtos))
	for _, pr := range portProtos {
		out = append(out, portSpec{desc: desc, proto: pr, lo: port, hi: hi})
	}
	return out
}

// ICMP type names Cilium accepts besides numbers (CamelCase, per family).
var (
	icmpv4Types = map[string]uint8{
		"EchoReply": 0, "DestinationUnreachable": 3, "Redirect": 5, "EchoRequest": 8,
		"RouterAdvertisement": 9, "RouterSelection": 10, "TimeExceeded": 11, "ParameterProblem": 12,
		"Timestamp": 13, "TimestampReply": 14, "Photuris": 40, "ExtendedEchoRequest": 42, "ExtendedEchoReply": 43,
	}
	icmpv6Types = map[string]uint8{
		"DestinationUnreachable": 1, "PacketTooBig": 2, "TimeExceeded": 3, "ParameterProblem": 4,
		"EchoRequest": 128, "EchoReply": 129, "MulticastListenerQuery": 130, "MulticastListenerReport": 131,
		"MulticastListenerDone": 132, "RouterSolicitation": 133, "RouterAdvertisement": 134,
		"NeighborSolicitation": 135, "NeighborAdvertisement": 136, "RedirectMessage": 137,
		"RouterRenumbering": 138, "ICMPNodeInformationQuery": 139, "ICMPNodeInformationResponse": 140,
		"InverseNeighborDiscoverySolicitation": 141, "InverseNeighborDiscoveryAdvertisement": 142,
		"HomeAgentAddressDiscoveryRequest": 144, "HomeAgentAddressDiscoveryReply": 145,
		"MobilePrefixSolicitation": 146, "MobilePrefixAdvertisement": 147,
		"DuplicateAddressRequestCodeSuffix": 157, "DuplicateAddressConfirmationCodeSuffix": 158,
		"ExtendedEchoRequest": 160, "ExtendedEchoReply": 161,
	}
)

// icmpRule decodes one ICMPRule ({fields: [{family, type}]}) into port
// specs of protocol ICMP/ICMPv6 whose "port" is the ICMP type, as the
// datapath keys them.
func (w *walker) icmpRule(path string, v any) []portSpec {
	m := w.object(path, v, "fields")
	if m == nil {
		if v == nil {
			w.required(path)
		}
		return nil
	}
	var out []portSpec
	for i, x := range w.list(child(path, "fields"), m["fields"]) {
		fp := index(child(path, "fields"), i)
		fm := w.object(fp, x, "family", "type")
		if fm == nil {
			if x == nil {
				w.required(fp)
			}
			continue
		}
		proto, fam, names := ProtoICMP, "IPv4", icmpv4Types
		if f := fm["family"]; f != nil {
			s, ok := w.str(child(fp, "family"), f)
			switch {
			case !ok:
				continue
			case s == "IPv4" || s == "":
			case s == "IPv6":
				proto, fam, names = ProtoICMPv6, s, icmpv6Types
			default:
				w.unsupported(child(fp, "family"), s, "IPv4", "IPv6")
				continue
			}
		}
		tp := child(fp, "type")
		var typ uint8
		switch t := fm["type"].(type) {
		case nil:
			w.required(tp)
			continue
		case json.Number:
			n, ok := w.integer(tp, t)
			if !ok {
				continue
			}
			if n < 0 || n > 255 {
				w.invalid(tp, t, "must be between 0 and 255, inclusive")
				continue
			}
			typ = uint8(n)
		case string:
			if n, err := strconv.ParseUint(t, 10, 8); err == nil {
				typ = uint8(n)
			} else if n, ok := names[t]; ok {
				typ = n
			} else {
				w.invalid(tp, t, "must be an ICMP type number (0-255) or an "+fam+" type name such as EchoRequest")
				continue
			}
		default:
			w.errf(tp, "must be an ICMP type number or name, not %s", typeName(t))
			continue
		}
		out = append(out, portSpec{desc: fmt.Sprintf("%s/%d", ProtoName(proto), typ), proto: proto, lo: uint16(typ), hi: uint16(typ)})
	}
	return out
}
