package crds

import (
	"reflect"
	"slices"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// The kinds Lumen relies on, with Cilium's versions, scopes and short names.
var want = map[string]struct {
	kind, version, scope string
	shortNames           []string
}{
	"ciliumnetworkpolicies.cilium.io":            {"CiliumNetworkPolicy", "v2", "Namespaced", []string{"cnp", "ciliumnp"}},
	"ciliumclusterwidenetworkpolicies.cilium.io": {"CiliumClusterwideNetworkPolicy", "v2", "Cluster", []string{"ccnp"}},
	"ciliumendpoints.cilium.io":                  {"CiliumEndpoint", "v2", "Namespaced", []string{"cep", "ciliumep"}},
	"ciliumendpointslices.cilium.io":             {"CiliumEndpointSlice", "v2alpha1", "Cluster", []string{"ces"}},
	"ciliumidentities.cilium.io":                 {"CiliumIdentity", "v2", "Cluster", []string{"ciliumid"}},
	"ciliumnodes.cilium.io":                      {"CiliumNode", "v2", "Cluster", []string{"cn", "ciliumn"}},
	"ciliumegressgatewaypolicies.cilium.io":      {"CiliumEgressGatewayPolicy", "v2", "Cluster", nil},
	"ciliumbgppeeringpolicies.cilium.io":         {"CiliumBGPPeeringPolicy", "v2alpha1", "Cluster", []string{"bgpp"}},
}

func TestAll(t *testing.T) {
	all, err := All()
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, crd := range all {
		name := crd.GetName()
		w, ok := want[name]
		if !ok {
			t.Errorf("unexpected CRD %s", name)
			continue
		}
		seen[name] = true
		str := func(path ...string) string {
			s, _, _ := unstructured.NestedString(crd.Object, path...)
			return s
		}
		if g := str("spec", "group"); g != "cilium.io" {
			t.Errorf("%s: group %q", name, g)
		}
		if k := str("spec", "names", "kind"); k != w.kind {
			t.Errorf("%s: kind %q, want %q", name, k, w.kind)
		}
		if p := str("spec", "names", "plural"); p+".cilium.io" != name {
			t.Errorf("%s: plural %q does not match the name", name, p)
		}
		if s := str("spec", "scope"); s != w.scope {
			t.Errorf("%s: scope %q, want %q", name, s, w.scope)
		}
		sn, _, _ := unstructured.NestedStringSlice(crd.Object, "spec", "names", "shortNames")
		if !slices.Equal(sn, w.shortNames) {
			t.Errorf("%s: shortNames %q, want %q", name, sn, w.shortNames)
		}
		versions, _, _ := unstructured.NestedSlice(crd.Object, "spec", "versions")
		if len(versions) != 1 {
			t.Fatalf("%s: %d versions, want 1", name, len(versions))
		}
		v := versions[0].(map[string]any)
		if v["name"] != w.version || v["served"] != true || v["storage"] != true {
			t.Errorf("%s: version %v served %v storage %v, want %s served and stored", name, v["name"], v["served"], v["storage"], w.version)
		}
		if _, ok, _ := unstructured.NestedMap(v, "schema", "openAPIV3Schema", "properties"); !ok {
			t.Errorf("%s: no schema properties", name)
		}
		// Only the policies have a status subresource: agents write a
		// CiliumEndpoint's status with a plain create or update.
		_, hasStatus, _ := unstructured.NestedMap(v, "subresources", "status")
		if wantStatus := w.kind == "CiliumNetworkPolicy" || w.kind == "CiliumClusterwideNetworkPolicy"; hasStatus != wantStatus {
			t.Errorf("%s: status subresource %v, want %v", name, hasStatus, wantStatus)
		}
	}
	for name := range want {
		if !seen[name] {
			t.Errorf("CRD %s missing", name)
		}
	}
}

// The clusterwide policy has the namespaced one's rule schema; only the
// selector rules differ (nodeSelector is allowed, one selector required).
func TestPolicySchemasAgree(t *testing.T) {
	all, err := All()
	if err != nil {
		t.Fatal(err)
	}
	rule := func(kind string) (spec, specs map[string]any) {
		for _, crd := range all {
			if k, _, _ := unstructured.NestedString(crd.Object, "spec", "names", "kind"); k != kind {
				continue
			}
			v := crd.Object["spec"].(map[string]any)["versions"].([]any)[0].(map[string]any)
			props, _, _ := unstructured.NestedMap(v, "schema", "openAPIV3Schema", "properties")
			spec = props["spec"].(map[string]any)
			specs = props["specs"].(map[string]any)["items"].(map[string]any)
			for _, m := range []map[string]any{spec, specs} {
				delete(m, "description")
				delete(m, "required")
				delete(m, "x-kubernetes-validations")
			}
			return spec, specs
		}
		t.Fatalf("no CRD of kind %s", kind)
		return nil, nil
	}
	cnp, cnps := rule("CiliumNetworkPolicy")
	ccnp, ccnps := rule("CiliumClusterwideNetworkPolicy")
	if !reflect.DeepEqual(cnp, ccnp) {
		t.Error("the spec schemas of CiliumNetworkPolicy and CiliumClusterwideNetworkPolicy differ")
	}
	if !reflect.DeepEqual(cnp, cnps) || !reflect.DeepEqual(ccnp, ccnps) {
		t.Error("spec and specs[] have different schemas")
	}
}

func TestDecodeRejects(t *testing.T) {
	for _, in := range []string{
		"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n",
		"apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\n",
		"{",
	} {
		if _, err := Decode([]byte(in)); err == nil {
			t.Errorf("Decode(%q) accepted it", in)
		}
	}
}
