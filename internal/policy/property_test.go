package policy

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
)

// oracle decides a packet straight from the rules, without entries, range
// splitting, overriding or minimization: deny if a deny section matches,
// else allow if an allow section matches (or the direction is enforced
// without default deny), else deny. Selector resolution is shared with the
// engine (the truth tables pin it down).
func oracle(e *Engine, ep EndpointInfo, peer uint32, egress bool, proto uint8, port uint16) bool {
	ns := ep.Namespace
	enforced, defaultDeny := false, false
	var sections []*section
	for _, p := range e.policies {
		for _, r := range p.rules {
			if !r.selects(ep, ns) {
				continue
			}
			if (!egress && r.ingress) || (egress && r.egress) {
				enforced = true
				if (!egress && r.ingressDefaultDeny) || (egress && r.egressDefaultDeny) {
					defaultDeny = true
				}
			}
			for _, s := range r.sections {
				if s.egress == egress {
					sections = append(sections, s)
				}
			}
		}
	}
	if !enforced {
		return true
	}
	peerIdx := -1
	for i, id := range e.ix.ids {
		if id == peer {
			peerIdx = i
		}
	}
	matches := func(s *section) bool {
		peerOK := false
		for _, pe := range s.peers {
			if pe.kind == peerAll || (peerIdx >= 0 && e.peerSets[pe].has(peerIdx)) {
				peerOK = true
			}
		}
		if !peerOK {
			return false
		}
		if s.allPorts {
			return true
		}
		for _, ps := range s.ports {
			if ps.name != "" {
				panic("oracle: named ports are not generated")
			}
			if (ps.proto == ProtoAny || ps.proto == proto) && port >= ps.lo && port <= ps.hi {
				return true
			}
		}
		return false
	}
	allowed := !defaultDeny
	for _, s := range sections {
		if matches(s) {
			if s.deny {
				return false
			}
			allowed = true
		}
	}
	return allowed
}

// randomPolicy writes a random Cilium policy or NetworkPolicy.
func randomPolicy(r *rand.Rand, n int) string {
	pick := func(xs ...string) string { return xs[r.IntN(len(xs))] }
	selector := func() string {
		return pick("{}", "{matchLabels: {app: web}}", "{matchLabels: {app: api}}", "{matchLabels: {tier: back}}",
			"{matchLabels: {k8s:io.kubernetes.pod.namespace: dev}}", "{matchExpressions: [{key: app, operator: NotIn, values: [db]}]}",
			"{matchLabels: {reserved:host: \"\"}}")
	}
	portList := func(cilium bool) string {
		var ports []string
		for range 1 + r.IntN(3) {
			lo := []int{0, 1, 79, 80, 81, 88, 90, 1000, 65535}[r.IntN(9)]
			var parts []string
			if cilium {
				parts = append(parts, fmt.Sprintf("port: %q", fmt.Sprint(lo)))
				if proto := pick("", "TCP", "UDP", "SCTP", "ANY"); proto != "" {
					parts = append(parts, "protocol: "+proto)
				}
			} else {
				if lo == 0 {
					lo = 1
				}
				parts = append(parts, fmt.Sprintf("port: %d", lo))
				parts = append(parts, "protocol: "+pick("TCP", "UDP", "SCTP"))
			}
			if lo > 0 && r.IntN(2) == 0 {
				parts = append(parts, fmt.Sprintf("endPort: %d", lo+r.IntN(70000-lo)%(65536-lo)))
			}
			ports = append(ports, "{"+strings.Join(parts, ", ")+"}")
		}
		return "[" + strings.Join(ports, ", ") + "]"
	}
	var b strings.Builder
	if r.IntN(4) == 0 {
		fmt.Fprintf(&b, "%smetadata: {name: np%d, namespace: %s}\nspec:\n  podSelector: %s\n", npHeader, n, pick("shop", "shop", "dev"), pick("{}", "{matchLabels: {app: web}}"))
		for _, dir := range []string{"ingress", "egress"} {
			if r.IntN(3) == 0 {
				continue
			}
			fmt.Fprintf(&b, "  %s:\n", dir)
			for range r.IntN(3) {
				b.WriteString("  - ")
				hasPeers, hasPorts := r.IntN(3) > 0, r.IntN(2) == 0
				if !hasPeers && !hasPorts {
					b.WriteString("{}\n")
					continue
				}
				if hasPeers {
					peers := pick("podSelector: "+selector(), "namespaceSelector: {matchLabels: {team: a}}",
						"namespaceSelector: {}\n      podSelector: {matchLabels: {app: db}}", "ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16]}")
					peers = strings.ReplaceAll(peers, "reserved:host: \"\"", "app: web")
					peers = strings.ReplaceAll(peers, "k8s:io.kubernetes.pod.namespace", "app")
					field := map[string]string{"ingress": "from", "egress": "to"}[dir]
					fmt.Fprintf(&b, "%s:\n    - %s\n", field, peers)
					if hasPorts {
						b.WriteString("    ")
					}
				}
				if hasPorts {
					fmt.Fprintf(&b, "ports: %s\n", portList(false))
				}
			}
			if strings.HasSuffix(b.String(), "  "+dir+":\n") {
				b.WriteString("  - {}\n")
			}
		}
		return b.String()
	}
	if r.IntN(2) == 0 {
		fmt.Fprintf(&b, "%smetadata: {name: cnp%d, namespace: %s}\nspec:\n", cnpHeader, n, pick("shop", "dev"))
	} else {
		fmt.Fprintf(&b, "%smetadata: {name: ccnp%d}\nspec:\n", ccnpHeader, n)
	}
	fmt.Fprintf(&b, "  endpointSelector: %s\n", pick("{}", "{matchLabels: {app: web}}", "{matchLabels: {tier: front}}"))
	if r.IntN(5) == 0 {
		fmt.Fprintf(&b, "  enableDefaultDeny: {ingress: %v, egress: %v}\n", r.IntN(2) == 0, r.IntN(2) == 0)
	}
	for _, sec := range []string{"ingress", "ingressDeny", "egress", "egressDeny"} {
		count := r.IntN(3)
		if count == 0 {
			continue
		}
		dir := "from"
		if strings.HasPrefix(sec, "egress") {
			dir = "to"
		}
		fmt.Fprintf(&b, "  %s:\n", sec)
		for range count {
			var fields []string
			for range r.IntN(3) {
				switch r.IntN(4) {
				case 0:
					fields = append(fields, fmt.Sprintf("%sEndpoints: [%s]", dir, selector()))
				case 1:
					fields = append(fields, fmt.Sprintf("%sEntities: [%s]", dir, pick(entities...)))
				case 2:
					fields = append(fields, fmt.Sprintf("%sCIDR: [%s]", dir, pick("10.0.0.0/8", "192.0.2.0/24", "0.0.0.0/0", "10.1.2.3")))
				case 3:
					fields = append(fields, fmt.Sprintf("%sCIDRSet: [{cidr: 10.0.0.0/8, except: [%s]}]", dir, pick("10.1.0.0/16", "10.2.0.0/16")))
				}
			}
			if r.IntN(2) == 0 {
				fields = append(fields, "toPorts: [{ports: "+portList(true)+"}]")
			}
			seen := map[string]bool{}
			var uniq []string
			for _, f := range fields {
				k, _, _ := strings.Cut(f, ":")
				if !seen[k] {
					seen[k] = true
					uniq = append(uniq, f)
				}
			}
			fmt.Fprintf(&b, "  - {%s}\n", strings.Join(uniq, ", "))
		}
	}
	return b.String()
}

func TestComputeMatchesOracle(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 11))
	probePorts := []uint16{0, 1, 2, 78, 79, 80, 81, 82, 87, 88, 89, 90, 91, 999, 1000, 1001, 4096, 32767, 32768, 65534, 65535}
	iterations := 120
	if testing.Short() {
		iterations = 30
	}
	for it := range iterations {
		var docs []string
		for i := range 1 + r.IntN(4) {
			docs = append(docs, randomPolicy(r, i))
		}
		var policies []*Policy
		for _, d := range docs {
			p, err := Decode([]byte(d))
			if err != nil {
				t.Fatalf("iteration %d: generated policy does not decode: %v\n%s", it, err, d)
			}
			policies = append(policies, p)
		}
		w := newWorld(t, policies)
		eng, err := NewEngine(policies, w.ids, Options{})
		if err != nil {
			t.Fatal(err)
		}
		for si, subject := range []string{"shop/web", "dev/web", "shop/db"} {
			ep := w.endpoint(t, subject)
			pol, err := eng.Compute(ep)
			if err != nil {
				t.Fatal(err)
			}
			if si == 0 {
				checkInvariants(t, pol)
			}
			for id := range w.ids {
				for _, egress := range []bool{false, true} {
					for _, proto := range []uint8{ProtoTCP, ProtoUDP, ProtoSCTP, 1} {
						ports := append(probePorts, uint16(r.UintN(65536)))
						for _, port := range ports {
							got := Lookup(pol, id, egress, proto, port)
							want := oracle(eng, ep, id, egress, proto, port)
							if got.Allowed != want {
								x := pol.Explain(id, egress, proto, port)
								t.Fatalf("iteration %d, %s, peer %s egress=%v %s/%d: Lookup allowed=%v, oracle %v\n%s\nentries %v\npolicies:\n%s",
									it, subject, w.describe(id), egress, ProtoName(proto), port, got.Allowed, want, x, pol.Entries, strings.Join(docs, "---\n"))
							}
						}
					}
				}
			}
		}
	}
}
