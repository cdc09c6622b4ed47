package labtest

import (
	"context"
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lumen-net/lumen/internal/api"
	"github.com/lumen-net/lumen/internal/lab"
	"github.com/lumen-net/lumen/internal/lab/labpath"
)

// namedTopology: the pods of issue 11 item 7, on two nodes.
const namedTopology = `
nodes: [{name: n1}, {name: n2}]
pods:
  - {name: xa, namespace: x, labels: {pod: a}, node: n2, ports: ["80/tcp", "81/tcp"]}
  - {name: yb, namespace: "y", labels: {pod: b}, node: n1, ports: ["80/tcp", "81/tcp"]}
  - {name: za, namespace: z, labels: {pod: a}, node: n1, ports: ["80/tcp", "81/tcp"]}
`

// The container port named web is 81/tcp on x/xa and 80/tcp on y/yb.
const namedPods = `
apiVersion: v1
kind: Pod
metadata: {name: xa, namespace: x, labels: {pod: a}}
spec:
  nodeName: n2
  containers:
  - name: echo
    image: lumen-lab-echo
    ports: [{name: web, containerPort: 81, protocol: TCP}, {name: other, containerPort: 80, protocol: TCP}]
---
apiVersion: v1
kind: Pod
metadata: {name: yb, namespace: "y", labels: {pod: b}}
spec:
  nodeName: n1
  containers:
  - name: echo
    image: lumen-lab-echo
    ports: [{name: web, containerPort: 80, protocol: TCP}, {name: other, containerPort: 81, protocol: TCP}]
`

// The egress rule names the port; "missing" names no pod's port (a warning,
// nothing allowed by it).
const namedEgressPolicy = `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: egress-web, namespace: z}
spec:
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Egress]
  egress:
  - to:
    - namespaceSelector: {}
    ports:
    - port: web
    - port: missing
`

// TestPolicyEgressNamedPorts is issue 11 item 7: an egress named port is
// each destination pod's own container port of that name. z/za may reach
// x/xa on 81/tcp and y/yb on 80/tcp, nothing else; `policy explain`
// agrees with the datapath and shows the policy's warning, and so does
// `endpoint list`.
func TestPolicyEgressNamedPorts(t *testing.T) {
	name := newLab(t)
	up(t, name, writeTopology(t, namedTopology))
	st, err := lab.LoadState(name)
	if err != nil {
		t.Fatal(err)
	}
	pods := map[string]*lab.PodState{}
	for i := range st.Pods {
		pods[st.Pods[i].FullName()] = &st.Pods[i]
	}
	mustLumen(t, name, "apply", "-f", writeFile(t, "pods.yaml", namedPods))
	mustLumen(t, name, "apply", "-f", writeFile(t, "policy.yaml", namedEgressPolicy))

	n1 := api.NewClient(labpath.NodeSocket(name, "n1"))
	ctx := context.Background()
	za := pods["z/za"]
	waitUntil(t, "z/za under the policy, with its warning", func() bool {
		eps, err := n1.Endpoints(ctx)
		if err != nil {
			return false
		}
		for _, ep := range eps {
			if ep.Namespace == "z" && ep.PodName == "za" {
				return slices.Contains(ep.Policy.SelectedBy, "NetworkPolicy z/egress-web") && len(ep.Policy.Warnings) > 0
			}
		}
		return false
	})

	cases := []struct {
		dst   string
		port  uint16
		allow bool
		rule  string
	}{
		{"x/xa", 81, true, "TCP/web(81/TCP)"},
		{"x/xa", 80, false, "default deny"},
		{"y/yb", 80, true, "TCP/web(80/TCP)"},
		{"y/yb", 81, false, "default deny"},
	}
	for _, c := range cases {
		dst := pods[c.dst]
		target := netip.AddrPortFrom(netip.MustParseAddr(dst.IPv4), c.port)
		// An allowed probe gets a generous timeout; a denied one must not
		// connect within its second.
		timeout := time.Second
		if c.allow {
			timeout = 10 * time.Second
		}
		err := lab.ProbeInNS(ctx, za.NetNS, target, "tcp", timeout)
		if c.allow && err != nil {
			t.Errorf("z/za -> %s:%d/tcp: %v, want connected%s", c.dst, c.port, err, labLogs(name))
		}
		if !c.allow && err == nil {
			t.Errorf("z/za -> %s:%d/tcp connected, want denied", c.dst, c.port)
		}
		x, err := n1.Explain(ctx, &api.ExplainRequest{Endpoint: za.IPv4, Peer: dst.IPv4, Direction: "egress", Protocol: "tcp", Port: c.port})
		if err != nil {
			t.Fatal(err)
		}
		if x.Allowed != c.allow {
			t.Errorf("explain z/za -> %s:%d/tcp: allowed=%v, want %v: %s", c.dst, c.port, x.Allowed, c.allow, x.Reason)
		}
		b, _ := json.Marshal(x)
		if !strings.Contains(string(b), c.rule) {
			t.Errorf("explain z/za -> %s:%d/tcp does not name %q: %s", c.dst, c.port, c.rule, b)
		}
	}

	// The warning, everywhere a user looks.
	const warn = `named port "missing" not found on any peer the rule selects`
	text := mustLumen(t, name, "policy", "explain", "--from", "z/za", "--to", "x/xa:81/tcp")
	if !strings.Contains(text, "warning: ") || !strings.Contains(text, warn) || !strings.Contains(text, "ALLOWED") {
		t.Errorf("policy explain text lacks the verdict or the warning:\n%s", text)
	}
	var js struct {
		Allowed bool               `json:"allowed"`
		Sides   []*api.Explanation `json:"sides"`
	}
	decode(t, mustLumen(t, name, "policy", "explain", "--from", "z/za", "--to", "x/xa:80/tcp", "-o", "json"), &js)
	if js.Allowed || len(js.Sides) == 0 || !slices.ContainsFunc(js.Sides[0].Warnings, func(s string) bool { return strings.Contains(s, warn) }) {
		t.Errorf("policy explain -o json: allowed=%v, want false, and the warning in sides[0].warnings: %+v", js.Allowed, js.Sides)
	}
	list := mustLumen(t, name, "--node", "n1", "endpoint", "list")
	if !strings.Contains(list, "policy warning: ") || !strings.Contains(list, warn) {
		t.Errorf("endpoint list does not show the warning:\n%s", list)
	}
	var eps []api.Endpoint
	decode(t, mustLumen(t, name, "--node", "n1", "endpoint", "list", "-o", "json"), &eps)
	found := false
	for _, ep := range eps {
		found = found || (ep.PodName == "za" && slices.ContainsFunc(ep.Policy.Warnings, func(s string) bool { return strings.Contains(s, warn) }))
	}
	if !found {
		t.Errorf("endpoint list -o json: no policy.warnings with %q on z/za", warn)
	}
	logs, _ := os.ReadFile(filepath.Join(labpath.LogDir(name), "agent-n1.log"))
	if !strings.Contains(string(logs), "policy warning") || !strings.Contains(string(logs), "missing") {
		t.Errorf("agent log does not report the warning:%s", labLogs(name))
	}
}
