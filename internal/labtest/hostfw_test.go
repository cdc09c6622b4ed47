package labtest

import (
	"context"
	"encoding/json"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lumen-net/lumen/internal/lab"
	"github.com/lumen-net/lumen/internal/lab/labpath"
)

// The host firewall, its audit mode and the kube-apiserver entity, driven
// as a user would: policies through `lumen apply`, connections from pods
// and from the nodes' own namespaces.

const hostFWTopology = `
kubeAPIServer: n1
nodes:
  - {name: n1, zone: a, labels: {role: control}}
  - {name: n2, zone: b, labels: {role: worker}}
pods:
  - {name: a, namespace: x, labels: {app: a}, node: n1, ports: ["80/tcp"]}
  - {name: b, namespace: x, labels: {app: b}, node: n2, ports: ["80/tcp"]}
`

const hostFWPolicy = `
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata:
  name: worker-host-fw
spec:
  nodeSelector:
    matchLabels:
      role: worker
  ingress:
  - fromEntities: [remote-node]
    toPorts:
    - ports:
      - port: "8080"
        protocol: TCP
`

// serveOnNode runs the lab's echo server in a node's namespace.
func serveOnNode(t *testing.T, labName, node, ports string) {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "lumen"), "--lab", labName, "lab", "exec", "node/"+node, "--",
		filepath.Join(binDir, "lumen"), "lab", "serve", "--tcp", ports)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
}

// probeFromNS probes target from a namespace of the lab (a node's).
func probeFromNS(t *testing.T, ns, target string) bool {
	t.Helper()
	ap := netip.MustParseAddrPort(target)
	return lab.ProbeInNS(context.Background(), ns, ap, lab.ProtoTCP, 2*time.Second) == nil
}

// waitProbe waits until a pod reaches (or stops reaching) target.
func waitProbe(t *testing.T, labName, from, target string, want bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		ok := lumen(t, labName, "lab", "probe", from, target, "--timeout", "1s").code == 0
		if ok == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("probe %s -> %s: connected=%v, want %v", from, target, ok, want)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func explain(t *testing.T, labName, from, to string) map[string]any {
	t.Helper()
	var x map[string]any
	if err := json.Unmarshal([]byte(mustLumen(t, labName, "policy", "explain", "--from", from, "--to", to, "-o", "json")), &x); err != nil {
		t.Fatal(err)
	}
	return x
}

func TestHostFirewall(t *testing.T) {
	name := newLab(t)
	up(t, name, writeTopology(t, hostFWTopology))
	serveOnNode(t, name, "n2", "8080,8081")
	n1 := labpath.NodeNS(name, "n1")
	waitUntil(t, "n2's server", func() bool { return probeFromNS(t, n1, "10.99.0.2:8081") })

	lumenStdin(t, name, hostFWPolicy, "apply", "-f", "-")
	// n1's host is a remote node for n2: 8080 allowed, 8081 not.
	waitUntil(t, "host firewall on n2", func() bool { return !probeFromNS(t, n1, "10.99.0.2:8081") })
	if !probeFromNS(t, n1, "10.99.0.2:8080") {
		t.Error("remote node to n2:8080: not connected, the policy allows it")
	}
	// A pod is not a remote node.
	waitProbe(t, name, "x/a", "10.99.0.2:8080/tcp", false)
	// Pods on n2 are not the host: the host policy does not apply to them.
	waitProbe(t, name, "x/a", "x/b:80/tcp", true)

	x := explain(t, name, "10.99.0.1", "10.99.0.2:8081/tcp")
	if x["allowed"] != false || !strings.Contains(string(mustJSON(x)), "CiliumClusterwideNetworkPolicy worker-host-fw") {
		t.Errorf("explain host n1 -> host n2:8081: %s", mustJSON(x))
	}
	x = explain(t, name, "10.99.0.1", "10.99.0.2:8080/tcp")
	if x["allowed"] != true || !strings.Contains(string(mustJSON(x)), "fromEntities[0] remote-node") {
		t.Errorf("explain host n1 -> host n2:8080: %s", mustJSON(x))
	}

	// Without the policy the node is open again.
	mustLumen(t, name, "delete", "ccnp", "worker-host-fw")
	waitUntil(t, "host firewall off", func() bool { return probeFromNS(t, n1, "10.99.0.2:8081") })
}

func TestHostFirewallAuditMode(t *testing.T) {
	name := newLab(t)
	up(t, name, writeTopology(t, `agentArgs: ["--policy-audit-mode"]`+hostFWTopology))
	serveOnNode(t, name, "n2", "8080,8081")
	n1 := labpath.NodeNS(name, "n1")
	waitUntil(t, "n2's server", func() bool { return probeFromNS(t, n1, "10.99.0.2:8081") })
	lumenStdin(t, name, hostFWPolicy, "apply", "-f", "-")
	waitUntil(t, "host firewall enforced (in audit mode)", func() bool {
		return strings.Contains(mustLumen(t, name, "--node", "n2", "status"), "1 policies") &&
			strings.Contains(string(mustJSON(explain(t, name, "10.99.0.1", "10.99.0.2:8081/tcp"))), "audit mode")
	})
	// Reported, not dropped: nobody is locked out.
	if !probeFromNS(t, n1, "10.99.0.2:8081") {
		t.Error("audit mode dropped a connection")
	}
	x := explain(t, name, "10.99.0.1", "10.99.0.2:8081/tcp")
	if x["allowed"] != false || !strings.Contains(string(mustJSON(x)), "audit mode") {
		t.Errorf("explain in audit mode: %s", mustJSON(x))
	}
}

func TestKubeAPIServerEntity(t *testing.T) {
	name := newLab(t)
	up(t, name, writeTopology(t, hostFWTopology))
	serveOnNode(t, name, "n1", "6443")
	serveOnNode(t, name, "n2", "6443")
	// b may only talk to the API server (n1's address), and only the API
	// server may connect to b.
	lumenStdin(t, name, `
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: b-apiserver-only, namespace: x}
spec:
  endpointSelector: {matchLabels: {app: b}}
  egress:
  - toEntities: [kube-apiserver]
  ingress:
  - fromEntities: [kube-apiserver]
`, "apply", "-f", "-")
	waitProbe(t, name, "x/b", "x/a:80/tcp", false)
	waitProbe(t, name, "x/b", "10.99.0.1:6443/tcp", true)
	waitProbe(t, name, "x/b", "[fd00:10:99::1]:6443/tcp", true)
	waitProbe(t, name, "x/b", "10.99.0.2:6443/tcp", false) // its own node is not the API server
	// The other direction: the API server's node reaches b, a pod does not.
	if !probeFromNS(t, labpath.NodeNS(name, "n1"), "10.200.2.2:80") {
		t.Error("kube-apiserver (n1) to b: not connected")
	}
	waitProbe(t, name, "x/a", "x/b:80/tcp", false)
	x := explain(t, name, "x/b", "10.99.0.1:6443/tcp")
	if x["allowed"] != true || !strings.Contains(string(mustJSON(x)), "kube-apiserver") {
		t.Errorf("explain b -> apiserver: %s", mustJSON(x))
	}
}

func mustJSON(v any) []byte {
	b, _ := json.Marshal(v)
	return b
}
