package labtest

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// TestKubernetesPolicyWarnings: in Kubernetes mode a policy's warnings
// (here a named port no pod has) reach the policy: the status of a
// CiliumNetworkPolicy (status.nodes.<node>.warnings, from the node of the
// endpoint concerned), a Warning event on a NetworkPolicy.
func TestKubernetesPolicyWarnings(t *testing.T) {
	name, _ := k8sLab(t)
	dyn := labDynamic(t, name)
	kubectl(t, name, `apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: warn, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: checkout}}
  egress:
  - toEndpoints: [{}]
    toPorts: [{ports: [{port: nope, protocol: TCP}]}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: warn-np, namespace: shop}
spec:
  podSelector: {matchLabels: {app: checkout}}
  policyTypes: [Egress]
  egress:
  - ports: [{port: nope-np}]
`, "apply", "-f", "-")
	cnp := schema.GroupVersionResource{Group: "cilium.io", Version: "v2", Resource: "ciliumnetworkpolicies"}
	eventually(t, 60*time.Second, "CiliumNetworkPolicy status", func() string {
		u, err := dyn.Resource(cnp).Namespace("shop").Get(context.Background(), "warn", metav1.GetOptions{})
		if err != nil {
			return err.Error()
		}
		nodes, _, _ := unstructured.NestedMap(u.Object, "status", "nodes")
		for node := range nodes {
			ws, _, _ := unstructured.NestedStringSlice(u.Object, "status", "nodes", node, "warnings")
			for _, w := range ws {
				if strings.Contains(w, `named port "nope" not found on any peer the rule selects`) && strings.Contains(w, "(endpoints shop/checkout)") {
					return ""
				}
			}
		}
		return fmt.Sprintf("no warning about the named port in status: %v", u.Object["status"])
	})
	eventually(t, 60*time.Second, "NetworkPolicy event", func() string {
		out := kubectl(t, name, "", "get", "events", "-n", "shop", "--field-selector", "involvedObject.kind=NetworkPolicy,involvedObject.name=warn-np",
			"-o", "jsonpath={range .items[*]}{.type}/{.reason}: {.message}{\"\\n\"}{end}")
		if strings.Contains(out, "Warning/PolicyWarning: ") && strings.Contains(out, `named port "nope-np" not found`) {
			return ""
		}
		return "no PolicyWarning event: " + out
	})
	// Fixed: the node's warnings go away.
	kubectl(t, name, "", "delete", "networkpolicy", "-n", "shop", "warn-np")
	kubectl(t, name, `apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: warn, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: checkout}}
  egress:
  - toEndpoints: [{}]
    toPorts: [{ports: [{port: "80", protocol: TCP}]}]
`, "apply", "-f", "-")
	eventually(t, 60*time.Second, "CiliumNetworkPolicy status cleared", func() string {
		u, err := dyn.Resource(cnp).Namespace("shop").Get(context.Background(), "warn", metav1.GetOptions{})
		if err != nil {
			return err.Error()
		}
		nodes, _, _ := unstructured.NestedMap(u.Object, "status", "nodes")
		for node := range nodes {
			if ws, _, _ := unstructured.NestedStringSlice(u.Object, "status", "nodes", node, "warnings"); len(ws) > 0 {
				return fmt.Sprintf("node %s still reports %q", node, ws)
			}
		}
		return ""
	})
}
