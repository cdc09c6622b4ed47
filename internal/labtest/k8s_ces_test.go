package labtest

import (
	"context"
	"fmt"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/lumen-net/lumen/internal/api"
	"github.com/lumen-net/lumen/internal/k8s"
)

// TestKubernetesLabCES: lumen-operator batches the CiliumEndpoints into
// CiliumEndpointSlices and the agents build their ipcache from the slices.
func TestKubernetesLabCES(t *testing.T) {
	name, st := k8sLab(t, "--ces")
	dyn := labDynamic(t, name)
	eventually(t, 60*time.Second, "CiliumEndpointSlices", func() string {
		l, err := dyn.Resource(k8s.CiliumEndpointSlices).List(context.Background(), metav1.ListOptions{})
		if err != nil {
			return err.Error()
		}
		in := map[string]int{}
		for _, ces := range l.Items {
			ns, _ := ces.Object["namespace"].(string)
			eps, _ := ces.Object["endpoints"].([]any)
			in[ns] += len(eps)
		}
		if in["shop"] != 4 || in["tools"] != 2 {
			return fmt.Sprintf("endpoints in slices by namespace: %v, want shop 4, tools 2", in)
		}
		return ""
	})
	// Node n2 knows frontend (on n1) with frontend's identity: from a slice.
	var frontendIP string
	for _, p := range st.Pods {
		if p.Name == "frontend" {
			frontendIP = p.IPv4
		}
	}
	var id uint32
	for _, e := range listEndpoints(t, name, "n1") {
		if e.PodName == "frontend" {
			id = e.Identity
		}
	}
	eventually(t, 30*time.Second, "n2's ipcache", func() string {
		var rows []api.BPFIPCache
		decode(t, mustLumen(t, name, "--node", "n2", "bpf", "ipcache", "list", "-o", "json"), &rows)
		for _, r := range rows {
			if r.Prefix == frontendIP+"/32" {
				if r.Identity != id {
					return fmt.Sprintf("frontend %s has identity %d on n2, want %d", frontendIP, r.Identity, id)
				}
				return ""
			}
		}
		return "frontend " + frontendIP + " not in n2's ipcache"
	})
	// A restarted agent republishes its endpoints with its address, so the
	// slices keep naming its node and n2 keeps frontend.
	mustLumen(t, name, "lab", "restart-agent", "n1")
	eventually(t, 30*time.Second, "n2's ipcache after n1's restart", func() string {
		var rows []api.BPFIPCache
		decode(t, mustLumen(t, name, "--node", "n2", "bpf", "ipcache", "list", "-o", "json"), &rows)
		for _, r := range rows {
			if r.Prefix == frontendIP+"/32" && r.Identity == id && r.Tunnel == "" {
				return ""
			}
		}
		return "frontend " + frontendIP + " missing from n2's ipcache"
	})
	// An egress named port resolves on the destination's node: cart (n1)
	// does not watch catalog's Pod (n2), its slice carries the port.
	kubectl(t, name, cartEgressAdminPolicy, "apply", "-f", "-")
	waitReach(t, name, "shop/cart", "catalog:80/tcp", false)
	waitReach(t, name, "shop/cart", "catalog:81/tcp", true)
	kubectl(t, name, "", "delete", "cnp", "-n", "shop", "cart-to-catalog-admin")
	waitReach(t, name, "shop/cart", "catalog:80/tcp", true)

	kubectl(t, name, k8sCatalogPolicy, "apply", "-f", "-")
	checkPolicy(t, name, true)
	if probe(t, name, "shop/cart", "catalog:80/tcp") {
		t.Errorf("cart (n1) -> catalog (n2) allowed: the policy allows frontend only")
	}
}

func listEndpoints(t *testing.T, labName, node string) []api.Endpoint {
	t.Helper()
	var eps []api.Endpoint
	decode(t, mustLumen(t, labName, "--node", node, "endpoint", "list", "-o", "json"), &eps)
	return eps
}

// cartEgressAdminPolicy lets cart reach catalog's port named admin (81/tcp
// in the example topology) and nothing else.
const cartEgressAdminPolicy = `apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: cart-to-catalog-admin, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: cart}}
  egress:
  - toEndpoints: [{matchLabels: {app: catalog}}]
    toPorts: [{ports: [{port: admin, protocol: TCP}]}]
`
