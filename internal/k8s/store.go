package k8s

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/tools/cache"

	"github.com/lumen-net/lumen/internal/hubble/peer"
	"github.com/lumen-net/lumen/internal/identity"
	"github.com/lumen-net/lumen/internal/kvstore"
	"github.com/lumen-net/lumen/internal/node"
	"github.com/lumen-net/lumen/internal/resource"
)

// Field managers of the agent's server-side applies.
const (
	fieldManager     = "lumen-agent"
	peerFieldManager = "lumen-agent-hubble"
	labelsIndex      = "labels"
	ipIndex          = "ip"
)

// StoreOptions configure the Kubernetes store of one agent.
type StoreOptions struct {
	// NodeName is this agent's node; NodeIP its address, which its
	// CiliumEndpoints carry (slices name nodes by address only).
	NodeName string
	NodeIP   string
	// EndpointSlices makes the agent follow CiliumEndpointSlices (written by
	// lumen-operator) instead of every CiliumEndpoint.
	EndpointSlices bool
	Log            *slog.Logger
}

// Store presents the Kubernetes API under Lumen's store keys (see
// docs/architecture.md): resources come from their API objects, nodes from
// CiliumNodes, endpoints from CiliumEndpoints (or CiliumEndpointSlices),
// identities from CiliumIdentities and Hubble peers from an annotation of
// each CiliumNode. Resources are read-only here: users change them with
// kubectl.
type Store struct {
	c    *Clients
	opts StoreOptions
	log  *slog.Logger

	mu      sync.Mutex
	localIP string     // this node's address, for its CiliumEndpoints
	inf     *informers // one per resource kind, shared by every reader

	reporter *policyReporter // conditions and events on policies Lumen cannot fully enforce
}

var _ kvstore.Store = (*Store)(nil)

// NewStore returns the store; informers it needs run until ctx ends.
func NewStore(ctx context.Context, c *Clients, opts StoreOptions) *Store {
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	s := &Store{c: c, opts: opts, log: opts.Log.With("subsys", "k8s"), localIP: opts.NodeIP}
	if c != nil && c.Dynamic != nil {
		s.inf = newInformers(ctx, c.Dynamic)
	}
	if c != nil && c.Core != nil && c.Dynamic != nil {
		s.reporter = newPolicyReporter(ctx, c, s.log)
	}
	return s
}

// ListAndWatch implements kvstore.Store.
func (s *Store) ListAndWatch(ctx context.Context, prefix string) <-chan kvstore.Update {
	spec, err := s.watchSpec(prefix)
	if err != nil {
		s.log.Error("cannot watch", "prefix", prefix, "err", err)
		ch := make(chan kvstore.Update)
		close(ch)
		return ch
	}
	return stream(ctx, s.inf.get(spec), spec, s.log)
}

func (s *Store) watchSpec(prefix string) (watchSpec, error) {
	switch {
	case strings.HasPrefix(prefix, resource.Prefix):
		kind, ns, err := kindOfPrefix(prefix)
		if err != nil {
			return watchSpec{}, err
		}
		spec := watchSpec{gvr: gvrOf(kind), namespace: ns, convert: resourceKV}
		if policyKindNames[kind.Kind] {
			spec.convert = s.policyKV(spec.gvr)
		}
		if kind.Kind == "Pod" && s.opts.NodeName != "" {
			// Like Cilium, an agent follows only its own node's pods: other
			// nodes' endpoints come as CiliumEndpoints (or slices).
			spec.fieldSelector = "spec.nodeName=" + s.opts.NodeName
		}
		return spec, nil
	case prefix == node.NodesPrefix:
		return watchSpec{gvr: CiliumNodes, convert: nodeKV}, nil
	case prefix == node.EndpointsPrefix && s.opts.EndpointSlices:
		return watchSpec{gvr: CiliumEndpointSlices, convert: cesKVs(s.nodeNameOf)}, nil
	case prefix == node.EndpointsPrefix:
		return watchSpec{gvr: CiliumEndpoints, convert: cepKV}, nil
	case prefix == identity.IDsPrefix:
		return watchSpec{gvr: CiliumIdentities, convert: identityKV}, nil
	case prefix == peer.StorePrefix:
		return watchSpec{gvr: CiliumNodes, convert: peerKV(peer.StorePrefix)}, nil
	}
	return watchSpec{}, fmt.Errorf("no Kubernetes resource stands for %q", prefix)
}

// kindOfPrefix reads "/lumen/v1/resources/<Kind>/[<namespace>/]".
func kindOfPrefix(prefix string) (*resource.Kind, string, error) {
	rest := strings.TrimSuffix(strings.TrimPrefix(prefix, resource.Prefix), "/")
	name, ns, _ := strings.Cut(rest, "/")
	for _, k := range resource.Kinds() {
		if k.Kind == name {
			if ns == "_" {
				ns = ""
			}
			return k, ns, nil
		}
	}
	return nil, "", fmt.Errorf("unknown kind %q", name)
}

func gvrOf(k *resource.Kind) schema.GroupVersionResource {
	gv, _ := schema.ParseGroupVersion(k.APIVersion)
	return gv.WithResource(k.PluralName())
}

// Get implements kvstore.Store.
func (s *Store) Get(ctx context.Context, key string) (kvstore.KV, bool, error) {
	switch {
	case strings.HasPrefix(key, resource.Prefix):
		kindName, ns, name, ok := resource.ParseKey(key)
		if !ok {
			return kvstore.KV{}, false, fmt.Errorf("bad resource key %q", key)
		}
		k, err := resource.ResolveKind(kindName)
		if err != nil {
			return kvstore.KV{}, false, err
		}
		u, err := s.c.Dynamic.Resource(gvrOf(k)).Namespace(ns).Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return kvstore.KV{}, false, nil
		}
		if err != nil {
			return kvstore.KV{}, false, fmt.Errorf("reading %s %s/%s: %w", k.Kind, ns, name, err)
		}
		kvs, err := resourceKV(u)
		if err != nil {
			return kvstore.KV{}, false, err
		}
		return kvs[0], true, nil
	case strings.HasPrefix(key, identity.LabelsPrefix):
		inf, err := s.identities(ctx)
		if err != nil {
			return kvstore.KV{}, false, err
		}
		objs, err := inf.GetIndexer().ByIndex(labelsIndex, strings.TrimPrefix(key, identity.LabelsPrefix))
		if err != nil || len(objs) == 0 {
			return kvstore.KV{}, false, err
		}
		// Two nodes racing may have created two identities for one label
		// set (as in Cilium's CRD mode); every node picks the lowest.
		best := identity.ID(0)
		for _, o := range objs {
			if id, _, err := identityOf(o.(*unstructured.Unstructured)); err == nil && (best == 0 || id < best) {
				best = id
			}
		}
		if best == 0 {
			return kvstore.KV{}, false, nil
		}
		b, _ := json.Marshal(labelsValue{ID: best})
		return kvstore.KV{Key: key, Value: b}, true, nil
	case strings.HasPrefix(key, identity.IDsPrefix):
		u, err := s.c.Dynamic.Resource(CiliumIdentities).Get(ctx, strings.TrimPrefix(key, identity.IDsPrefix), metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return kvstore.KV{}, false, nil
		}
		if err != nil {
			return kvstore.KV{}, false, err
		}
		kvs, err := identityKV(u)
		if err != nil {
			return kvstore.KV{}, false, err
		}
		return kvs[0], true, nil
	}
	return kvstore.KV{}, false, fmt.Errorf("no Kubernetes resource stands for %q", key)
}

// List implements kvstore.Store.
func (s *Store) List(ctx context.Context, prefix string) ([]kvstore.KV, int64, error) {
	var (
		gvr  schema.GroupVersionResource
		ns   string
		opts metav1.ListOptions
		conv converter
	)
	switch {
	case prefix == identity.IDsPrefix:
		gvr, conv = CiliumIdentities, identityKV
	case strings.HasPrefix(prefix, node.EndpointsPrefix) && strings.Count(strings.TrimPrefix(prefix, node.EndpointsPrefix), "/") == 1:
		// One node's endpoints: its CiliumEndpoints, keyed by container.
		nodeName := strings.TrimSuffix(strings.TrimPrefix(prefix, node.EndpointsPrefix), "/")
		gvr, conv = CiliumEndpoints, cepKV
		opts.LabelSelector = NodeLabel + "=" + nodeName
	default:
		spec, err := s.watchSpec(prefix)
		if err != nil {
			return nil, 0, err
		}
		gvr, ns, conv = spec.gvr, spec.namespace, spec.convert
	}
	list, err := s.c.Dynamic.Resource(gvr).Namespace(ns).List(ctx, opts)
	if err != nil {
		return nil, 0, fmt.Errorf("listing %s: %w", gvr.Resource, err)
	}
	var out []kvstore.KV
	for i := range list.Items {
		kvs, err := conv(&list.Items[i])
		if err != nil {
			s.log.Warn("skipping malformed object", "resource", gvr.Resource, "object", objKey(&list.Items[i]), "err", err)
			continue
		}
		out = append(out, kvs...)
	}
	rev, _ := strconv.ParseInt(list.GetResourceVersion(), 10, 64)
	return out, rev, nil
}

// Put implements kvstore.Store for what an agent writes: its node, its
// endpoints and its Hubble peer announcement.
func (s *Store) Put(ctx context.Context, key string, value []byte) (int64, error) {
	switch {
	case strings.HasPrefix(key, node.NodesPrefix):
		var n node.Node
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
	case strings.HasPrefix(key, node.EndpointsPrefix):
		var ep node.Endpoint
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
func (s *Store) applyNode(ctx context.Context, n node.Node) error {
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

func (s *Store) putEndpoint(ctx context.Context, ep node.Endpoint) error {
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
	case strings.HasPrefix(key, node.EndpointsPrefix):
		rest := strings.TrimPrefix(key, node.EndpointsPrefix)
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
	case strings.HasPrefix(key, node.NodesPrefix):
		err := s.c.Dynamic.Resource(CiliumNodes).Delete(ctx, strings.TrimPrefix(key, node.NodesPrefix), metav1.DeleteOptions{})
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

// identities returns the shared informer of CiliumIdentities (indexed by
// label set) once it has synced.
func (s *Store) identities(ctx context.Context) (cache.SharedIndexInformer, error) {
	inf := s.inf.get(watchSpec{gvr: CiliumIdentities})
	if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		return nil, fmt.Errorf("waiting for CiliumIdentities: %w", ctx.Err())
	}
	return inf, nil
}

// identityLabels returns the labels of a known identity, nil if unknown.
func (s *Store) identityLabels(id identity.ID) identity.Labels {
	if s.inf == nil {
		return nil
	}
	inf := s.inf.get(watchSpec{gvr: CiliumIdentities})
	if !inf.HasSynced() {
		return nil
	}
	o, ok, _ := inf.GetIndexer().GetByKey(strconv.FormatUint(uint64(id), 10))
	if !ok {
		return nil
	}
	_, ls, err := identityOf(o.(*unstructured.Unstructured))
	if err != nil {
		return nil
	}
	return ls
}

// nodeNameOf maps a node address to the node's name ("" when unknown).
func (s *Store) nodeNameOf(ip string) string {
	inf := s.inf.get(watchSpec{gvr: CiliumNodes})
	objs, _ := inf.GetIndexer().ByIndex(ipIndex, ip)
	if len(objs) == 0 {
		return ""
	}
	return objs[0].(*unstructured.Unstructured).GetName()
}

// PodCIDRs waits until this node's CiliumNode has pod CIDRs (allocated by
// lumen-operator) and returns them.
func (s *Store) PodCIDRs(ctx context.Context) ([]string, error) {
	// Stop following the nodes on return: an unread stream would queue
	// every later CiliumNode change for the agent's lifetime.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for u := range s.ListAndWatch(ctx, node.NodesPrefix) {
		kvs := u.KVs
		for _, e := range u.Events {
			if e.Type == kvstore.EventPut {
				kvs = append(kvs, e.KV)
			}
		}
		for _, kv := range kvs {
			if kv.Key != node.NodesPrefix+s.opts.NodeName {
				continue
			}
			var n node.Node
			if json.Unmarshal(kv.Value, &n) == nil && (n.PodCIDRv4 != "" || n.PodCIDRv6 != "") {
				var out []string
				for _, c := range []string{n.PodCIDRv4, n.PodCIDRv6} {
					if c != "" {
						out = append(out, c)
					}
				}
				return out, nil
			}
		}
	}
	return nil, fmt.Errorf("waiting for the pod CIDRs of CiliumNode %s: %w", s.opts.NodeName, ctx.Err())
}

// SplitStore serves resources from the Kubernetes API and everything else
// (nodes, endpoints, identities, Hubble peers) from etcd: Cilium's kvstore
// mode.
func SplitStore(api *Store, etcd kvstore.Store) kvstore.Store {
	return &split{api: api, etcd: etcd}
}

type split struct {
	api  *Store
	etcd kvstore.Store
}

func (s *split) pick(key string) kvstore.Store {
	if strings.HasPrefix(key, resource.Prefix) {
		return s.api
	}
	return s.etcd
}

func (s *split) Get(ctx context.Context, key string) (kvstore.KV, bool, error) {
	return s.pick(key).Get(ctx, key)
}
func (s *split) Put(ctx context.Context, key string, value []byte) (int64, error) {
	return s.pick(key).Put(ctx, key, value)
}
func (s *split) Delete(ctx context.Context, key string) (bool, error) {
	return s.pick(key).Delete(ctx, key)
}
func (s *split) List(ctx context.Context, prefix string) ([]kvstore.KV, int64, error) {
	return s.pick(prefix).List(ctx, prefix)
}
func (s *split) CreateAll(ctx context.Context, kvs ...kvstore.KV) (bool, []kvstore.KV, error) {
	if len(kvs) == 0 {
		return true, nil, nil
	}
	return s.pick(kvs[0].Key).CreateAll(ctx, kvs...)
}
func (s *split) ListAndWatch(ctx context.Context, prefix string) <-chan kvstore.Update {
	return s.pick(prefix).ListAndWatch(ctx, prefix)
}

// NodeLabels returns the labels of this node's Node object (a kubelet
// registered it), which host-firewall nodeSelectors and topology hints
// use. A missing Node is not an error: nil labels.
func (s *Store) NodeLabels(ctx context.Context) (map[string]string, error) {
	n, err := s.c.Core.CoreV1().Nodes().Get(ctx, s.opts.NodeName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading Node %s: %w", s.opts.NodeName, err)
	}
	return n.Labels, nil
}
