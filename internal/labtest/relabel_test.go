package labtest

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/lumen-net/lumen/internal/api"
)

// Label changes: a pod relabelled (or its namespace) gets the identity of
// its new label set on its node, in the other nodes' ipcache, and in every
// policy decision.

// relabelPolicy lets only app=frontend pods, of any namespace, reach
// catalog:80. (A CiliumNetworkPolicy's peer selectors apply in its own
// namespace unless they name one, as in Cilium: k8sCatalogPolicy would
// never select a relabelled pod of namespace tools.)
const relabelPolicy = `apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: catalog-from-frontend, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: catalog}}
  ingress:
  - fromEndpoints:
    - matchLabels: {app: frontend}
      matchExpressions: [{key: k8s:io.kubernetes.pod.namespace, operator: Exists}]
    toPorts: [{ports: [{port: "80", protocol: TCP}]}]
`

// setLabels replaces the labels of a stored object (kind pod or namespace;
// ref "ns/name" for pods) and applies it back, as a user editing the
// object's YAML and running `lumen apply` would.
func setLabels(t *testing.T, labName, kind, ref string, labels map[string]string) {
	t.Helper()
	args := []string{"get", kind, ref, "-o", "json"}
	if ns, name, ok := strings.Cut(ref, "/"); ok {
		args = []string{"get", kind, "-n", ns, name, "-o", "json"}
	}
	var obj map[string]any
	decode(t, mustLumen(t, labName, args...), &obj)
	md, _ := obj["metadata"].(map[string]any)
	md["labels"] = labels
	b, err := json.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	applyYAML(t, labName, string(b))
}

// endpointOf returns the endpoint of pod ref ("ns/name") on node.
func endpointOf(t *testing.T, labName, node, ref string) api.Endpoint {
	t.Helper()
	var eps []api.Endpoint
	decode(t, mustLumen(t, labName, "--node", node, "endpoint", "list", "-o", "json"), &eps)
	for _, ep := range eps {
		if ep.Namespace+"/"+ep.PodName == ref {
			return ep
		}
	}
	t.Fatalf("no endpoint of %s on %s", ref, node)
	return api.Endpoint{}
}

// ipcacheIdentity returns the identity node's ipcache holds for ip.
func ipcacheIdentity(t *testing.T, labName, node, ip string) (uint32, bool) {
	t.Helper()
	var es []api.BPFIPCache
	decode(t, mustLumen(t, labName, "--node", node, "bpf", "ipcache", "list", "-o", "json"), &es)
	for _, e := range es {
		if e.Prefix == ip+"/32" || e.Prefix == ip+"/128" {
			return e.Identity, true
		}
	}
	return 0, false
}

// endpointMapIdentity returns the identity node's endpoint map holds for ip.
func endpointMapIdentity(t *testing.T, labName, node, ip string) uint32 {
	t.Helper()
	var es []api.BPFEndpoint
	decode(t, mustLumen(t, labName, "--node", node, "bpf", "endpoint", "list", "-o", "json"), &es)
	for _, e := range es {
		if e.IP == ip {
			return e.Identity
		}
	}
	t.Fatalf("%s not in the endpoint map of %s", ip, node)
	return 0
}

// waitIdentity waits until pod ref (on node, seen from other) has an
// identity for which different(id) holds, everywhere: the endpoint, its
// endpoint map entries and the other node's ipcache for both addresses.
// It returns that identity.
func waitIdentity(t *testing.T, labName, node, other, ref string, different func(uint32) bool) uint32 {
	t.Helper()
	var id uint32
	eventually(t, 30*time.Second, "identity of "+ref, func() string {
		ep := endpointOf(t, labName, node, ref)
		id = ep.Identity
		if !different(id) {
			return fmt.Sprintf("endpoint still has identity %d", id)
		}
		for _, ip := range []string{ep.IPv4, ep.IPv6} {
			if got := endpointMapIdentity(t, labName, node, ip); got != id {
				return fmt.Sprintf("endpoint map of %s: %s has identity %d, endpoint %d", node, ip, got, id)
			}
			if got, ok := ipcacheIdentity(t, labName, other, ip); !ok || got != id {
				return fmt.Sprintf("ipcache of %s: %s has identity %d (present %v), endpoint %d", other, ip, got, ok, id)
			}
		}
		return ""
	})
	return id
}

// waitReach waits until from -> to connects (want) or is refused.
func waitReach(t *testing.T, labName, from, to string, want bool) {
	t.Helper()
	eventually(t, 30*time.Second, fmt.Sprintf("%s -> %s connected=%v", from, to, want), func() string {
		if got := probe(t, labName, from, to); got != want {
			return fmt.Sprintf("connected=%v", got)
		}
		return ""
	})
}

// TestRelabel: a policy lets only app=frontend reach catalog:80. Pods
// relabelled to app=frontend (toolbox on catalog's node, debug on the other)
// get through; relabelled back they are denied again, with their first
// identity back. A namespace label selected by a NetworkPolicy works the
// same way.
func TestRelabel(t *testing.T) {
	name := newLab(t)
	up(t, name, exampleTopology)
	applyYAML(t, name, relabelPolicy)
	checkPolicy(t, name, true)
	if probe(t, name, "tools/debug", "catalog:80/tcp") {
		t.Fatal("debug reaches catalog:80 with the policy in force")
	}

	toolbox0 := endpointOf(t, name, "n2", "tools/toolbox").Identity
	debug0 := endpointOf(t, name, "n1", "tools/debug").Identity
	frontend := endpointOf(t, name, "n1", "shop/frontend").Identity

	t.Run("pod", func(t *testing.T) {
		setLabels(t, name, "pod", "tools/toolbox", map[string]string{"app": "frontend"})
		id := waitIdentity(t, name, "n2", "n1", "tools/toolbox", func(id uint32) bool { return id != toolbox0 })
		if id == frontend {
			// Different namespaces: the label sets differ.
			t.Errorf("toolbox (tools) got the identity %d of frontend (shop)", id)
		}
		waitReach(t, name, "tools/toolbox", "catalog:80/tcp", true)
		if probe(t, name, "tools/toolbox", "catalog:81/tcp") {
			t.Error("relabelled toolbox reaches catalog:81, the policy allows port 80 only")
		}

		// Cross-node: catalog's node learns debug's new identity from the
		// announcement.
		setLabels(t, name, "pod", "tools/debug", map[string]string{"app": "frontend"})
		did := waitIdentity(t, name, "n1", "n2", "tools/debug", func(id uint32) bool { return id != debug0 })
		if did != id {
			t.Errorf("debug and toolbox have the same labels but identities %d and %d", did, id)
		}
		waitReach(t, name, "tools/debug", "catalog:80/tcp", true)

		// Back: the first identities, denied again.
		setLabels(t, name, "pod", "tools/toolbox", map[string]string{"app": "toolbox"})
		setLabels(t, name, "pod", "tools/debug", map[string]string{"app": "debug"})
		if got := waitIdentity(t, name, "n2", "n1", "tools/toolbox", func(id uint32) bool { return id == toolbox0 }); got != toolbox0 {
			t.Errorf("toolbox relabelled back: identity %d, want %d", got, toolbox0)
		}
		waitIdentity(t, name, "n1", "n2", "tools/debug", func(id uint32) bool { return id == debug0 })
		waitReach(t, name, "tools/toolbox", "catalog:80/tcp", false)
		waitReach(t, name, "tools/debug", "catalog:80/tcp", false)
		checkPolicy(t, name, true)
	})

	t.Run("namespace", func(t *testing.T) {
		applyYAML(t, name, `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: catalog-from-trusted, namespace: shop}
spec:
  podSelector: {matchLabels: {app: catalog}}
  ingress:
  - from: [{namespaceSelector: {matchLabels: {trust: high}}}]
    ports: [{port: 80, protocol: TCP}]
`)
		setLabels(t, name, "namespace", "tools", map[string]string{"trust": "high"})
		waitIdentity(t, name, "n2", "n1", "tools/toolbox", func(id uint32) bool { return id != toolbox0 })
		waitIdentity(t, name, "n1", "n2", "tools/debug", func(id uint32) bool { return id != debug0 })
		waitReach(t, name, "tools/toolbox", "catalog:80/tcp", true)
		waitReach(t, name, "tools/debug", "catalog:80/tcp", true)

		setLabels(t, name, "namespace", "tools", map[string]string{})
		waitIdentity(t, name, "n2", "n1", "tools/toolbox", func(id uint32) bool { return id == toolbox0 })
		waitIdentity(t, name, "n1", "n2", "tools/debug", func(id uint32) bool { return id == debug0 })
		waitReach(t, name, "tools/toolbox", "catalog:80/tcp", false)
		waitReach(t, name, "tools/debug", "catalog:80/tcp", false)
	})

	t.Run("agent-restart", func(t *testing.T) {
		// The new identity is persisted: a restarted agent keeps it. A
		// relabel while the agent is down is picked up when it is back.
		setLabels(t, name, "pod", "tools/toolbox", map[string]string{"app": "frontend"})
		id := waitIdentity(t, name, "n2", "n1", "tools/toolbox", func(id uint32) bool { return id != toolbox0 })
		mustLumen(t, name, "lab", "restart-agent", "n2")
		if got := endpointOf(t, name, "n2", "tools/toolbox").Identity; got != id {
			t.Errorf("after a restart toolbox has identity %d, want %d", got, id)
		}
		waitReach(t, name, "tools/toolbox", "catalog:80/tcp", true)

		killAgent(t, name, "n2")
		setLabels(t, name, "pod", "tools/toolbox", map[string]string{"app": "toolbox"})
		mustLumen(t, name, "lab", "restart-agent", "n2")
		waitIdentity(t, name, "n2", "n1", "tools/toolbox", func(id uint32) bool { return id == toolbox0 })
		waitReach(t, name, "tools/toolbox", "catalog:80/tcp", false)
		checkPolicy(t, name, true)
	})
}
