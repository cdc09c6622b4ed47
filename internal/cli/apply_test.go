package cli

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lumen-net/lumen/internal/kvstore/kvstoretest"
)

// runLumen runs the CLI in-process and returns stdout, stderr and the error.
func runLumen(t *testing.T, stdin string, args ...string) (string, string, error) {
	t.Helper()
	root := NewRoot(nil)
	var out, errOut bytes.Buffer
	root.SetIn(strings.NewReader(stdin))
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetArgs(args)
	err := root.Execute()
	return out.String(), errOut.String(), err
}

const manifest = `apiVersion: v1
kind: Namespace
metadata: {name: prod, labels: {team: blue}}
---
apiVersion: v1
kind: Pod
metadata: {name: web, labels: {app: web}}
spec:
  nodeName: n1
  containers:
  - name: web
    ports: [{containerPort: 80}, {containerPort: 53, protocol: UDP}]
---
apiVersion: v1
kind: Pod
metadata: {name: db, namespace: prod}
spec: {containers: [{name: db}]}
`

func TestApplyGetDelete(t *testing.T) {
	ep := kvstoretest.Start(t)
	t.Setenv("LUMEN_KVSTORE", ep) // the default when --kvstore is not given
	file := filepath.Join(t.TempDir(), "m.yaml")
	if err := os.WriteFile(file, []byte(manifest), 0o644); err != nil {
		t.Fatal(err)
	}

	out, _, err := runLumen(t, "", "apply", "-f", file)
	if err != nil || out != "namespace/prod created\npod/web created\npod/db created\n" {
		t.Fatalf("apply: %q, %v", out, err)
	}
	changed := strings.Replace(manifest, "app: web", "app: www", 1)
	out, _, err = runLumen(t, changed, "apply", "-f", "-", "--kvstore", ep)
	if err != nil || out != "namespace/prod unchanged\npod/web configured\npod/db unchanged\n" {
		t.Fatalf("apply from stdin: %q, %v", out, err)
	}

	out, _, err = runLumen(t, "", "get", "pods")
	if err != nil {
		t.Fatal(err)
	}
	want := "NAME   NODE   PORTS           LABELS\nweb    n1     80/TCP,53/UDP   app=www\n"
	if out != want {
		t.Fatalf("get pods:\n%s\nwant:\n%s", out, want)
	}
	out, _, err = runLumen(t, "", "get", "po", "-A")
	if err != nil || !strings.HasPrefix(out, "NAMESPACE   NAME") || !strings.Contains(out, "prod        db ") {
		t.Fatalf("get po -A:\n%s(%v)", out, err)
	}
	out, _, err = runLumen(t, "", "get", "ns", "prod", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var ns struct {
		Kind     string
		Metadata struct{ Labels map[string]string }
	}
	if err := json.Unmarshal([]byte(out), &ns); err != nil || ns.Kind != "Namespace" || ns.Metadata.Labels["team"] != "blue" {
		t.Fatalf("get ns prod -o json: %s (%v)", out, err)
	}
	out, _, err = runLumen(t, "", "get", "pods", "-n", "prod", "-o", "json")
	var list struct{ Items []json.RawMessage }
	if err != nil || json.Unmarshal([]byte(out), &list) != nil || len(list.Items) != 1 {
		t.Fatalf("get pods -n prod -o json: %s (%v)", out, err)
	}
	_, stderr, err := runLumen(t, "", "get", "pods", "-n", "empty")
	if err != nil || stderr != "No resources found in empty namespace.\n" {
		t.Fatalf("get pods -n empty: %q, %v", stderr, err)
	}
	if _, _, err := runLumen(t, "", "get", "pod", "nope"); err == nil || !strings.Contains(err.Error(), `pods "nope" not found`) {
		t.Fatalf("get pod nope: %v", err)
	}

	out, _, err = runLumen(t, "", "delete", "pod", "web")
	if err != nil || out != "pod/web deleted\n" {
		t.Fatalf("delete pod web: %q, %v", out, err)
	}
	out, _, err = runLumen(t, "", "delete", "-f", file)
	if err == nil || !strings.Contains(err.Error(), `pods "web" not found`) || out != "pod/db deleted\nnamespace/prod deleted\n" {
		t.Fatalf("delete -f: %q, %v", out, err)
	}
	if _, _, err := runLumen(t, "", "delete", "-f", file, "--ignore-not-found"); err != nil {
		t.Fatalf("delete --ignore-not-found: %v", err)
	}
}

func TestApplyInvalidWritesNothing(t *testing.T) {
	ep := kvstoretest.Start(t)
	bad := manifest + "---\napiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec: {containers: [{name: c, ports: [{containerPort: 70000}]}]}\n"
	_, _, err := runLumen(t, bad, "apply", "-f", "-", "--kvstore", ep)
	want := "<stdin>:19: Pod default/web: spec.containers[0].ports[0].containerPort: invalid value 70000: must be between 1 and 65535"
	if err == nil || err.Error() != want {
		t.Fatalf("apply bad manifest:\n  error: %v\n  want:  %s", err, want)
	}
	_, stderr, err := runLumen(t, "", "get", "ns", "--kvstore", ep)
	if err != nil || stderr != "No resources found.\n" {
		t.Fatalf("after a rejected apply: %q, %v", stderr, err)
	}
}

func TestKVStoreUnreachable(t *testing.T) {
	ep := "unix://" + filepath.Join(t.TempDir(), "etcd.sock")
	_, _, err := runLumen(t, "", "get", "pods", "--kvstore", ep)
	if err == nil || !strings.Contains(err.Error(), "kvstore "+ep+" not reachable") {
		t.Fatalf("get with no store: %v", err)
	}
	t.Setenv("LUMEN_KVSTORE", "")
	_, _, err = runLumen(t, "", "get", "pods", "--lab", "lmn-no-such-lab")
	if err == nil || !strings.Contains(err.Error(), "unix:///run/lumen-lab/lmn-no-such-lab/etcd.sock not reachable") {
		t.Fatalf("get with the default lab store: %v", err)
	}
}

// TestApplyFailingLateWritesNothing: documents that are valid on their own
// but cannot be stored (too large for the store, in a namespace that does
// not exist) fail the whole apply before its first write, whatever their
// place in the file.
func TestApplyFailingLateWritesNothing(t *testing.T) {
	ep := kvstoretest.Start(t)
	big := "---\napiVersion: v1\nkind: Pod\nmetadata: {name: big, annotations: {blob: \"" + strings.Repeat("x", 1_600_000) + "\"}}\nspec: {containers: [{name: c}]}\n"
	policy := func(ns string) string {
		return "---\napiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: p, namespace: " + ns + "}\nspec:\n  endpointSelector: {}\n  ingress: [{}]\n"
	}
	cases := []struct {
		name, third string
		want        []string
	}{
		{"too large", big, []string{"Pod default/big", "more than the store's limit of 1500000"}},
		{"missing namespace", policy("nowhere"), []string{"CiliumNetworkPolicy nowhere/p", `namespaces "nowhere" not found`}},
	}
	for _, tc := range cases {
		file := filepath.Join(t.TempDir(), "multi.yaml")
		if err := os.WriteFile(file, []byte(manifest+tc.third), 0o644); err != nil {
			t.Fatal(err)
		}
		out, _, err := runLumen(t, "", "apply", "-f", file, "--kvstore", ep)
		if err == nil {
			t.Fatalf("%s: apply succeeded: %s", tc.name, out)
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q does not say %q", tc.name, err, w)
			}
		}
		for _, kind := range []string{"ns", "pods"} {
			_, stderr, err := runLumen(t, "", "get", kind, "-A", "--kvstore", ep)
			if err != nil || stderr != "No resources found.\n" {
				t.Errorf("%s: after the failed apply, get %s -A: %q, %v", tc.name, kind, stderr, err)
			}
		}
	}
	// The namespace created by the same apply, or existing before, or one
	// that always exists, is fine.
	file := filepath.Join(t.TempDir(), "ok.yaml")
	if err := os.WriteFile(file, []byte(manifest+policy("prod")+strings.Replace(policy("default"), "name: p,", "name: q,", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, _, err := runLumen(t, "", "apply", "-f", file, "--kvstore", ep); err != nil {
		t.Fatalf("apply with the namespace in the batch: %s %v", out, err)
	}
	if out, _, err := runLumen(t, policy("prod"), "apply", "-f", "-", "--kvstore", ep); err != nil || !strings.Contains(out, "unchanged") {
		t.Fatalf("apply into the existing namespace: %q %v", out, err)
	}
}
