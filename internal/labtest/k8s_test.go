package labtest

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"

	"github.com/lumen-net/lumen/internal/controlplane"
	"github.com/lumen-net/lumen/internal/k8s"
	"github.com/lumen-net/lumen/internal/lab"
	"github.com/lumen-net/lumen/internal/lab/labpath"
	"github.com/lumen-net/lumen/internal/testutil"
)

// Kubernetes-mode labs (`lumen lab up --k8s`): a real kube-apiserver and
// kube-controller-manager, objects created with the real kubectl.

// k8sLab brings up the example topology against a real control plane.
func k8sLab(t *testing.T, extra ...string) (string, *lab.Report) {
	t.Helper()
	if _, err := controlplane.BinDir(); err != nil {
		testutil.Skip(t, err.Error())
	}
	name := newLab(t)
	st := up(t, name, exampleTopology, append([]string{"--k8s"}, extra...)...)
	checkStatus(t, st, 6, lab.RoutingNative)
	return name, st
}

// kubectl runs the real kubectl against the lab.
func kubectl(t *testing.T, labName, stdin string, args ...string) string {
	t.Helper()
	r := lumenStdin(t, labName, stdin, append([]string{"lab", "kubectl"}, args...)...)
	if r.code != 0 {
		t.Fatalf("kubectl %s: exit %d\n%s%s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

func labDynamic(t *testing.T, labName string) dynamic.Interface {
	t.Helper()
	st, err := lab.LoadState(labName)
	if err != nil {
		t.Fatal(err)
	}
	cp, err := controlplane.Open(st.K8s.Dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	dyn, err := dynamic.NewForConfig(cp.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	return dyn
}

// probe reports whether from reaches to (pod:port/proto) within 2 s.
func probe(t *testing.T, labName, from, to string) bool {
	t.Helper()
	r := lumen(t, labName, "lab", "probe", from, to, "--timeout", "2s")
	if r.code > 1 {
		t.Fatalf("probe %s -> %s: exit %d %s", from, to, r.code, r.stderr)
	}
	return r.code == 0
}

// eventually retries check until it returns "" or the timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, check func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		msg := check()
		if msg == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s", what, msg)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

const k8sCatalogPolicy = `apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: catalog-from-frontend, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: catalog}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: frontend}}]
    toPorts: [{ports: [{port: "80", protocol: TCP}]}]
`

// checkPolicy expects exactly frontend -> catalog:80 allowed into catalog.
func checkPolicy(t *testing.T, name string, want bool) {
	t.Helper()
	eventually(t, 30*time.Second, "policy", func() string {
		if !probe(t, name, "shop/frontend", "catalog:80/tcp") {
			return "frontend -> catalog:80 denied"
		}
		if got := probe(t, name, "tools/toolbox", "catalog:80/tcp"); got == want {
			return fmt.Sprintf("toolbox -> catalog:80 connected=%v with the policy in force=%v", got, want)
		}
		return ""
	})
}

func TestKubernetesLab(t *testing.T) {
	name, st := k8sLab(t)
	ctx := context.Background()
	dyn := labDynamic(t, name)

	t.Run("objects", func(t *testing.T) {
		// Every pod is Running with its IP, published as a CiliumEndpoint
		// whose identity is a CiliumIdentity; nodes as CiliumNodes.
		out := kubectl(t, name, "", "get", "pods", "-A", "-o", "jsonpath={range .items[*]}{.metadata.name}={.status.phase}/{.status.podIP} {end}")
		for _, p := range st.Pods {
			if !strings.Contains(out, p.Name+"=Running/"+p.IPv4) {
				t.Errorf("pod %s not Running with %s: %s", p.Name, p.IPv4, out)
			}
		}
		eventually(t, 30*time.Second, "CiliumEndpoints", func() string {
			ceps, err := dyn.Resource(k8s.CiliumEndpoints).List(ctx, metav1.ListOptions{})
			if err != nil {
				return err.Error()
			}
			ids, err := dyn.Resource(k8s.CiliumIdentities).List(ctx, metav1.ListOptions{})
			if err != nil {
				return err.Error()
			}
			known := map[string]bool{}
			for _, i := range ids.Items {
				known[i.GetName()] = true
			}
			if len(ceps.Items) != len(st.Pods) {
				return fmt.Sprintf("%d CiliumEndpoints, want %d", len(ceps.Items), len(st.Pods))
			}
			for _, c := range ceps.Items {
				id, _, _ := unstructured.NestedInt64(c.Object, "status", "identity", "id")
				if !known[fmt.Sprint(id)] {
					return fmt.Sprintf("CiliumEndpoint %s/%s: identity %d has no CiliumIdentity", c.GetNamespace(), c.GetName(), id)
				}
				if len(c.GetOwnerReferences()) != 1 || c.GetOwnerReferences()[0].Kind != "Pod" {
					return fmt.Sprintf("CiliumEndpoint %s/%s not owned by its pod: %v", c.GetNamespace(), c.GetName(), c.GetOwnerReferences())
				}
			}
			return ""
		})
		cns, err := dyn.Resource(k8s.CiliumNodes).List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if len(cns.Items) != 2 {
			t.Errorf("%d CiliumNodes, want 2", len(cns.Items))
		}
		for _, cn := range cns.Items {
			cidrs, _, _ := unstructured.NestedStringSlice(cn.Object, "spec", "ipam", "podCIDRs")
			if len(cidrs) != 2 {
				t.Errorf("CiliumNode %s pod CIDRs %v", cn.GetName(), cidrs)
			}
		}
	})

	t.Run("service", func(t *testing.T) {
		// A Service from kubectl: the real EndpointSlice controller makes its
		// slices, every agent load-balances over all three backends.
		kubectl(t, name, `apiVersion: v1
kind: Service
metadata: {name: backend, namespace: shop}
spec:
  selector: {tier: backend}
  ipFamilyPolicy: RequireDualStack
  ports: [{name: http, port: 8080, targetPort: 80, protocol: TCP}]
`, "apply", "-f", "-")
		ips := strings.Fields(kubectl(t, name, "", "get", "svc", "-n", "shop", "backend", "-o", "jsonpath={.spec.clusterIPs[0]} {.spec.clusterIPs[1]}"))
		if len(ips) != 2 {
			t.Fatalf("cluster IPs %v", ips)
		}
		backends := []string{"shop/cart", "shop/catalog", "shop/checkout"}
		for _, node := range []string{"n1", "n2"} {
			for fam, ip := range map[int]string{4: ips[0], 6: ips[1]} {
				var want []string
				for _, b := range backends {
					want = append(want, podAddr(t, name, b, fam, 80))
				}
				waitBackends(t, name, node, hostPortString(ip, 8080), "TCP", want)
			}
		}
		names := podNames(t, name)
		c := startClient(t, name, "tools/debug")
		for _, ip := range ips {
			r := c.must("many tcp %s 30", hostPortString(ip, 8080))
			got := countsByPod(names, r.Counts)
			t.Logf("debug -> %s: %v", ip, got)
			if len(r.Fails) > 0 {
				t.Errorf("%d of 30 connections to %s failed: %v", len(r.Fails), ip, r.Fails)
			}
			for _, b := range backends {
				if got[b] == 0 {
					t.Errorf("backend %s never answered on %s: %v", b, ip, got)
				}
			}
		}
		kubectl(t, name, "", "delete", "svc", "-n", "shop", "backend")
	})

	t.Run("egress-named-port-across-nodes", func(t *testing.T) {
		// cart (n1) does not watch catalog's Pod (n2): catalog's
		// CiliumEndpoint carries its named ports.
		kubectl(t, name, cartEgressAdminPolicy, "apply", "-f", "-")
		waitReach(t, name, "shop/cart", "catalog:80/tcp", false)
		waitReach(t, name, "shop/cart", "catalog:81/tcp", true)
		kubectl(t, name, "", "delete", "cnp", "-n", "shop", "cart-to-catalog-admin")
		waitReach(t, name, "shop/cart", "catalog:80/tcp", true)
	})

	t.Run("policy", func(t *testing.T) {
		checkPolicy(t, name, false)
		kubectl(t, name, k8sCatalogPolicy, "apply", "-f", "-")
		checkPolicy(t, name, true)
		if probe(t, name, "shop/frontend", "catalog:81/tcp") {
			t.Errorf("frontend -> catalog:81 allowed, the policy allows port 80 only")
		}
	})

	t.Run("malformed-object-fails-closed", func(t *testing.T) {
		// The CRD schema accepts it, Lumen's decoder does not (port 90 with
		// an endPort below it): the agents still apply it, failing closed
		// (checkout is isolated at ingress, the broken rule allows
		// nothing), the object says why, and the policy in force stays.
		kubectl(t, name, `apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: bad, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: checkout}}
  ingress:
  - toPorts: [{ports: [{port: "90", endPort: 80, protocol: TCP}]}]
`, "apply", "-f", "-")
		eventually(t, 30*time.Second, "agent log and condition", func() string {
			b, _ := os.ReadFile(labpath.LogDir(name) + "/agent-n2.log")
			if !strings.Contains(string(b), "policy not fully enforced") || !strings.Contains(string(b), "shop/bad") {
				return "no log line about the malformed policy shop/bad"
			}
			cond := kubectl(t, name, "", "get", "cnp", "-n", "shop", "bad", "-o", `jsonpath={.status.conditions[?(@.type=="Enforced")].reason}`)
			if cond != "InvalidField" {
				return "condition reason " + cond
			}
			return ""
		})
		checkPolicy(t, name, true)
		waitReach(t, name, "tools/toolbox", "shop/checkout:80/tcp", false)
		kubectl(t, name, "", "delete", "cnp", "-n", "shop", "bad")
		waitReach(t, name, "tools/toolbox", "shop/checkout:80/tcp", true)
	})

	t.Run("apiserver-down", func(t *testing.T) {
		// The API server stopped for a minute: the agents keep enforcing
		// the last known state and flush nothing; when it returns they
		// resync and follow new changes.
		cp, err := controlplane.Open(lab.K8sDir(name), nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := cp.StopAPIServer(); err != nil {
			t.Fatal(err)
		}
		restarted := false
		defer func() {
			if !restarted {
				_ = cp.StartAPIServer(context.Background())
			}
		}()
		down := 60 * time.Second
		if testing.Short() {
			down = 15 * time.Second
		}
		end := time.Now().Add(down)
		rounds := 0
		for time.Now().Before(end) {
			if !probe(t, name, "shop/frontend", "catalog:80/tcp") {
				t.Errorf("API server down: allowed frontend -> catalog:80 broke")
			}
			if probe(t, name, "tools/toolbox", "catalog:80/tcp") {
				t.Errorf("API server down: denied toolbox -> catalog:80 connected")
			}
			if !probe(t, name, "tools/toolbox", "shop/checkout:80/tcp") {
				t.Errorf("API server down: cross-node toolbox -> checkout broke")
			}
			rounds++
			time.Sleep(2 * time.Second)
		}
		t.Logf("API server down for %s: %d rounds of probes", down, rounds)
		if err := cp.StartAPIServer(context.Background()); err != nil {
			t.Fatal(err)
		}
		restarted = true
		kubectl(t, name, "", "delete", "cnp", "-n", "shop", "catalog-from-frontend")
		checkPolicy(t, name, false)
	})

	t.Run("agent-restart-keeps-identities", func(t *testing.T) {
		before := identityNames(t, dyn)
		mustLumen(t, name, "lab", "restart-agent", "n1")
		mustLumen(t, name, "lab", "restart-agent", "n2")
		if !probe(t, name, "shop/frontend", "catalog:80/tcp") {
			t.Errorf("frontend -> catalog after the restarts")
		}
		if after := identityNames(t, dyn); !slices.Equal(before, after) {
			t.Errorf("identities churned across agent restarts: %v -> %v", before, after)
		}
	})

	// The control plane's processes go with the lab.
	cp, err := controlplane.Open(lab.K8sDir(name), nil)
	if err != nil {
		t.Fatal(err)
	}
	pids := cp.PIDs()
	checkDown(t, name)
	for what, pid := range pids {
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err == nil && strings.Contains(string(b), what) {
			t.Errorf("%s (pid %d) still runs after lab down", what, pid)
		}
	}
}

func identityNames(t *testing.T, dyn dynamic.Interface) []string {
	t.Helper()
	l, err := dyn.Resource(k8s.CiliumIdentities).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, i := range l.Items {
		out = append(out, i.GetName()+"/"+string(i.GetUID()))
	}
	sort.Strings(out)
	return out
}

func hostPortString(ip string, port int) string {
	if strings.Contains(ip, ":") {
		return fmt.Sprintf("[%s]:%d", ip, port)
	}
	return fmt.Sprintf("%s:%d", ip, port)
}

// TestKubernetesLabKVStore: identities, endpoints and nodes in etcd
// (identity-allocation-mode=kvstore), resources from the API server.
func TestKubernetesLabKVStore(t *testing.T) {
	name, _ := k8sLab(t, "--k8s-kvstore")
	dyn := labDynamic(t, name)
	ceps, err := dyn.Resource(k8s.CiliumEndpoints).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(ceps.Items) != 0 {
		t.Errorf("kvstore mode wrote %d CiliumEndpoints", len(ceps.Items))
	}
	var eps []map[string]any
	decode(t, mustLumen(t, name, "--node", "n1", "endpoint", "list", "-o", "json"), &eps)
	b, _ := json.Marshal(eps)
	if !strings.Contains(string(b), "identity") {
		t.Errorf("endpoints: %s", b)
	}
	if !probe(t, name, "tools/toolbox", "shop/frontend:80/tcp") {
		t.Errorf("cross-node connectivity in kvstore mode")
	}
	kubectl(t, name, k8sCatalogPolicy, "apply", "-f", "-")
	checkPolicy(t, name, true)
}
