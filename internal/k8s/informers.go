package k8s

import (
	"context"
	"sync"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/tools/cache"
)

// informers shares one informer per resource, namespace and field
// selector among everything a store serves from it (ListAndWatch of
// several prefixes, identity lookups, node addresses), so that one agent
// holds one watch per resource kind. They run until the store's context
// ends.
type informers struct {
	dyn dynamic.Interface
	ctx context.Context

	mu sync.Mutex
	m  map[informerKey]cache.SharedIndexInformer
}

type informerKey struct {
	gvr           schema.GroupVersionResource
	namespace     string
	fieldSelector string
}

func newInformers(ctx context.Context, dyn dynamic.Interface) *informers {
	return &informers{dyn: dyn, ctx: ctx, m: map[informerKey]cache.SharedIndexInformer{}}
}

// get returns the running informer of spec's resource, starting it on
// first use with the indexes the store looks that resource up by.
func (i *informers) get(spec watchSpec) cache.SharedIndexInformer {
	k := informerKey{spec.gvr, spec.namespace, spec.fieldSelector}
	i.mu.Lock()
	defer i.mu.Unlock()
	if inf, ok := i.m[k]; ok {
		return inf
	}
	var tweak dynamicinformer.TweakListOptionsFunc
	if spec.fieldSelector != "" {
		tweak = func(o *metav1.ListOptions) { o.FieldSelector = spec.fieldSelector }
	}
	inf := dynamicinformer.NewFilteredDynamicInformer(i.dyn, spec.gvr, spec.namespace, 0, indexersOf(spec.gvr), tweak).Informer()
	i.m[k] = inf
	go inf.RunWithContext(i.ctx)
	return inf
}

// indexersOf are the indexes the store reads a resource by: identities by
// label set (allocation), nodes by address (CiliumEndpointSlices name
// nodes by address only).
func indexersOf(gvr schema.GroupVersionResource) cache.Indexers {
	switch gvr {
	case CiliumIdentities:
		return cache.Indexers{labelsIndex: func(obj any) ([]string, error) {
			_, ls, err := identityOf(obj.(*unstructured.Unstructured))
			if err != nil {
				return nil, nil
			}
			return []string{ls.String()}, nil
		}}
	case CiliumNodes:
		return cache.Indexers{ipIndex: func(obj any) ([]string, error) {
			var cn CiliumNode
			if err := fromUnstructured(obj.(*unstructured.Unstructured), &cn); err != nil {
				return nil, nil
			}
			var ips []string
			for _, a := range cn.Spec.Addresses {
				ips = append(ips, a.IP)
			}
			return ips, nil
		}}
	}
	return cache.Indexers{}
}
