// Tests of the Helm chart with the real helm CLI (hack/build-helm.sh).
package helm_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/lumen-net/lumen/internal/testutil"
)

const helmVersion = "v4.3.2" // hack/build-helm.sh's

// helmBin is the helm CLI built by hack/build-helm.sh ($LUMEN_HELM wins);
// without it the test skips, except in CI.
func helmBin(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("LUMEN_HELM"); p != "" {
		return p
	}
	cache := os.Getenv("LUMEN_CACHE")
	if cache == "" {
		base := os.Getenv("XDG_CACHE_HOME")
		if base == "" {
			home, _ := os.UserHomeDir()
			base = filepath.Join(home, ".cache")
		}
		cache = filepath.Join(base, "lumen")
	}
	p := filepath.Join(cache, "helm", helmVersion, "helm")
	if _, err := os.Stat(p); err != nil {
		testutil.Skip(t, "helm CLI missing: run hack/build-helm.sh ("+err.Error()+")")
	}
	return p
}

func helm(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(helmBin(t), args...)
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+t.TempDir(), "HELM_CONFIG_HOME="+t.TempDir(), "HELM_DATA_HOME="+t.TempDir())
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if err != nil {
		return out.String(), &helmError{err, errb.String() + out.String()}
	}
	return out.String(), nil
}

type helmError struct {
	err error
	out string
}

func (e *helmError) Error() string { return e.err.Error() + ": " + e.out }

func TestChartLint(t *testing.T) {
	if out, err := helm(t, "lint", "--strict", "lumen"); err != nil {
		t.Fatalf("helm lint: %v\n%s", err, out)
	}
	if out, err := helm(t, "lint", "--strict", "lumen", "--set", "k8sServiceHost=10.0.0.1,routingMode=tunnel,bgp.enabled=true,socketLB.enabled=true,operator.replicas=2"); err != nil {
		t.Fatalf("helm lint with features on: %v\n%s", err, out)
	}
}

// deploy/manifests/lumen.yaml is what hack/render-manifests.sh makes now.
func TestRenderedManifestsCurrent(t *testing.T) {
	helmBin(t)
	out := filepath.Join(t.TempDir(), "lumen.yaml")
	cmd := exec.Command("../../hack/render-manifests.sh", out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("render: %v\n%s", err, b)
	}
	got, _ := os.ReadFile(out)
	want, err := os.ReadFile("../manifests/lumen.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("deploy/manifests/lumen.yaml is stale: run hack/render-manifests.sh")
	}
}

// The chart's CRDs are deploy/crds (helm cannot reach outside the chart).
func TestChartCRDsMatch(t *testing.T) {
	src, _ := filepath.Glob("../crds/*.yaml")
	if len(src) == 0 {
		t.Fatal("no CRDs in deploy/crds")
	}
	dst, _ := filepath.Glob("lumen/crds/*.yaml")
	if len(dst) != len(src) {
		t.Fatalf("chart has %d CRDs, deploy/crds %d: cp deploy/crds/*.yaml deploy/helm/lumen/crds/", len(dst), len(src))
	}
	for _, s := range src {
		a, _ := os.ReadFile(s)
		b, err := os.ReadFile(filepath.Join("lumen/crds", filepath.Base(s)))
		if err != nil || !bytes.Equal(a, b) {
			t.Errorf("%s differs in the chart (%v): cp deploy/crds/*.yaml deploy/helm/lumen/crds/", filepath.Base(s), err)
		}
	}
}

func objects(t *testing.T, manifest string) map[string]*unstructured.Unstructured {
	t.Helper()
	out := map[string]*unstructured.Unstructured{}
	for _, doc := range strings.Split(manifest, "\n---") {
		var m map[string]any
		if err := yaml.Unmarshal([]byte(doc), &m); err != nil {
			t.Fatalf("rendered YAML: %v\n%s", err, doc)
		}
		if m == nil {
			continue
		}
		u := &unstructured.Unstructured{Object: m}
		out[u.GetKind()+"/"+u.GetName()] = u
	}
	return out
}

// Values of the main features reach the ConfigMap and the pods.
func TestChartValues(t *testing.T) {
	out, err := helm(t, "template", "lumen", "lumen", "-n", "kube-system",
		"--set", "k8sServiceHost=10.77.0.1,k8sServicePort=6443,routingMode=tunnel,policyAuditMode=true,hubble.metrics.enabled={drop,flow}",
		"--set", "perNodeHostPaths.hostPathBase=/tmp/lab/nodes,image.tag=v1,ipam.operator.clusterPoolIPv4PodCIDRList={10.244.0.0/16}")
	if err != nil {
		t.Fatal(err)
	}
	objs := objects(t, out)
	cm := objs["ConfigMap/lumen-config"]
	if cm == nil {
		t.Fatalf("no lumen-config; objects: %v", objs)
	}
	data, _, _ := unstructured.NestedStringMap(cm.Object, "data")
	for k, v := range map[string]string{"routing": "vxlan", "policy-audit-mode": "true", "hubble-metrics": "drop,flow",
		"cluster-pool-ipv4-cidr": "10.244.0.0/16", "enable-hubble": "true"} {
		if data[k] != v {
			t.Errorf("lumen-config %s = %q, want %q", k, data[k], v)
		}
	}
	kc := objs["ConfigMap/lumen-agent-kubeconfig"]
	if s, _, _ := unstructured.NestedString(kc.Object, "data", "kubeconfig"); !strings.Contains(s, "server: https://10.77.0.1:6443") {
		t.Errorf("agent kubeconfig: %s", s)
	}
	ds := objs["DaemonSet/lumen"]
	if ds == nil {
		t.Fatal("no DaemonSet lumen")
	}
	text, _ := yaml.Marshal(ds.Object)
	for _, want := range []string{
		"--state-dir=/tmp/lab/nodes/$(NODE_NAME)/var/run/lumen",
		"--bin-dir=/tmp/lab/nodes/$(NODE_NAME)/opt/cni/bin",
		"--agent-socket=/tmp/lab/nodes/$(NODE_NAME)/var/run/lumen/agent.sock",
		"--kube-apiserver-ips=10.77.0.1",
		"mountPropagation: Bidirectional",
		"image: localhost/lumen-net/lumen:v1",
		"value: 10.77.0.1", // KUBERNETES_SERVICE_HOST
	} {
		if !strings.Contains(string(text), want) {
			t.Errorf("DaemonSet lacks %q", want)
		}
	}
	// real clusters: host paths as given, CNI dirs mounted under /host
	out, err = helm(t, "template", "lumen", "lumen", "-n", "kube-system")
	if err != nil {
		t.Fatal(err)
	}
	text, _ = yaml.Marshal(objects(t, out)["DaemonSet/lumen"].Object)
	for _, want := range []string{"--state-dir=/var/run/lumen", "--bin-dir=/host/opt/cni/bin", "path: /opt/cni/bin", "path: /etc/cni/net.d"} {
		if !strings.Contains(string(text), want) {
			t.Errorf("DaemonSet (defaults) lacks %q", want)
		}
	}
}

// Bad values fail the render with the value's name.
func TestChartRejects(t *testing.T) {
	for _, c := range []struct{ set, want string }{
		{"routingMode=bogus", `routingMode: invalid value "bogus"`},
		{"routingMode=tunnel,tunnelProtocol=geneve", `tunnelProtocol: invalid value "geneve"`},
		{"ipam.mode=kubernetes", `ipam.mode: invalid value "kubernetes"`},
		{"operator.replicas=2,operator.leaderElection=false", "operator.leaderElection"},
	} {
		_, err := helm(t, "template", "lumen", "lumen", "--set", c.set)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("--set %s: %v, want an error with %q", c.set, err, c.want)
		}
	}
}
