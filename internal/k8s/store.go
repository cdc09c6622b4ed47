package k8s

import (
	"context"
	"encoding/json"
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
	"github.com/lumen-net/lumen/internal/model"
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
	// Kinds are the resource kinds the store presents (and validates
	// objects with); without it no resource kind is known.
	Kinds *resource.Registry
	Log   *slog.Logger
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
	if opts.Kinds == nil {
		opts.Kinds, _ = resource.NewRegistry()
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
		kind, ns, err := s.kindOfPrefix(prefix)
		if err != nil {
			return watchSpec{}, err
		}
		spec := watchSpec{gvr: gvrOf(kind), namespace: ns, convert: resourceKV(s.opts.Kinds)}
		if policyKindNames[kind.Kind] {
			spec.convert = s.policyKV(spec.gvr)
		}
		if kind.Kind == "Pod" && s.opts.NodeName != "" {
			// Like Cilium, an agent follows only its own node's pods: other
			// nodes' endpoints come as CiliumEndpoints (or slices).
			spec.fieldSelector = "spec.nodeName=" + s.opts.NodeName
		}
		return spec, nil
	case prefix == model.NodesPrefix:
		return watchSpec{gvr: CiliumNodes, convert: nodeKV}, nil
	case prefix == model.EndpointsPrefix && s.opts.EndpointSlices:
		return watchSpec{gvr: CiliumEndpointSlices, convert: cesKVs(s.nodeNameOf)}, nil
	case prefix == model.EndpointsPrefix:
		return watchSpec{gvr: CiliumEndpoints, convert: cepKV}, nil
	case prefix == identity.IDsPrefix:
		return watchSpec{gvr: CiliumIdentities, convert: identityKV}, nil
	case prefix == peer.StorePrefix:
		return watchSpec{gvr: CiliumNodes, convert: peerKV(peer.StorePrefix)}, nil
	}
	return watchSpec{}, fmt.Errorf("no Kubernetes resource stands for %q", prefix)
}

// kindOfPrefix reads "/lumen/v1/resources/<Kind>/[<namespace>/]".
func (s *Store) kindOfPrefix(prefix string) (*resource.Kind, string, error) {
	rest := strings.TrimSuffix(strings.TrimPrefix(prefix, resource.Prefix), "/")
	name, ns, _ := strings.Cut(rest, "/")
	for _, k := range s.opts.Kinds.Kinds() {
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
		k, err := s.opts.Kinds.ResolveKind(kindName)
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
		kvs, err := resourceKV(s.opts.Kinds)(u)
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
	case strings.HasPrefix(prefix, model.EndpointsPrefix) && strings.Count(strings.TrimPrefix(prefix, model.EndpointsPrefix), "/") == 1:
		// One node's endpoints: its CiliumEndpoints, keyed by container.
		nodeName := strings.TrimSuffix(strings.TrimPrefix(prefix, model.EndpointsPrefix), "/")
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
	for u := range s.ListAndWatch(ctx, model.NodesPrefix) {
		kvs := u.KVs
		for _, e := range u.Events {
			if e.Type == kvstore.EventPut {
				kvs = append(kvs, e.KV)
			}
		}
		for _, kv := range kvs {
			if kv.Key != model.NodesPrefix+s.opts.NodeName {
				continue
			}
			var n model.Node
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
