package resource

import (
	"context"
	"strings"
	"testing"

	"github.com/lumen-net/lumen/internal/kvstore/kvstoretest"
)

func actions(rs []Result) string {
	var s []string
	for _, r := range rs {
		s = append(s, r.Object.Ref()+" "+string(r.Action))
	}
	return strings.Join(s, ", ")
}

func mustDecode(t *testing.T, s string) []Object {
	t.Helper()
	objs, err := testKinds.Decode("test.yaml", []byte(s))
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

func TestApplyGetListDelete(t *testing.T) {
	c := kvstoretest.Client(t)
	ctx := context.Background()

	rs, err := testKinds.Apply(ctx, c, mustDecode(t, goodManifest))
	if err != nil {
		t.Fatal(err)
	}
	if got := actions(rs); got != "namespace/prod created, pod/web created, pod/db created" {
		t.Fatalf("first apply: %s", got)
	}
	changed := strings.Replace(goodManifest, "app: web", "app: web2", 1)
	rs, err = testKinds.Apply(ctx, c, mustDecode(t, changed))
	if err != nil {
		t.Fatal(err)
	}
	if got := actions(rs); got != "namespace/prod unchanged, pod/web configured, pod/db unchanged" {
		t.Fatalf("second apply: %s", got)
	}

	pod, err := GetPod(ctx, c, "default", "web")
	if err != nil {
		t.Fatal(err)
	}
	if pod.Labels["app"] != "web2" || len(pod.Ports()) != 2 {
		t.Errorf("GetPod = %+v", pod)
	}
	if kv, ok, _ := c.Get(ctx, "/lumen/v1/resources/Namespace/_/prod"); !ok || !strings.Contains(string(kv.Value), `"team":"blue"`) {
		t.Errorf("stored namespace = %s (found %v)", kv.Value, ok)
	}
	labels, err := NamespaceLabels(ctx, c, "prod")
	if err != nil || labels["team"] != "blue" {
		t.Errorf("NamespaceLabels(prod) = %v, %v", labels, err)
	}
	labels, err = NamespaceLabels(ctx, c, "never-applied")
	if err != nil || len(labels) != 1 || labels[MetadataNameLabel] != "never-applied" {
		t.Errorf("NamespaceLabels(never-applied) = %v, %v", labels, err)
	}
	if _, err := GetPod(ctx, c, "default", "nope"); !IsNotFound(err) || !strings.Contains(err.Error(), `pods "nope" not found`) {
		t.Errorf("GetPod(nope) = %v", err)
	}

	podKind, _ := testKinds.ResolveKind("pods")
	all, err := List(ctx, c, podKind, "")
	if err != nil || len(all) != 2 {
		t.Fatalf("List all pods = %d, %v", len(all), err)
	}
	inProd, err := List(ctx, c, podKind, "prod")
	if err != nil || len(inProd) != 1 || inProd[0].Metadata.Name != "db" {
		t.Fatalf("List prod pods = %v, %v", inProd, err)
	}

	// Deleting the namespace takes its pods along; deleting again finds nothing.
	ns := mustDecode(t, "apiVersion: v1\nkind: Namespace\nmetadata: {name: prod}\n")
	rs, err = testKinds.Delete(ctx, c, ns)
	if err != nil || actions(rs) != "namespace/prod deleted" {
		t.Fatalf("Delete = %s, %v", actions(rs), err)
	}
	if _, err := GetPod(ctx, c, "prod", "db"); !IsNotFound(err) {
		t.Errorf("pod prod/db survived its namespace: %v", err)
	}
	if _, err := GetPod(ctx, c, "default", "web"); err != nil {
		t.Errorf("pod default/web went away with namespace prod: %v", err)
	}
	rs, err = testKinds.Delete(ctx, c, ns)
	if err != nil || actions(rs) != "namespace/prod not found" {
		t.Fatalf("Delete again = %s, %v", actions(rs), err)
	}
}

func TestApplyRejectsInvalidBeforeWriting(t *testing.T) {
	c := kvstoretest.Client(t)
	objs := mustDecode(t, goodManifest)
	objs[2].Spec = []byte(`{"containers":[{"name":"db","ports":[{"containerPort":70000}]}]}`)
	if _, err := testKinds.Apply(context.Background(), c, objs); err == nil {
		t.Fatal("Apply accepted an invalid object")
	}
	kvs, _, err := c.List(context.Background(), Prefix)
	if err != nil || len(kvs) != 0 {
		t.Fatalf("store has %d keys after a rejected apply (%v)", len(kvs), err)
	}
}
