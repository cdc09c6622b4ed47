package policy

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

// The test cluster: 3 namespaces x 3 pods, the reserved identities, and one
// CIDR identity per prefix (those the policies mention plus a few fixed
// ones), labelled like the agent labels them.
var (
	testNamespaces = map[string][]string{ // namespace -> its labels
		"shop": {"team=a", "env=prod"},
		"dev":  {"team=a", "env=dev"},
		"ops":  {"team=b", "env=prod"},
	}
	testPods = map[string][]string{ // app -> extra pod labels
		"web": {"tier=front"},
		"api": {"tier=back"},
		"db":  {"tier=back"},
	}
	// Always allocated, so tables can name them even if no policy does.
	extraPrefixes = []string{"10.1.2.0/24", "10.2.0.0/16", "192.0.2.0/24", "8.8.8.0/24", "fd00:1::/64"}
)

type testWorld struct {
	ids    map[uint32]Labels
	byName map[string]uint32
	names  map[uint32]string
}

func podName(ns, app string) string { return ns + "/" + app }

func podLabels(ns, app string) Labels {
	ls := []string{"k8s:app=" + app, "k8s:" + PodNamespaceLabel + "=" + ns}
	for _, l := range testPods[app] {
		ls = append(ls, "k8s:"+l)
	}
	for _, l := range testNamespaces[ns] {
		ls = append(ls, "k8s:"+NamespaceLabelsPrefix+l)
	}
	return MustParseLabels(ls...)
}

func sortedKeys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// newWorld allocates identities the way the agent does.
func newWorld(t testing.TB, policies []*Policy) *testWorld {
	t.Helper()
	w := &testWorld{ids: map[uint32]Labels{}, byName: map[string]uint32{}, names: map[uint32]string{}}
	add := func(name string, id uint32, ls Labels) {
		w.ids[id], w.byName[name], w.names[id] = ls, id, name
	}
	add("host", IdentityHost, MustParseLabels("reserved:host"))
	add("world", IdentityWorld, MustParseLabels("reserved:world"))
	add("unmanaged", IdentityUnmanaged, MustParseLabels("reserved:unmanaged"))
	add("health", IdentityHealth, MustParseLabels("reserved:health"))
	add("init", IdentityInit, MustParseLabels("reserved:init"))
	add("remote-node", IdentityRemoteNode, MustParseLabels("reserved:remote-node"))
	add("kube-apiserver", IdentityKubeAPIServer, MustParseLabels("reserved:kube-apiserver"))
	id := uint32(1000)
	for _, ns := range sortedKeys(testNamespaces) {
		for _, app := range sortedKeys(testPods) {
			add(podName(ns, app), id, podLabels(ns, app))
			id++
		}
	}
	prefixes := CIDRPrefixes(policies)
	for _, s := range extraPrefixes {
		prefixes = append(prefixes, netip.MustParsePrefix(s))
	}
	slices.SortFunc(prefixes, comparePrefix)
	prefixes = slices.Compact(prefixes)
	for i, p := range prefixes {
		ls := []string{"reserved:world"}
		for _, q := range prefixes {
			if within(p, q) {
				ls = append(ls, "cidr:"+q.String())
			}
		}
		add("cidr:"+p.String(), 1<<24+uint32(i), MustParseLabels(ls...))
	}
	return w
}

func (w *testWorld) id(t testing.TB, name string) uint32 {
	t.Helper()
	id, ok := w.byName[name]
	if !ok {
		t.Fatalf("no identity %q in the test world", name)
	}
	return id
}

// endpoint is the EndpointInfo of a named pod or "host".
func (w *testWorld) endpoint(t testing.TB, name string) EndpointInfo {
	t.Helper()
	if name == "host" {
		return EndpointInfo{Identity: IdentityHost, Labels: MustParseLabels("reserved:host", "k8s:node-role=worker", "k8s:kubernetes.io/hostname=n1"), IsHost: true}
	}
	id := w.id(t, name)
	ns, _, _ := strings.Cut(name, "/")
	return EndpointInfo{
		Identity: id, Labels: w.ids[id], Namespace: ns,
		NamedPorts:     map[string]PortProto{"http": {81, ProtoTCP}, "metrics": {9090, ProtoTCP}, "dns": {53, ProtoUDP}},
		PeerNamedPorts: w.peerNamedPorts(),
	}
}

// peerNamedPorts are the pods' named ports by identity: "http" and "dns"
// are the same everywhere; "web" is 81/TCP on app=web pods and 80/TCP on
// app=api pods (issue 11 item 7), absent on db; the ops/db pods disagree
// on "admin" (ambiguous for their identity).
func (w *testWorld) peerNamedPorts() map[uint32]map[string][]PortProto {
	out := map[uint32]map[string][]PortProto{}
	for _, ns := range sortedKeys(testNamespaces) {
		for _, app := range sortedKeys(testPods) {
			m := map[string][]PortProto{"http": {{81, ProtoTCP}}, "dns": {{53, ProtoUDP}, {53, ProtoTCP}}}
			switch app {
			case "web":
				m["web"] = []PortProto{{81, ProtoTCP}}
			case "api":
				m["web"] = []PortProto{{80, ProtoTCP}}
			}
			if ns == "ops" && app == "db" {
				m["admin"] = []PortProto{{8080, ProtoTCP}, {8443, ProtoTCP}}
			}
			out[w.byName[podName(ns, app)]] = m
		}
	}
	return out
}

func decodeAll(t testing.TB, docs ...string) []*Policy {
	t.Helper()
	var out []*Policy
	for _, d := range docs {
		p, err := Decode([]byte(d))
		if err != nil {
			t.Fatalf("decoding policy:\n%s\nerror: %v", d, err)
		}
		out = append(out, p)
	}
	return out
}

// checkInvariants asserts the datapath contract on a computed policy.
func checkInvariants(t testing.TB, ep *EndpointPolicy) {
	t.Helper()
	for i, e := range ep.Entries {
		if e.PortBits > 16 || e.Port != maskPort(e.Port, e.PortBits) {
			t.Fatalf("entry %v: port not masked to its prefix", e)
		}
		if e.Proto == ProtoAny && (e.Port != 0 || e.PortBits != 0) {
			t.Fatalf("entry %v: any-protocol entry with a port", e)
		}
		if len(e.Derived) == 0 {
			t.Fatalf("entry %v: no rule", e)
		}
		if i > 0 && compareKey(ep.Entries[i-1].Key, e.Key) >= 0 {
			t.Fatalf("entries not sorted/unique: %v then %v", ep.Entries[i-1], e)
		}
	}
	// The left-out entries never change a verdict.
	full := &EndpointPolicy{IngressEnforced: ep.IngressEnforced, EgressEnforced: ep.EgressEnforced}
	full.Entries = append(append([]Entry{}, ep.Entries...), ep.Shadowed...)
	slices.SortFunc(full.Entries, func(a, b Entry) int { return compareKey(a.Key, b.Key) })
	probe := func(id uint32, egress bool, proto uint8, port uint16) {
		a, b := Lookup(ep, id, egress, proto, port), Lookup(full, id, egress, proto, port)
		if a.Allowed != b.Allowed {
			t.Fatalf("identity %d egress=%v %s/%d: minimal entries say %v, with shadowed entries %v", id, egress, ProtoName(proto), port, a.Allowed, b.Allowed)
		}
	}
	ids := map[uint32]bool{0: true}
	ports := map[uint16]bool{0: true, 65535: true}
	for _, l := range [][]Entry{ep.Entries, ep.Shadowed, ep.Overridden} {
		for _, e := range l {
			ids[e.Identity] = true
			blk := PortBlock{e.Port, e.PortBits}
			for _, p := range []uint16{blk.First(), blk.Last(), blk.First() - 1, blk.Last() + 1} {
				ports[p] = true
			}
		}
	}
	portList := slices.Sorted(func(yield func(uint16) bool) {
		for p := range ports {
			if !yield(p) {
				return
			}
		}
	})
	if len(portList) > 48 { // keep it quick: every boundary of a sample
		step := len(portList) / 48
		var sample []uint16
		for i := 0; i < len(portList); i += step {
			sample = append(sample, portList[i])
		}
		portList = sample
	}
	for id := range ids {
		for _, egress := range []bool{false, true} {
			for _, proto := range []uint8{ProtoTCP, ProtoUDP, ProtoSCTP, 1} {
				for _, port := range portList {
					probe(id, egress, proto, port)
				}
			}
		}
	}
}

func (w *testWorld) describe(id uint32) string {
	if n, ok := w.names[id]; ok {
		return n
	}
	return fmt.Sprint(id)
}
