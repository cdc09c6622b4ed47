package k8s

import (
	"context"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/lumen-net/lumen/internal/resource"
)

// SetPolicyStatus publishes this node's warnings about a policy (by store
// key; nil: none any more). CiliumNetworkPolicy and
// CiliumClusterwideNetworkPolicy get them in their status, as Cilium's
// agents report there per node: status.nodes.<node> = {ok, enforcing,
// lastUpdated, warnings}, server-side applied by a field manager per node
// so that nodes never overwrite each other. A NetworkPolicy has no status:
// it gets a Warning event (kubectl describe shows it).
func (s *Store) SetPolicyStatus(ctx context.Context, key string, warnings []string) error {
	rest, ok := strings.CutPrefix(key, resource.Prefix)
	parts := strings.Split(rest, "/")
	if !ok || len(parts) != 3 {
		return fmt.Errorf("policy status: %q is not a resource key", key)
	}
	kindName, ns, name := parts[0], parts[1], parts[2]
	if ns == "_" {
		ns = ""
	}
	kind, err := s.opts.Kinds.ResolveKind(kindName)
	if err != nil {
		return err
	}
	node := s.opts.NodeName
	switch kind.Kind {
	case "NetworkPolicy":
		if len(warnings) == 0 {
			return nil
		}
		return s.policyEvent(ctx, ns, name, warnings)
	case "CiliumNetworkPolicy", "CiliumClusterwideNetworkPolicy":
	default:
		return fmt.Errorf("policy status: %s is not a policy kind", kind.Kind)
	}
	st := map[string]any{"ok": true, "enforcing": true, "lastUpdated": time.Now().UTC().Format(time.RFC3339)}
	if len(warnings) > 0 {
		ws := make([]any, len(warnings))
		for i, w := range warnings {
			ws[i] = w
		}
		st["warnings"] = ws
	}
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": kind.APIVersion, "kind": kind.Kind,
		"metadata": map[string]any{"name": name},
		"status":   map[string]any{"nodes": map[string]any{node: st}},
	}}
	if ns != "" {
		u.SetNamespace(ns)
	}
	_, err = s.c.Dynamic.Resource(gvrOf(kind)).Namespace(ns).ApplyStatus(ctx, name, u,
		metav1.ApplyOptions{FieldManager: "lumen-agent-status-" + node, Force: true})
	if err != nil {
		return fmt.Errorf("writing the status of %s %s: %w", kind.Kind, strings.TrimPrefix(ns+"/"+name, "/"), err)
	}
	return nil
}

// policyEvent records a Warning event on a NetworkPolicy.
func (s *Store) policyEvent(ctx context.Context, ns, name string, warnings []string) error {
	now := metav1.NewTime(time.Now())
	ev := &corev1.Event{
		ObjectMeta: metav1.ObjectMeta{GenerateName: name + ".", Namespace: ns},
		InvolvedObject: corev1.ObjectReference{
			APIVersion: "networking.k8s.io/v1", Kind: "NetworkPolicy", Namespace: ns, Name: name,
		},
		Type: corev1.EventTypeWarning, Reason: "PolicyWarning",
		Message:        fmt.Sprintf("node %s: %s", s.opts.NodeName, strings.Join(warnings, "; ")),
		Source:         corev1.EventSource{Component: "lumen-agent", Host: s.opts.NodeName},
		FirstTimestamp: now, LastTimestamp: now, Count: 1,
	}
	if _, err := s.c.Core.CoreV1().Events(ns).Create(ctx, ev, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("recording a warning event on NetworkPolicy %s/%s: %w", ns, name, err)
	}
	return nil
}
