package resource

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

const goodManifest = `# a namespace and two pods
apiVersion: v1
kind: Namespace
metadata:
  name: prod
  labels: {team: blue}
---
apiVersion: v1
kind: Pod
metadata:
  name: web
  labels:
    app: web
    example.com/tier: front
spec:
  nodeName: n1
  containers:
  - name: web
    image: nginx
    ports:
    - containerPort: 80
      name: http
    - {containerPort: 53, protocol: UDP}
--- # the second pod is JSON
{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "db", "namespace": "prod"},
 "spec": {"containers": [{"name": "db"}]}}
---
...
`

func TestDecodeGood(t *testing.T) {
	objs, err := testKinds.Decode("good.yaml", []byte(goodManifest))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, o := range objs {
		got = append(got, o.String())
	}
	if want := []string{"Namespace prod", "Pod default/web", "Pod prod/db"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("objects = %q, want %q", got, want)
	}
	if l := objs[0].Metadata.Labels; l["team"] != "blue" || l[MetadataNameLabel] != "prod" {
		t.Errorf("namespace labels = %v, want team and the metadata.name label", l)
	}
	pod, err := PodOf(&objs[1])
	if err != nil {
		t.Fatal(err)
	}
	want := []ContainerPort{{Name: "http", ContainerPort: 80, Protocol: "TCP"}, {ContainerPort: 53, Protocol: "UDP"}}
	if !reflect.DeepEqual(pod.Ports(), want) || pod.Spec.NodeName != "n1" || pod.Labels["example.com/tier"] != "front" {
		t.Errorf("pod = %+v, ports %+v", pod, pod.Ports())
	}
}

func TestDecodeErrors(t *testing.T) {
	pod := func(meta, spec string) string {
		return "apiVersion: v1\nkind: Pod\nmetadata: " + meta + "\nspec: " + spec + "\n"
	}
	okSpec := `{containers: [{name: c}]}`
	for _, tc := range []struct{ doc, want string }{
		{pod("{name: web}", `{containers: [{name: c, ports: [{containerPort: 80}, {containerPort: 70000}]}]}`),
			"x.yaml:1: Pod default/web: spec.containers[0].ports[1].containerPort: invalid value 70000: must be between 1 and 65535"},
		{pod("{name: web}", `{containers: [{name: c, ports: [{containerPort: 0}]}]}`),
			"spec.containers[0].ports[0].containerPort: invalid value 0: must be between 1 and 65535"},
		{pod("{name: web}", `{containers: [{name: c, ports: [{containerPort: 1, protocol: ICMP}]}]}`),
			`spec.containers[0].ports[0].protocol: unsupported value "ICMP": supported values: "TCP", "UDP", "SCTP"`},
		{pod("{name: web}", `{containers: [{name: c, ports: [{containerPort: 1, name: HTTP}]}]}`),
			`spec.containers[0].ports[0].name: invalid value "HTTP"`},
		{pod("{name: web}", `{containers: [{name: c}, {name: c}]}`), `spec.containers[1].name: duplicate value "c"`},
		{pod("{name: web}", `{containers: []}`), "Pod default/web: spec.containers: required value"},
		{pod("{name: web}", `{containers: [{name: c, ports: [{containerPort: "80"}]}]}`),
			"spec.containers.ports.containerPort: invalid value: must be an integer, not string"},
		{pod("{name: web}", `{containers: [{name: c, hostNetwork: true}]}`), `spec: unknown field "hostNetwork"`},
		{pod("{name: Web_1}", okSpec), `Pod default/Web_1: metadata.name: invalid value "Web_1": a lowercase RFC 1123 subdomain`},
		{pod("{name: web, namespace: a.b}", okSpec), `Pod a.b/web: metadata.namespace: invalid value "a.b"`},
		{pod("{name: web, labels: {-x: v}}", okSpec), `metadata.labels: invalid value "-x": name part must`},
		{pod("{name: web, labels: {x: -y}}", okSpec), `metadata.labels[x]: invalid value "-y"`},
		{pod("{name: web, labels: {x: "+strings.Repeat("a", 64)+"}}", okSpec), `must be no more than 63 characters`},
		{pod("{name: web, lables: {x: v}}", okSpec), `metadata: unknown field "lables"`},
		{pod("{}", okSpec), "Pod default/<no name>: metadata.name: required value"},
		{"apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nsepc: {}\n", `Pod default/web: unknown field "sepc"`},
		{"apiVersion: v1\nkind: Namespace\nmetadata: {name: a.b}\n", `Namespace a.b: metadata.name: invalid value "a.b"`},
		{"apiVersion: v1\nkind: Widget\nmetadata: {name: w}\n", `unknown kind "Widget" (apiVersion "v1"); known kinds: v1 Namespace, v1 Pod`},
		{"apiVersion: apps/v1\nkind: Pod\nmetadata: {name: w}\n", `kind Pod: unsupported apiVersion "apps/v1": want "v1"`},
		{"kind: Pod\nmetadata: {name: w}\n", "Pod w: apiVersion: required value"},
		{"apiVersion: [v1]\nkind: Pod\n", "apiVersion: invalid value: must be a string, not array"},
		{"- a\n- b\n", "must be an object"},
		{"a: [\n", "x.yaml:1: invalid YAML"},
	} {
		_, err := testKinds.Decode("x.yaml", []byte(tc.doc))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("testKinds.Decode(%q)\n  error: %v\n  want:  %s", tc.doc, err, tc.want)
		}
	}
}

// A bad document anywhere rejects the whole file, and every bad document is
// reported with its line.
func TestDecodeAllOrNothing(t *testing.T) {
	in := "apiVersion: v1\nkind: Namespace\nmetadata: {name: ok}\n---\n\n# bad one\napiVersion: v1\nkind: Namespace\nmetadata: {name: Bad}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: p}\n"
	objs, err := testKinds.Decode("f.yaml", []byte(in))
	if objs != nil || err == nil {
		t.Fatalf("Decode = %v, %v; want no objects and an error", objs, err)
	}
	for _, want := range []string{"f.yaml:7: Namespace Bad: metadata.name", "f.yaml:11: Pod default/p: spec.containers: required value"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
}

func TestDecodeEmpty(t *testing.T) {
	objs, err := testKinds.Decode("e.yaml", []byte("---\n# nothing\n---\n"))
	if err != nil || len(objs) != 0 {
		t.Fatalf("Decode = %v, %v; want nothing", objs, err)
	}
}

func TestKeys(t *testing.T) {
	if k := Key("Pod", "default", "web"); k != "/lumen/v1/resources/Pod/default/web" {
		t.Errorf("Key = %s", k)
	}
	if k := Key("Namespace", "", "prod"); k != "/lumen/v1/resources/Namespace/_/prod" {
		t.Errorf("Key = %s", k)
	}
	kind, ns, name, ok := ParseKey("/lumen/v1/resources/Namespace/_/prod")
	if !ok || kind != "Namespace" || ns != "" || name != "prod" {
		t.Errorf("ParseKey = %s %q %s %v", kind, ns, name, ok)
	}
	if _, _, _, ok := ParseKey("/lumen/v1/resources/Pod/x"); ok {
		t.Error("ParseKey accepted a short key")
	}
}

func TestResolveKind(t *testing.T) {
	for _, n := range []string{"pod", "Pods", "po", "Pod"} {
		if k, err := testKinds.ResolveKind(n); err != nil || k.Kind != "Pod" {
			t.Errorf("testKinds.ResolveKind(%q) = %v, %v", n, k, err)
		}
	}
	if k, err := testKinds.ResolveKind("ns"); err != nil || k.Kind != "Namespace" {
		t.Errorf("testKinds.ResolveKind(ns) = %v, %v", k, err)
	}
	if _, err := testKinds.ResolveKind("widgets"); err == nil {
		t.Error("testKinds.ResolveKind(widgets) succeeded")
	}
}

func FuzzDecode(f *testing.F) {
	f.Add([]byte(goodManifest))
	f.Add([]byte("apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec: {containers: [{name: c, ports: [{containerPort: 70000}]}]}\n"))
	f.Add([]byte("apiVersion: v1\nkind: Namespace\nmetadata: {name: x, annotations: {a/b: c}}\nstatus: {}\n---\n"))
	f.Add([]byte(`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"a"},"spec":null}`))
	f.Add([]byte("--- &a [*a]\n"))
	f.Add([]byte("...\n---\n- 1\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		objs, err := testKinds.Decode("fuzz", data)
		if err != nil {
			return
		}
		// What Decode accepts survives the store round trip unchanged, and
		// validating it again changes nothing.
		for _, o := range objs {
			b, err := json.Marshal(o)
			if err != nil {
				t.Fatalf("marshal %s: %v", &o, err)
			}
			back, err := Unmarshal(b)
			if err != nil {
				t.Fatalf("unmarshal %s: %v", b, err)
			}
			if err := testKinds.Validate(back); err != nil {
				t.Fatalf("revalidating %s: %v", b, err)
			}
			b2, _ := json.Marshal(back)
			if string(b) != string(b2) {
				t.Fatalf("round trip changed the object:\n%s\n%s", b, b2)
			}
		}
	})
}
