package k8s_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/yaml"

	"github.com/lumen-net/lumen/internal/k8s"
	"github.com/lumen-net/lumen/internal/kinds"
	"github.com/lumen-net/lumen/internal/kvstore"
	"github.com/lumen-net/lumen/internal/resource"
)

var (
	cnpGVR  = schema.GroupVersionResource{Group: "cilium.io", Version: "v2", Resource: "ciliumnetworkpolicies"}
	ccnpGVR = schema.GroupVersionResource{Group: "cilium.io", Version: "v2", Resource: "ciliumclusterwidenetworkpolicies"}
)

// collector keeps the latest store value of every key a ListAndWatch
// delivers.
type collector struct {
	mu   sync.Mutex
	vals map[string]string
}

func (c *collector) follow(ch <-chan kvstore.Update) {
	for u := range ch {
		c.mu.Lock()
		if u.Resync {
			c.vals = map[string]string{}
			for _, kv := range u.KVs {
				c.vals[kv.Key] = string(kv.Value)
			}
		}
		for _, e := range u.Events {
			if e.Type == kvstore.EventDelete {
				delete(c.vals, e.KV.Key)
			} else {
				c.vals[e.KV.Key] = string(e.KV.Value)
			}
		}
		c.mu.Unlock()
	}
}

func (c *collector) get(key string) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok := c.vals[key]
	return v, ok
}

func waitFor(t *testing.T, what string, check func() string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		msg := check()
		if msg == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s", what, msg)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func readExample(t *testing.T, file string) *unstructured.Unstructured {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "cilium-examples", file))
	if err != nil {
		t.Fatal(err)
	}
	return yamlObject(t, string(b))
}

func yamlObject(t *testing.T, doc string) *unstructured.Unstructured {
	t.Helper()
	js, err := yaml.YAMLToJSON([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON(js); err != nil {
		t.Fatal(err)
	}
	return u
}

// TestPolicyStatusAgainstAPIServer: Cilium's example policies through a
// real kube-apiserver. The ones with fields Lumen does not implement reach
// the store (never skipped) and get a status condition and an event naming
// the field; the ones Lumen implements (icmps, fromRequires, the host
// policy) get neither; an update adding an L7 rule takes effect.
func TestPolicyStatusAgainstAPIServer(t *testing.T) {
	c := apiClients(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	const ns = "shop"
	if _, err := c.Core.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	// Two agents' stores: both report, one event per problem results.
	var cnps, ccnps collector
	for _, node := range []string{"n1", "n2"} {
		st := k8s.NewStore(ctx, c, k8s.StoreOptions{NodeName: node, Kinds: kinds.Registry()})
		go cnps.follow(st.ListAndWatch(ctx, resource.KindPrefix("CiliumNetworkPolicy")))
		go ccnps.follow(st.ListAndWatch(ctx, resource.KindPrefix("CiliumClusterwideNetworkPolicy")))
	}

	type example struct {
		file, name string
		field      string // "" when Lumen enforces all of it
	}
	examples := []example{
		{"l7.yaml", "rule1", "spec.ingress[1].toPorts[0].rules"},
		{"fqdn.yaml", "to-fqdn", "spec.egress[1].toFQDNs"},
		{"l4_sni.yaml", "l4-sni-rule", "spec.egress[0].toPorts[0].serverNames"},
		{"icmp.yaml", "icmp-rule", ""},
		{"requires.yaml", "requires-rule", ""},
		{"demo-host-policy.yaml", "demo-host-policy", ""},
	}
	for _, e := range examples {
		u := readExample(t, e.file)
		gvr, where := cnpGVR, ns
		if u.GetKind() == "CiliumClusterwideNetworkPolicy" {
			gvr, where = ccnpGVR, ""
		}
		if _, err := c.Dynamic.Resource(gvr).Namespace(where).Create(ctx, u, metav1.CreateOptions{}); err != nil {
			t.Fatalf("%s: %v", e.file, err)
		}
	}

	condition := func(gvr schema.GroupVersionResource, namespace, name string) (map[string]any, error) {
		u, err := c.Dynamic.Resource(gvr).Namespace(namespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return nil, err
		}
		conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
		for _, x := range conds {
			if m, ok := x.(map[string]any); ok && m["type"] == k8s.ConditionEnforced {
				return m, nil
			}
		}
		return nil, nil
	}
	events := func(namespace, name string) ([]corev1.Event, error) {
		l, err := c.Core.CoreV1().Events(namespace).List(ctx, metav1.ListOptions{
			FieldSelector: "involvedObject.name=" + name + ",reason=" + k8s.EventPolicyNotEnforced})
		if err != nil {
			return nil, err
		}
		return l.Items, nil
	}

	for _, e := range examples {
		gvr, where, evNS := cnpGVR, ns, ns
		if e.file == "demo-host-policy.yaml" {
			gvr, where, evNS = ccnpGVR, "", "default"
		}
		key := resource.Key(map[bool]string{true: "CiliumNetworkPolicy", false: "CiliumClusterwideNetworkPolicy"}[where != ""], where, e.name)
		coll := &cnps
		if where == "" {
			coll = &ccnps
		}
		waitFor(t, e.file+" in the store", func() string {
			if _, ok := coll.get(key); !ok {
				return "not delivered (skipped?)"
			}
			return ""
		})
		if e.field == "" {
			continue
		}
		waitFor(t, e.file+" status and event", func() string {
			cond, err := condition(gvr, where, e.name)
			switch {
			case err != nil:
				return err.Error()
			case cond == nil:
				return "no Enforced condition"
			case cond["status"] != "False" || cond["reason"] != k8s.ReasonUnsupportedField || !strings.Contains(fmt.Sprint(cond["message"]), e.field):
				return fmt.Sprintf("condition %v, want False/%s naming %s", cond, k8s.ReasonUnsupportedField, e.field)
			}
			evs, err := events(evNS, e.name)
			if err != nil {
				return err.Error()
			}
			if len(evs) != 1 {
				return fmt.Sprintf("%d events, want one (two agents report the same problem)", len(evs))
			}
			ev := evs[0]
			if ev.Type != corev1.EventTypeWarning || !strings.Contains(ev.Message, e.field) || ev.InvolvedObject.Kind != "CiliumNetworkPolicy" || ev.InvolvedObject.UID == "" {
				return fmt.Sprintf("event %+v", ev)
			}
			return ""
		})
	}
	// The policies Lumen enforces fully got nothing (checked after the
	// others were reported: the reporters had the time).
	for _, e := range examples {
		if e.field != "" {
			continue
		}
		gvr, where, evNS := cnpGVR, ns, ns
		if e.file == "demo-host-policy.yaml" {
			gvr, where, evNS = ccnpGVR, "", "default"
		}
		if cond, err := condition(gvr, where, e.name); err != nil || cond != nil {
			t.Errorf("%s: condition %v, %v; want none", e.file, cond, err)
		}
		if evs, err := events(evNS, e.name); err != nil || len(evs) != 0 {
			t.Errorf("%s: events %v, %v; want none", e.file, evs, err)
		}
	}

	// A valid policy updated to add an L7 rule: the new version reaches the
	// store (the old one must not silently stay) and is reported; fixed, the
	// condition turns True.
	upd := yamlObject(t, `apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: upd, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - toPorts: [{ports: [{port: "80", protocol: TCP}]}]
`)
	created, err := c.Dynamic.Resource(cnpGVR).Namespace(ns).Create(ctx, upd, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	updKey := resource.Key("CiliumNetworkPolicy", ns, "upd")
	waitFor(t, "valid policy in the store", func() string {
		if _, ok := cnps.get(updKey); !ok {
			return "not delivered"
		}
		return ""
	})
	rules := []any{map[string]any{"ports": []any{map[string]any{"port": "80", "protocol": "TCP"}},
		"rules": map[string]any{"http": []any{map[string]any{"method": "GET", "path": "/public"}}}}}
	ingress, _, _ := unstructured.NestedSlice(created.Object, "spec", "ingress")
	ingress[0].(map[string]any)["toPorts"] = rules
	if err := unstructured.SetNestedSlice(created.Object, ingress, "spec", "ingress"); err != nil {
		t.Fatal(err)
	}
	updated, err := c.Dynamic.Resource(cnpGVR).Namespace(ns).Update(ctx, created, metav1.UpdateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the update in the store and reported", func() string {
		v, _ := cnps.get(updKey)
		if !strings.Contains(v, `"/public"`) {
			return "the store still holds the old version: " + v
		}
		cond, err := condition(cnpGVR, ns, "upd")
		if err != nil || cond == nil || cond["status"] != "False" || !strings.Contains(fmt.Sprint(cond["message"]), "spec.ingress[0].toPorts[0].rules") ||
			fmt.Sprint(cond["observedGeneration"]) != fmt.Sprint(updated.GetGeneration()) {
			return fmt.Sprintf("condition %v, %v", cond, err)
		}
		return ""
	})
	fixed, err := c.Dynamic.Resource(cnpGVR).Namespace(ns).Get(ctx, "upd", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ingress[0].(map[string]any)["toPorts"] = []any{map[string]any{"ports": []any{map[string]any{"port": "80", "protocol": "TCP"}}}}
	if err := unstructured.SetNestedSlice(fixed.Object, ingress, "spec", "ingress"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Dynamic.Resource(cnpGVR).Namespace(ns).Update(ctx, fixed, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the fix reported", func() string {
		cond, err := condition(cnpGVR, ns, "upd")
		if err != nil || cond == nil || cond["status"] != "True" || cond["reason"] != k8s.ReasonEnforced {
			return fmt.Sprintf("condition %v, %v", cond, err)
		}
		return ""
	})

	// Malformed, not just unsupported: delivered too, reason InvalidField.
	bad := yamlObject(t, `apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: bad, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: checkout}}
  ingress:
  - toPorts: [{ports: [{port: "90", endPort: 80, protocol: TCP}]}]
`)
	if _, err := c.Dynamic.Resource(cnpGVR).Namespace(ns).Create(ctx, bad, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "malformed policy delivered and reported", func() string {
		if _, ok := cnps.get(resource.Key("CiliumNetworkPolicy", ns, "bad")); !ok {
			return "not delivered"
		}
		cond, err := condition(cnpGVR, ns, "bad")
		if err != nil || cond == nil || cond["status"] != "False" || cond["reason"] != k8s.ReasonInvalidField ||
			!strings.Contains(fmt.Sprint(cond["message"]), "spec.ingress[0].toPorts[0].ports[0].endPort") {
			return fmt.Sprintf("condition %v, %v", cond, err)
		}
		return ""
	})
}
