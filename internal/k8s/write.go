package k8s

// Writes of the Kubernetes store: nodes (CiliumNodes), endpoints and
// identities, server-side applied.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/lumen-net/lumen/internal/hubble/peer"
	"github.com/lumen-net/lumen/internal/identity"
	"github.com/lumen-net/lumen/internal/kvstore"
	"github.com/lumen-net/lumen/internal/model"
	"github.com/lumen-net/lumen/internal/resource"
)

// Put implements kvstore.Store for what an agent writes: its node, its
// endpoints and its Hubble peer announcement.
func (s *Store) Put(ctx context.Context, key string, value []byte) (int64, error) {
	switch {
	case strings.HasPrefix(key, model.NodesPrefix):
		var n model.Node
		if err := json.Unmarshal(value, &n); err != nil {
			return 0, fmt.Errorf("node announcement: %w", err)
		}
		if n.Name == s.opts.NodeName {
			s.mu.Lock()
			s.localIP = n.IPv4
			if s.localIP == "" {
				s.localIP = n.IPv6
			}
			s.mu.Unlock()
		}
		return 0, s.applyNode(ctx, n)
	case strings.HasPrefix(key, model.EndpointsPrefix):
		var ep model.Endpoint
		if err := json.Unmarshal(value, &ep); err != nil {
			return 0, fmt.Errorf("endpoint announcement: %w", err)
		}
		return 0, s.putEndpoint(ctx, ep)
	case strings.HasPrefix(key, peer.StorePrefix):
		cn := &CiliumNode{}
		cn.APIVersion, cn.Kind = CiliumNodes.GroupVersion().String(), "CiliumNode"
		cn.Name = strings.TrimPrefix(key, peer.StorePrefix)
		cn.Annotations = map[string]string{HubblePeerAnnotation: string(value)}
		return 0, s.apply(ctx, CiliumNodes, "", cn, peerFieldManager)
	case strings.HasPrefix(key, resource.Prefix):
		return 0, errors.New("resources come from the Kubernetes API in Kubernetes mode: change them with kubectl")
	}
	return 0, fmt.Errorf("no Kubernetes resource stands for %q", key)
}

// operatorFieldManager is lumen-operator's: it owns spec.ipam.podCIDRs
// unless an agent sets them statically.
const operatorFieldManager = "lumen-operator"

// applyNode applies the agent's part of its CiliumNode. Without static pod
// CIDRs it applies no spec.ipam at all: an empty "ipam: {}" from the agent
// becomes "null" once server-side apply drops the podCIDRs it owned, and
// the API server then refuses every apply ("spec.ipam: Invalid value:
// \"null\""). Pod CIDRs this agent owned from an earlier static run are
// handed to lumen-operator first, so they stay on the node (its pods use
// them) instead of being deleted with the agent's ownership.
func (s *Store) applyNode(ctx context.Context, n model.Node) error {
	cn := ciliumNodeFor(n)
	u, err := toUnstructured(cn)
	if err != nil {
		return err
	}
	if len(cn.Spec.IPAM.PodCIDRs) == 0 {
		unstructured.RemoveNestedField(u.Object, "spec", "ipam")
		if err := s.handOverPodCIDRs(ctx, n.Name); err != nil {
			return err
		}
	}
	return s.applyUnstructured(ctx, CiliumNodes, "", u, fieldManager)
}

// handOverPodCIDRs makes lumen-operator co-own the pod CIDRs of CiliumNode
// name when this agent's field manager owns them (server-side apply's
// ownership transfer: the new manager applies the same value, then the old
// one stops applying it).
func (s *Store) handOverPodCIDRs(ctx context.Context, name string) error {
	cur, err := s.c.Dynamic.Resource(CiliumNodes).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading CiliumNode %s: %w", name, err)
	}
	cidrs, _, _ := unstructured.NestedStringSlice(cur.Object, "spec", "ipam", "podCIDRs")
	if len(cidrs) == 0 || !ownsPodCIDRs(cur.GetManagedFields(), fieldManager) {
		return nil
	}
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": CiliumNodes.GroupVersion().String(), "kind": "CiliumNode",
		"metadata": map[string]any{"name": name},
		"spec":     map[string]any{"ipam": map[string]any{"podCIDRs": toAnySlice(cidrs)}},
	}}
	if err := s.applyUnstructured(ctx, CiliumNodes, "", u, operatorFieldManager); err != nil {
		return err
	}
	s.log.Info("pod CIDRs were static: lumen-operator owns them now", "ciliumnode", name, "podCIDRs", cidrs)
	return nil
}

// ownsPodCIDRs tells whether manager applied spec.ipam.podCIDRs.
func ownsPodCIDRs(mf []metav1.ManagedFieldsEntry, manager string) bool {
	for _, e := range mf {
		if e.Manager != manager || e.Operation != metav1.ManagedFieldsOperationApply || e.FieldsV1 == nil {
			continue
		}
		var f map[string]any
		if json.Unmarshal(e.FieldsV1.Raw, &f) != nil {
			continue
		}
		if _, ok, _ := unstructured.NestedFieldNoCopy(f, "f:spec", "f:ipam", "f:podCIDRs"); ok {
			return true
		}
	}
	return false
}

func toAnySlice(ss []string) []any {
	out := make([]any, len(ss))
	for i, v := range ss {
		out[i] = v
	}
	return out
}

func (s *Store) putEndpoint(ctx context.Context, ep model.Endpoint) error {
	s.mu.Lock()
	nodeIP := s.localIP
	s.mu.Unlock()
	ls := s.identityLabels(identity.ID(ep.Identity))
	if ls == nil {
		ls = identity.PodLabels(ep.Labels, ep.Namespace, nil)
	}
	cep := ciliumEndpointFor(ep, nodeIP, ls)
	// Owned by its pod, so that Kubernetes' garbage collector removes it
	// with the pod even when the agent is gone.
	if ep.PodName != "" {
		pod, err := s.c.Core.CoreV1().Pods(cep.Namespace).Get(ctx, ep.PodName, metav1.GetOptions{})
		if err == nil {
			cep.OwnerReferences = []metav1.OwnerReference{{APIVersion: "v1", Kind: "Pod", Name: pod.Name, UID: pod.UID}}
		} else if !apierrors.IsNotFound(err) {
			return fmt.Errorf("reading pod %s/%s: %w", cep.Namespace, ep.PodName, err)
		}
	}
	return s.apply(ctx, CiliumEndpoints, cep.Namespace, cep, fieldManager)
}

func (s *Store) apply(ctx context.Context, gvr schema.GroupVersionResource, ns string, obj any, manager string) error {
	u, err := toUnstructured(obj)
	if err != nil {
		return err
	}
	return s.applyUnstructured(ctx, gvr, ns, u, manager)
}

func (s *Store) applyUnstructured(ctx context.Context, gvr schema.GroupVersionResource, ns string, u *unstructured.Unstructured, manager string) error {
	unstructured.RemoveNestedField(u.Object, "metadata", "creationTimestamp")
	_, err := s.c.Dynamic.Resource(gvr).Namespace(ns).Apply(ctx, u.GetName(), u, metav1.ApplyOptions{FieldManager: manager, Force: true})
	if err != nil {
		return fmt.Errorf("applying %s %s: %w", gvr.Resource, u.GetName(), err)
	}
	return nil
}

// Delete implements kvstore.Store.
func (s *Store) Delete(ctx context.Context, key string) (bool, error) {
	switch {
	case strings.HasPrefix(key, model.EndpointsPrefix):
		rest := strings.TrimPrefix(key, model.EndpointsPrefix)
		nodeName, cid, ok := strings.Cut(rest, "/")
		if !ok {
			return false, fmt.Errorf("bad endpoint key %q", key)
		}
		list, err := s.c.Dynamic.Resource(CiliumEndpoints).List(ctx, metav1.ListOptions{LabelSelector: NodeLabel + "=" + nodeName})
		if err != nil {
			return false, fmt.Errorf("listing endpoints of %s: %w", nodeName, err)
		}
		for _, u := range list.Items {
			if c, _, _ := unstructured.NestedString(u.Object, "status", "external-identifiers", "container-id"); c != cid {
				continue
			}
			// The UID precondition keeps a new pod of the same name (a
			// StatefulSet pod moved to another node) safe.
			uid := u.GetUID()
			err := s.c.Dynamic.Resource(CiliumEndpoints).Namespace(u.GetNamespace()).Delete(ctx, u.GetName(), metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}})
			if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
				return false, nil
			}
			return err == nil, err
		}
		return false, nil
	case strings.HasPrefix(key, peer.StorePrefix):
		cn := &CiliumNode{}
		cn.APIVersion, cn.Kind = CiliumNodes.GroupVersion().String(), "CiliumNode"
		cn.Name = strings.TrimPrefix(key, peer.StorePrefix)
		return true, s.apply(ctx, CiliumNodes, "", cn, peerFieldManager)
	case strings.HasPrefix(key, model.NodesPrefix):
		err := s.c.Dynamic.Resource(CiliumNodes).Delete(ctx, strings.TrimPrefix(key, model.NodesPrefix), metav1.DeleteOptions{})
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		return err == nil, err
	}
	return false, fmt.Errorf("no Kubernetes resource stands for %q", key)
}

// CreateAll implements kvstore.Store for identity allocation: the label
// and id entries together are one CiliumIdentity, whose creation is atomic.
func (s *Store) CreateAll(ctx context.Context, kvs ...kvstore.KV) (bool, []kvstore.KV, error) {
	var labelsKey, idKey string
	var iv idValue
	for _, kv := range kvs {
		switch {
		case strings.HasPrefix(kv.Key, identity.LabelsPrefix):
			labelsKey = kv.Key
		case strings.HasPrefix(kv.Key, identity.IDsPrefix):
			idKey = kv.Key
			if err := json.Unmarshal(kv.Value, &iv); err != nil {
				return false, nil, fmt.Errorf("identity entry: %w", err)
			}
		default:
			return false, nil, fmt.Errorf("no Kubernetes resource stands for %q", kv.Key)
		}
	}
	if labelsKey == "" || idKey == "" {
		return false, nil, errors.New("CreateAll in Kubernetes mode creates identities only (labels and id entries)")
	}
	if kv, ok, err := s.Get(ctx, labelsKey); err != nil {
		return false, nil, err
	} else if ok {
		return false, []kvstore.KV{kv}, nil
	}
	ls, err := identity.ParseLabels(iv.Labels...)
	if err != nil {
		return false, nil, err
	}
	ci := &CiliumIdentity{SecurityLabels: securityLabels(ls)}
	ci.APIVersion, ci.Kind = CiliumIdentities.GroupVersion().String(), "CiliumIdentity"
	ci.Name = strings.TrimPrefix(idKey, identity.IDsPrefix) // the bare number
	u, err := toUnstructured(ci)
	if err != nil {
		return false, nil, err
	}
	unstructured.RemoveNestedField(u.Object, "metadata", "creationTimestamp")
	_, err = s.c.Dynamic.Resource(CiliumIdentities).Create(ctx, u, metav1.CreateOptions{FieldManager: fieldManager})
	if apierrors.IsAlreadyExists(err) {
		kv, ok, gerr := s.Get(ctx, idKey)
		if gerr != nil || !ok {
			return false, nil, errors.Join(err, gerr)
		}
		return false, []kvstore.KV{kv}, nil
	}
	if err != nil {
		return false, nil, fmt.Errorf("creating CiliumIdentity %s: %w", ci.Name, err)
	}
	// Make the new identity visible to Get before returning, so the next
	// allocation of the same labels on this node finds it.
	if inf, err := s.identities(ctx); err == nil {
		_ = inf.GetIndexer().Add(u)
	}
	return true, nil, nil
}
