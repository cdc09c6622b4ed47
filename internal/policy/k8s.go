package policy

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// networkPolicy decodes a networking.k8s.io/v1 NetworkPolicy spec into one
// rule, with the API's semantics:
//   - the policy selects pods of its own namespace (podSelector, empty: all);
//   - policyTypes defaults to Ingress, plus Egress when egress rules exist;
//     a selected pod is isolated (enforced) for each listed type, and rules
//     of an unlisted type are ignored;
//   - a rule without from/to allows every peer, one without ports every
//     port; `ingress: [{}]` allows everything, no rules allow nothing;
//   - a podSelector peer selects pods of the policy's namespace, a
//     namespaceSelector peer all pods of matching namespaces, both in one
//     peer the matching pods of the matching namespaces; ipBlock selects
//     CIDR identities (like Cilium: never pods or nodes).
func (w *walker) networkPolicy(p *Policy, v any) {
	const path = "spec"
	r := &rule{policy: p, index: 0, path: "spec", subjectKind: subjectPods, namespace: p.Namespace}
	p.rules = []*rule{r}
	start, scoped := w.n, 0
	m := w.object(path, v, "podSelector", "policyTypes", "ingress", "egress")
	if v == nil {
		w.required(path)
	}
	subjectStart := w.n
	r.subject = w.labelSelector(child(path, "podSelector"), m["podSelector"], keysPod)
	if w.n > subjectStart {
		r.noSubject = true
		scoped += w.n - subjectStart
	}

	ingress := w.list(child(path, "ingress"), m["ingress"])
	egress := w.list(child(path, "egress"), m["egress"])
	hasIngress, hasEgress := true, len(egress) > 0
	// An empty policyTypes is defaulted like an absent one.
	if types := w.list(child(path, "policyTypes"), m["policyTypes"]); len(types) > 0 {
		hasIngress, hasEgress = false, false
		for i, t := range types {
			tp := index(child(path, "policyTypes"), i)
			s, ok := w.str(tp, t)
			if !ok {
				continue
			}
			switch {
			case s == "Ingress" && !hasIngress:
				hasIngress = true
			case s == "Egress" && !hasEgress:
				hasEgress = true
			case s == "Ingress" || s == "Egress":
				w.errf(tp, "duplicate value %q", s)
			default:
				w.unsupported(tp, s, "Ingress", "Egress")
			}
		}
	}
	r.ingress, r.ingressDefaultDeny = hasIngress, hasIngress
	r.egress, r.egressDefaultDeny = hasEgress, hasEgress

	for i, x := range ingress {
		before := w.n
		s := w.k8sSection(p, index(child(path, "ingress"), i), x, "from", false)
		if w.n > before {
			scoped += w.n - before
			s.failClosed()
		}
		if hasIngress {
			r.sections = append(r.sections, s)
		}
	}
	for i, x := range egress {
		before := w.n
		s := w.k8sSection(p, index(child(path, "egress"), i), x, "to", true)
		if w.n > before {
			scoped += w.n - before
			s.failClosed()
		}
		if hasEgress {
			r.sections = append(r.sections, s)
		}
	}
	if w.n > start+scoped {
		r.failClosed()
	}
}

func (w *walker) k8sSection(p *Policy, path string, v any, peersField string, egress bool) *section {
	name := path[strings.LastIndexByte(path, '.')+1:]
	s := &section{name: name, egress: egress}
	m := w.object(path, v, peersField, "ports")
	peers := w.list(child(path, peersField), m[peersField])
	if len(peers) == 0 {
		s.peers = []*peer{{desc: "any peer (no " + peersField + ")", kind: peerAll}}
	}
	for i, x := range peers {
		if pe := w.k8sPeer(p, index(child(path, peersField), i), x, peersField, i); pe != nil {
			s.peers = append(s.peers, pe)
		}
	}
	ports := w.list(child(path, "ports"), m["ports"])
	s.allPorts = len(ports) == 0
	for i, x := range ports {
		if ps, ok := w.k8sPort(index(child(path, "ports"), i), x); ok {
			s.ports = append(s.ports, ps)
		}
	}
	return s
}

func (w *walker) k8sPeer(p *Policy, path string, v any, field string, i int) *peer {
	m := w.object(path, v, "podSelector", "namespaceSelector", "ipBlock")
	pod, ns, block := m["podSelector"], m["namespaceSelector"], m["ipBlock"]
	desc := fmt.Sprintf("%s[%d]", field, i)
	switch {
	case block != nil && (pod != nil || ns != nil):
		w.errf(path, "may not specify ipBlock together with podSelector or namespaceSelector")
		return nil
	case block != nil:
		return w.ipBlock(child(path, "ipBlock"), block, desc)
	case pod == nil && ns == nil:
		if _, ok := v.(map[string]any); ok || v == nil {
			w.errf(path, "required value: must specify a peer (podSelector, namespaceSelector or ipBlock)")
		}
		return nil
	}
	sel := w.labelSelector(child(path, "podSelector"), pod, keysPod)
	if ns == nil {
		sel.add(requirement{source: SourceK8s, key: PodNamespaceLabel, op: opIn, values: []string{p.Namespace}})
	} else {
		for _, r := range w.labelSelector(child(path, "namespaceSelector"), ns, keysNamespace).reqs {
			sel.add(r)
		}
		// Only pods: every pod identity carries its namespace.
		sel.add(requirement{source: SourceK8s, key: PodNamespaceLabel, op: opExists})
	}
	return &peer{desc: desc + " " + sel.String(), kind: peerSelector, sel: sel}
}

func (w *walker) ipBlock(path string, v any, desc string) *peer {
	m := w.object(path, v, "cidr", "except")
	if m == nil {
		return nil
	}
	if m["cidr"] == nil {
		w.required(child(path, "cidr"))
		return nil
	}
	pfx, ok := w.cidr(child(path, "cidr"), m["cidr"], false)
	pe := &peer{kind: peerCIDR, prefix: pfx}
	for i, x := range w.list(child(path, "except"), m["except"]) {
		ep := index(child(path, "except"), i)
		e, eok := w.cidr(ep, x, false)
		if !eok || !ok {
			continue
		}
		if !within(e, pfx) || e.Bits() == pfx.Bits() {
			w.invalid(ep, x, "must be a strict subset of cidr "+pfx.String())
			continue
		}
		pe.except = append(pe.except, e)
	}
	if !ok {
		return nil
	}
	pe.desc = desc + " ipBlock " + describeCIDR(pfx, pe.except)
	return pe
}

func describeCIDR(p netip.Prefix, except []netip.Prefix) string {
	s := p.String()
	if len(except) > 0 {
		ex := make([]string, len(except))
		for i, e := range except {
			ex[i] = e.String()
		}
		s += " except " + strings.Join(ex, ",")
	}
	return s
}

func (w *walker) k8sPort(path string, v any) (portSpec, bool) {
	m := w.object(path, v, "protocol", "port", "endPort")
	if m == nil {
		if v == nil {
			// `- {}` is not null; a null list item is.
			w.required(path)
		}
		return portSpec{}, false
	}
	ok := true
	proto, protoName := ProtoTCP, "TCP"
	if x := m["protocol"]; x != nil {
		if s, sok := w.str(child(path, "protocol"), x); !sok {
			ok = false
		} else {
			switch s {
			case "TCP":
			case "UDP":
				proto, protoName = ProtoUDP, s
			case "SCTP":
				proto, protoName = ProtoSCTP, s
			default:
				w.unsupported(child(path, "protocol"), s, "TCP", "UDP", "SCTP")
				ok = false
			}
		}
	}
	ps := portSpec{proto: proto, lo: 0, hi: 65535}
	portStr := ""
	switch x := m["port"].(type) {
	case nil:
	case json.Number:
		n, iok := w.integer(child(path, "port"), x)
		if iok && (n < 1 || n > 65535) {
			w.invalid(child(path, "port"), x, "must be between 1 and 65535, inclusive")
			iok = false
		}
		ok = ok && iok
		ps.lo, ps.hi = uint16(n), uint16(n)
		portStr = strconv.FormatInt(n, 10)
	case string:
		if msg := portName(x); msg != "" {
			w.invalid(child(path, "port"), x, msg)
			ok = false
		}
		ps.name = x
		portStr = x
	default:
		w.errf(child(path, "port"), "must be an integer or a port name, not %s", typeName(x))
		ok = false
	}
	var end int64
	if x := m["endPort"]; x != nil {
		n, iok := w.integer(child(path, "endPort"), x)
		switch {
		case !iok:
			ok = false
		case m["port"] == nil:
			w.errf(child(path, "endPort"), "may not be specified without port")
			ok = false
		case ps.name != "":
			w.invalid(child(path, "port"), ps.name, "a named port cannot have an endPort")
			ok = false
		case n < 1 || n > 65535:
			w.invalid(child(path, "endPort"), x, "must be between 1 and 65535, inclusive")
			ok = false
		case n < int64(ps.lo):
			w.invalid(child(path, "endPort"), x, fmt.Sprintf("must be greater than or equal to port %d", ps.lo))
			ok = false
		default:
			ps.hi, end = uint16(n), n
		}
	}
	ps.desc = describePorts(protoName, portStr, end)
	return ps, ok
}
