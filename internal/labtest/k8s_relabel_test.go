package labtest

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestKubernetesRelabel is TestRelabel against a real API server: `kubectl
// label` of a pod and of its namespace moves the endpoint to the identity
// of its new labels, its CiliumEndpoint and the other node's ipcache
// follow, and so does policy.
func TestKubernetesRelabel(t *testing.T) {
	name, _ := k8sLab(t)
	kubectl(t, name, relabelPolicy, "apply", "-f", "-")
	checkPolicy(t, name, true)
	toolbox0 := endpointOf(t, name, "n2", "tools/toolbox").Identity

	// cepIdentity is the identity toolbox's CiliumEndpoint announces.
	cepIdentity := func() string {
		r := lumen(t, name, "lab", "kubectl", "get", "ciliumendpoints", "-n", "tools", "toolbox", "-o", "jsonpath={.status.identity.id}")
		return strings.TrimSpace(r.stdout)
	}
	waitCEP := func(id uint32) {
		t.Helper()
		eventually(t, 30*time.Second, "CiliumEndpoint of toolbox", func() string {
			if got := cepIdentity(); got != fmt.Sprint(id) {
				return fmt.Sprintf("identity %q, want %d", got, id)
			}
			return ""
		})
	}

	kubectl(t, name, "", "label", "pod", "-n", "tools", "toolbox", "app=frontend", "--overwrite")
	id := waitIdentity(t, name, "n2", "n1", "tools/toolbox", func(id uint32) bool { return id != toolbox0 })
	waitCEP(id)
	waitReach(t, name, "tools/toolbox", "catalog:80/tcp", true)

	kubectl(t, name, "", "label", "pod", "-n", "tools", "toolbox", "app=toolbox", "--overwrite")
	waitIdentity(t, name, "n2", "n1", "tools/toolbox", func(id uint32) bool { return id == toolbox0 })
	waitCEP(toolbox0)
	waitReach(t, name, "tools/toolbox", "catalog:80/tcp", false)

	// A namespace label selected by a NetworkPolicy.
	kubectl(t, name, `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: catalog-from-trusted, namespace: shop}
spec:
  podSelector: {matchLabels: {app: catalog}}
  ingress:
  - from: [{namespaceSelector: {matchLabels: {trust: high}}}]
    ports: [{port: 80, protocol: TCP}]
`, "apply", "-f", "-")
	kubectl(t, name, "", "label", "namespace", "tools", "trust=high")
	waitIdentity(t, name, "n2", "n1", "tools/toolbox", func(id uint32) bool { return id != toolbox0 })
	waitReach(t, name, "tools/toolbox", "catalog:80/tcp", true)
	kubectl(t, name, "", "label", "namespace", "tools", "trust-")
	waitIdentity(t, name, "n2", "n1", "tools/toolbox", func(id uint32) bool { return id == toolbox0 })
	waitReach(t, name, "tools/toolbox", "catalog:80/tcp", false)
	checkPolicy(t, name, true)
}
