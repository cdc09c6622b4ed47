package labtest

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lumen-net/lumen/internal/api"
	"github.com/lumen-net/lumen/internal/lab"
)

// TestPolicyMatrix is the network-policy e2e suite of Kubernetes, for the
// NetworkPolicy, CiliumNetworkPolicy and CiliumClusterwideNetworkPolicy
// shapes Lumen implements: for each policy, a truth table written by hand
// from the specification (matrixCases) is compared with every probe of the
// lab (pod to pod, pod to world and host, world and host to pod) and with
// the agents' explanation of every cell, which must give the same verdict
// and name the rule that decided it. Native routing and VXLAN run side by
// side.
func TestPolicyMatrix(t *testing.T) {
	for _, routing := range []string{lab.RoutingNative, lab.RoutingVXLAN} {
		t.Run(routing, func(t *testing.T) {
			t.Parallel()
			pl := newPolicyLab(t, routing)
			// Named ports: the topology cannot name container ports, but the
			// agents read them from the stored Pods, which can be re-applied
			// with names (as kubectl apply would). They must be in the store
			// before the policies that use them.
			mustLumen(t, pl.name, "apply", "-f", writeFile(t, "named-pods.yaml", namedPodsYAML(pl.st)))
			for _, mc := range matrixCases() {
				t.Run(mc.name, func(t *testing.T) { pl.runCase(t, mc) })
			}
		})
	}
}

// verdictKind is what one side (the source's egress or the destination's
// ingress) decides.
type verdictKind int

const (
	vOpen    verdictKind = iota // the direction is not enforced
	vAllow                      // allowed by the rule ref
	vDeny                       // denied by the deny rule ref
	vDefault                    // default deny; ref is a policy enforcing the direction
)

type side struct {
	kind verdictKind
	ref  string // "NetworkPolicy x/name spec.ingress[0]", or the policy for vDefault
}

func (s side) allowed() bool { return s.kind == vOpen || s.kind == vAllow }

func (s side) String() string {
	switch s.kind {
	case vOpen:
		return "open"
	case vAllow:
		return "allowed by " + s.ref
	case vDeny:
		return "denied by " + s.ref
	}
	return "default deny of " + s.ref
}

// localhostRef is the agent's implicit ingress allow from its own node.
const localhostRef = "agent option allow-localhost option.ingress"

// rule is one section of a policy in a truth table: its reference and the
// cells it matches.
type rule struct {
	ref   string
	match func(c cell) bool
}

// decide is the verdict of an enforced direction: the first matching deny,
// else the first matching allow, else default deny.
func decide(c cell, policy string, denies, allows []rule) side {
	for _, r := range denies {
		if r.match(c) {
			return side{vDeny, r.ref}
		}
	}
	for _, r := range allows {
		if r.match(c) {
			return side{vAllow, r.ref}
		}
	}
	return side{vDefault, policy}
}

// ingress is decide for an endpoint's ingress: traffic from its own node is
// allowed unless a deny matches (Kubernetes: "traffic to and from the node
// where a Pod is running is always allowed"; Cilium: allow-localhost).
func ingress(c cell, policy string, denies, allows []rule) side {
	allows = append(slices.Clone(allows), rule{localhostRef, fromLocalHost})
	return decide(c, policy, denies, allows)
}

// Predicates over cells.
func fromLocalHost(c cell) bool { return c.src.kind == hostPeer && c.src.node == c.dst.node }
func srcPod(c cell) bool        { return c.src.kind == podPeer }
func dstPod(c cell) bool        { return c.dst.kind == podPeer }
func srcWorld(c cell) bool      { return c.src.kind == worldPeer }
func dstWorld(c cell) bool      { return c.dst.kind == worldPeer }
func srcIn(ns ...string) func(cell) bool {
	return func(c cell) bool { return c.src.kind == podPeer && slices.Contains(ns, c.src.ns) }
}
func dstIn(ns ...string) func(cell) bool {
	return func(c cell) bool { return c.dst.kind == podPeer && slices.Contains(ns, c.dst.ns) }
}
func srcLabel(pods ...string) func(cell) bool {
	return func(c cell) bool { return c.src.kind == podPeer && slices.Contains(pods, c.src.pod) }
}
func dstLabel(pods ...string) func(cell) bool {
	return func(c cell) bool { return c.dst.kind == podPeer && slices.Contains(pods, c.dst.pod) }
}
func srcIs(names ...string) func(cell) bool {
	return func(c cell) bool { return slices.Contains(names, c.src.name) }
}
func dstIs(names ...string) func(cell) bool {
	return func(c cell) bool { return slices.Contains(names, c.dst.name) }
}
func onPort(port uint16, protos ...string) func(cell) bool {
	return func(c cell) bool { return c.port == port && slices.Contains(protos, c.proto) }
}
func allOf(fs ...func(cell) bool) func(cell) bool {
	return func(c cell) bool {
		for _, f := range fs {
			if !f(c) {
				return false
			}
		}
		return true
	}
}
func anyOf(fs ...func(cell) bool) func(cell) bool {
	return func(c cell) bool {
		for _, f := range fs {
			if f(c) {
				return true
			}
		}
		return false
	}
}
func always(cell) bool { return true }

// Pod selection predicates for matrixCase.selects.
func podsIn(ns string, labels ...string) func(*peer) bool {
	return func(p *peer) bool { return p.ns == ns && (len(labels) == 0 || slices.Contains(labels, p.pod)) }
}
func podsLabelled(labels ...string) func(*peer) bool {
	return func(p *peer) bool { return slices.Contains(labels, p.pod) }
}

// matrixCase is one policy and its truth table.
type matrixCase struct {
	name string
	// yaml is applied with `lumen apply -f`; "{ns/pod/4}" stands for a pod's
	// IPv4 address.
	yaml string
	// selects: every policy of yaml (as the agents name it) and the pods it
	// selects.
	selects map[string]func(*peer) bool
	// ingress decides at the destination when it is a pod, egress at the
	// source when it is a pod; nil means not enforced.
	ingress, egress func(c cell) side
	v6              bool // probe IPv6 too
}

// runCase applies the policy, waits until the agents enforce it, compares
// every cell's probe and explanation with the truth table, and deletes it.
func (pl *policyLab) runCase(t *testing.T, mc matrixCase) {
	start := time.Now()
	yaml := mc.yaml
	for _, p := range pl.pods {
		yaml = strings.ReplaceAll(yaml, "{"+p.name+"/4}", p.ip4.String())
	}
	file := writeFile(t, "policy.yaml", yaml)
	mustLumen(t, pl.name, "apply", "-f", file)
	want := map[string][]string{}
	for _, p := range pl.pods {
		for pol, sel := range mc.selects {
			if sel(p) {
				want[p.name] = append(want[p.name], pol)
			}
		}
	}
	pl.waitSelected(t, want)
	t.Cleanup(func() {
		// The next case starts from no policy at all, and no connection:
		// a UDP probe whose source port repeats one of an earlier case's
		// (conntrack keeps UDP flows a minute) would be established, not
		// new, and skip the policy.
		mustLumen(t, pl.name, "delete", "-f", file)
		pl.waitSelected(t, nil)
		for node := range pl.clients {
			mustLumen(t, pl.name, "--node", node, "bpf", "ct", "flush")
		}
	})
	applied := time.Since(start)

	families := []int{4}
	if mc.v6 {
		families = []int{4, 6}
	}
	cells := pl.cells(families, true)
	expect := func(c cell) (eg, in side, reachable bool) {
		if c.src.kind == podPeer && mc.egress != nil {
			eg = mc.egress(c)
		}
		if c.dst.kind == podPeer && mc.ingress != nil {
			in = mc.ingress(c)
		}
		return eg, in, pl.reachable(c)
	}
	// Explanations need no traffic: they run while the probes wait.
	var apiBad, cliBad []string
	explained := make(chan struct{})
	go func() {
		defer close(explained)
		apiBad, cliBad = pl.explainCells(cells, expect)
	}()
	got := pl.probe(t, families, true)
	probed := time.Since(start)

	// Allowed cells that missed the short timeout get a second chance.
	var retry []cell
	for _, c := range cells {
		eg, in, reachable := expect(c)
		if reachable && eg.allowed() && in.allowed() && !got[c.key()] {
			retry = append(retry, c)
		}
	}
	if len(retry) > 0 {
		for i, ok := range pl.reprobe(retry) {
			if ok {
				t.Logf("%s: connected on a second probe", retry[i])
				got[retry[i].key()] = true
			}
		}
	}

	var mismatches []string
	for _, c := range cells {
		eg, in, reachable := expect(c)
		wantOK := reachable && eg.allowed() && in.allowed()
		res, ok := got[c.key()]
		switch {
		case !ok:
			mismatches = append(mismatches, fmt.Sprintf("%s: not probed", c))
		case res != wantOK:
			mismatches = append(mismatches, fmt.Sprintf("%s: connected=%v, want %v (egress %s, ingress %s)", c, res, wantOK, eg, in))
		}
	}
	report(t, "probe", mismatches)
	if len(mismatches) > 0 {
		for _, n := range []string{"n1", "n2"} {
			t.Logf("%s ipcache:\n%s", n, lumen(t, pl.name, "--node", n, "bpf", "ipcache", "list").stdout)
		}
	}

	<-explained
	report(t, "explain", apiBad)
	report(t, "lumen policy explain", cliBad)
	t.Logf("%d cells: applied in %v, probed after %v, checked after %v", len(cells), applied.Round(time.Millisecond), probed.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
}

// explainCells checks cells' explanations, from the agents' API: same
// verdict as the truth table (and so as the probe), naming the expected
// rule. And `lumen policy explain -o json` itself on a sample: one cell of
// every 32, plus every denied cell from the first pod to the other pods.
//
// Explanations do not depend on the routing mode (same identities, same
// computation): with native routing every cell is explained, with VXLAN
// one of every 7 (and the CLI sample), which saves minutes of test time.
func (pl *policyLab) explainCells(cells []cell, expect func(cell) (side, side, bool)) (apiBad, cliBad []string) {
	every := 1
	if pl.routing == lab.RoutingVXLAN {
		every = 7
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, 6)
	for i, c := range cells {
		eg, in, _ := expect(c)
		denied := !(eg.allowed() && in.allowed())
		cli := i%32 == 0 || (denied && c.src == cells[0].src && c.dst.kind == podPeer)
		if i%every != 0 && !cli {
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			var bad []string
			xe, xi, err := pl.explainSides(context.Background(), c)
			if err != nil {
				bad = append(bad, err.Error())
			} else {
				if msg := checkExplanation(xe, eg); msg != "" {
					bad = append(bad, fmt.Sprintf("%s: egress: %s", c, msg))
				}
				if msg := checkExplanation(xi, in); msg != "" {
					bad = append(bad, fmt.Sprintf("%s: ingress: %s", c, msg))
				}
			}
			var cliMsg string
			if cli {
				cliMsg = pl.checkExplainCLI(c, eg, in)
			}
			mu.Lock()
			defer mu.Unlock()
			apiBad = append(apiBad, bad...)
			if cliMsg != "" {
				cliBad = append(cliBad, fmt.Sprintf("%s: %s", c, cliMsg))
			}
		}()
	}
	wg.Wait()
	return apiBad, cliBad
}

// reachable tells whether a cell can connect at all without policy: every
// cell can, in both routing modes (in VXLAN mode the nodes' own packets to
// other nodes' pods are encapsulated by to_netdev).
func (pl *policyLab) reachable(c cell) bool { return true }

func report(t *testing.T, what string, mismatches []string) {
	t.Helper()
	if len(mismatches) == 0 {
		return
	}
	slices.Sort(mismatches)
	n := len(mismatches)
	if n > 25 {
		mismatches = append(mismatches[:25], fmt.Sprintf("... and %d more", n-25))
	}
	t.Errorf("%s: %d cells differ from the truth table:\n%s", what, n, strings.Join(mismatches, "\n"))
}

func refOf(r api.ExplainRule) string { return r.Policy + " " + r.Rule + "." + r.Section }

// checkExplanation compares one side's explanation with the truth table.
func checkExplanation(x *api.Explanation, want side) string {
	if x == nil {
		return "" // a world client: no side to explain
	}
	refs := make([]string, len(x.Rules))
	for i, r := range x.Rules {
		refs[i] = refOf(r)
	}
	bad := func() string {
		return fmt.Sprintf("want %s, got allowed=%v reason %q rules %q enforcedBy %q (peer identity %d %q)", want, x.Allowed, x.Reason, refs, x.EnforcedBy, x.PeerIdentity, x.PeerLabels)
	}
	if x.Allowed != want.allowed() {
		return bad()
	}
	switch want.kind {
	case vOpen:
		if len(x.EnforcedBy) != 0 || len(x.Rules) != 0 {
			return bad()
		}
	case vAllow, vDeny:
		if !slices.Contains(refs, want.ref) {
			return bad()
		}
	case vDefault:
		if len(x.Rules) != 0 || !slices.Contains(x.EnforcedBy, want.ref) {
			return bad()
		}
	}
	return ""
}

// checkExplainCLI runs `lumen policy explain -o json` for a cell. It may run
// on any goroutine: problems are returned, not reported.
func (pl *policyLab) checkExplainCLI(c cell, eg, in side) string {
	ref := func(p *peer) string {
		switch {
		case p.kind == podPeer:
			return p.name
		case c.family == 6:
			return "[" + p.ip6.String() + "]"
		}
		return p.ip4.String()
	}
	from := strings.Trim(ref(c.src), "[]")
	r, err := runLumen(pl.name, "policy", "explain", "--from", from, "--to", fmt.Sprintf("%s:%d/%s", ref(c.dst), c.port, c.proto),
		"--family", fmt.Sprint(c.family), "-o", "json")
	if err != nil {
		return err.Error()
	}
	if r.code != 0 {
		return fmt.Sprintf("exit %d: %s", r.code, r.stderr)
	}
	var out struct {
		Allowed bool               `json:"allowed"`
		Sides   []*api.Explanation `json:"sides"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
		return fmt.Sprintf("decoding %q: %v", r.stdout, err)
	}
	if out.Allowed != (eg.allowed() && in.allowed()) {
		return fmt.Sprintf("allowed=%v, want egress %s, ingress %s", out.Allowed, eg, in)
	}
	sides := 0
	for _, x := range out.Sides {
		w := in
		if x.Direction == "egress" {
			w = eg
		}
		if msg := checkExplanation(x, w); msg != "" {
			return x.Direction + ": " + msg
		}
		sides++
	}
	if want := btoi(c.src.kind != worldPeer) + btoi(c.dst.kind != worldPeer); sides != want {
		return fmt.Sprintf("%d sides explained, want %d", sides, want)
	}
	return ""
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// namedPodsYAML re-declares the lab's pods with named container ports
// serve-<port>-<proto> (e.g. serve-81-tcp).
func namedPodsYAML(st *lab.State) string {
	var b strings.Builder
	for _, p := range st.Pods {
		fmt.Fprintf(&b, "---\napiVersion: v1\nkind: Pod\nmetadata: {name: %s, namespace: %q, labels: {pod: %q}}\nspec:\n  nodeName: %s\n  containers:\n  - name: echo\n    image: lumen-lab-echo\n    ports:\n",
			p.Name, p.Namespace, p.Labels["pod"], p.Node)
		for _, port := range p.Ports {
			fmt.Fprintf(&b, "    - {name: serve-%d-%s, containerPort: %d, protocol: %s}\n", port.Port, port.Protocol, port.Port, strings.ToUpper(port.Protocol))
		}
	}
	return b.String()
}
