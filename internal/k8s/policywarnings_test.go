package k8s_test

import (
	"context"
	"reflect"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/lumen-net/lumen/internal/k8s"
	"github.com/lumen-net/lumen/internal/kinds"
	"github.com/lumen-net/lumen/internal/resource"
)

// TestSetPolicyStatus: against a real kube-apiserver, two nodes' warnings
// about one CiliumNetworkPolicy land side by side in its status and each
// node clears only its own; a NetworkPolicy gets a Warning event.
func TestSetPolicyStatus(t *testing.T) {
	c := apiClients(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if _, err := c.Core.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "z"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	cnp := schema.GroupVersionResource{Group: "cilium.io", Version: "v2", Resource: "ciliumnetworkpolicies"}
	pol := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
		"metadata": map[string]any{"name": "p", "namespace": "z"},
		"spec":     map[string]any{"endpointSelector": map[string]any{}},
	}}
	if _, err := c.Dynamic.Resource(cnp).Namespace("z").Create(ctx, pol, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	n1 := k8s.NewStore(ctx, c, k8s.StoreOptions{NodeName: "n1", Kinds: kinds.Registry()})
	n2 := k8s.NewStore(ctx, c, k8s.StoreOptions{NodeName: "n2", Kinds: kinds.Registry()})
	key := resource.Key("CiliumNetworkPolicy", "z", "p")
	if err := n1.SetPolicyStatus(ctx, key, []string{"w1a", "w1b"}); err != nil {
		t.Fatal(err)
	}
	if err := n2.SetPolicyStatus(ctx, key, []string{"w2"}); err != nil {
		t.Fatal(err)
	}
	warnings := func(node string) ([]string, bool) {
		t.Helper()
		u, err := c.Dynamic.Resource(cnp).Namespace("z").Get(ctx, "p", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		ok, found, _ := unstructured.NestedBool(u.Object, "status", "nodes", node, "ok")
		ws, _, _ := unstructured.NestedStringSlice(u.Object, "status", "nodes", node, "warnings")
		return ws, found && ok
	}
	if ws, ok := warnings("n1"); !ok || !reflect.DeepEqual(ws, []string{"w1a", "w1b"}) {
		t.Errorf("status.nodes.n1: ok=%v warnings %q", ok, ws)
	}
	if ws, ok := warnings("n2"); !ok || !reflect.DeepEqual(ws, []string{"w2"}) {
		t.Errorf("status.nodes.n2: ok=%v warnings %q", ok, ws)
	}
	if err := n1.SetPolicyStatus(ctx, key, nil); err != nil {
		t.Fatal(err)
	}
	if ws, ok := warnings("n1"); !ok || len(ws) != 0 {
		t.Errorf("after clearing, status.nodes.n1: ok=%v warnings %q", ok, ws)
	}
	if ws, _ := warnings("n2"); !reflect.DeepEqual(ws, []string{"w2"}) {
		t.Errorf("n1 clearing its warnings touched n2's: %q", ws)
	}
	// A policy that does not exist: an error, not a new object.
	if err := n1.SetPolicyStatus(ctx, resource.Key("CiliumNetworkPolicy", "z", "nope"), []string{"x"}); err == nil {
		t.Error("status of a missing policy: no error")
	}

	// NetworkPolicy: a Warning event.
	np := schema.GroupVersionResource{Group: "networking.k8s.io", Version: "v1", Resource: "networkpolicies"}
	npu := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
		"metadata": map[string]any{"name": "np", "namespace": "z"},
		"spec":     map[string]any{"podSelector": map[string]any{}},
	}}
	if _, err := c.Dynamic.Resource(np).Namespace("z").Create(ctx, npu, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := n1.SetPolicyStatus(ctx, resource.Key("NetworkPolicy", "z", "np"), []string{`spec.egress[0]: named port "web" not found`}); err != nil {
		t.Fatal(err)
	}
	evs, err := c.Core.CoreV1().Events("z").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, e := range evs.Items {
		found = found || (e.InvolvedObject.Kind == "NetworkPolicy" && e.InvolvedObject.Name == "np" && e.Type == corev1.EventTypeWarning &&
			e.Reason == "PolicyWarning" && strings.Contains(e.Message, `node n1: spec.egress[0]: named port "web" not found`))
	}
	if !found {
		t.Errorf("no PolicyWarning event on the NetworkPolicy: %+v", evs.Items)
	}
}
