package resource

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/lumen-net/lumen/internal/kvstore"
)

// Action is what Apply or Delete did to an object, worded like kubectl.
type Action string

const (
	Created    Action = "created"
	Configured Action = "configured"
	Unchanged  Action = "unchanged"
	Deleted    Action = "deleted"
	NotFound   Action = "not found"
)

// Result is the outcome for one object.
type Result struct {
	Object Object
	Action Action
}

// NotFoundError says an object does not exist.
type NotFoundError struct {
	Kind, Namespace, Name string
	Plural                string // the kind's plural, "pods"; default the lower-case kind plus "s"
}

func (e *NotFoundError) Error() string {
	what := e.Plural
	if what == "" {
		what = strings.ToLower(e.Kind) + "s"
	}
	if e.Namespace != "" {
		return fmt.Sprintf("%s %q not found in namespace %q", what, e.Name, e.Namespace)
	}
	return fmt.Sprintf("%s %q not found", what, e.Name)
}

// IsNotFound reports whether err is a NotFoundError.
func IsNotFound(err error) bool {
	var nf *NotFoundError
	return errors.As(err, &nf)
}

// maxConflicts bounds retries when another writer changes an object between
// our read and our write.
const maxConflicts = 10

// MaxObjectBytes bounds one stored object (its JSON): the store refuses
// requests over 1.5 MiB (etcd's default, as for Kubernetes), so a bigger
// object must be refused before anything of its batch is written.
const MaxObjectBytes = 1_500_000

// alwaysNamespaces exist without a Namespace object, as in Kubernetes.
var alwaysNamespaces = []string{"default", "kube-system", "kube-public", "kube-node-lease"}

// Apply checks every object (Preflight), then creates or updates each in
// order. An object that fails the checks writes nothing of the batch.
func (r *Registry) Apply(ctx context.Context, c *kvstore.Client, objs []Object) ([]Result, error) {
	if err := r.Preflight(ctx, c, objs); err != nil {
		return nil, err
	}
	var results []Result
	for _, obj := range objs {
		action, err := applyOne(ctx, c, &obj)
		if err != nil {
			return results, err
		}
		results = append(results, Result{Object: obj, Action: action})
	}
	return results, nil
}

// Preflight checks a batch before anything of it is written: every object
// valid, no object too large for the store, and every namespaced object in
// a namespace that exists, in the store or created by the batch, for the
// kinds that say so (the API server rejects objects in a missing namespace). Every failure is
// reported, naming the object.
func (r *Registry) Preflight(ctx context.Context, c *kvstore.Client, objs []Object) error {
	var errs []error
	inBatch := map[string]bool{}
	for i := range objs {
		if err := r.Validate(&objs[i]); err != nil {
			return err
		}
		if objs[i].Kind == "Namespace" {
			inBatch[objs[i].Metadata.Name] = true
		}
	}
	known := map[string]bool{}
	for i := range objs {
		obj := &objs[i]
		if b, err := json.Marshal(obj); err != nil {
			errs = append(errs, fmt.Errorf("encoding %s: %w", obj, err))
		} else if len(b) > MaxObjectBytes {
			errs = append(errs, fmt.Errorf("%s: object is %d bytes encoded, more than the store's limit of %d", obj, len(b), MaxObjectBytes))
		}
		ns := obj.Metadata.Namespace
		if k, err := r.LookupKind(obj.APIVersion, obj.Kind); err != nil || !k.NamespaceMustExist ||
			ns == "" || inBatch[ns] || slices.Contains(alwaysNamespaces, ns) {
			continue
		}
		exists, seen := known[ns]
		if !seen {
			_, ok, err := c.Get(ctx, Key("Namespace", "", ns))
			if err != nil {
				return fmt.Errorf("looking up namespace %q of %s: %w", ns, obj, err)
			}
			known[ns], exists = ok, ok
		}
		if !exists {
			errs = append(errs, fmt.Errorf("%s: namespaces %q not found (apply the Namespace first, or in the same batch)", obj, ns))
		}
	}
	return errors.Join(errs...)
}

func applyOne(ctx context.Context, c *kvstore.Client, obj *Object) (Action, error) {
	val, err := json.Marshal(obj)
	if err != nil {
		return "", fmt.Errorf("encoding %s: %w", obj, err)
	}
	key := obj.Key()
	for range maxConflicts {
		cur, exists, err := c.Get(ctx, key)
		if err != nil {
			return "", fmt.Errorf("applying %s: %w", obj, err)
		}
		if exists && bytes.Equal(cur.Value, val) {
			return Unchanged, nil
		}
		ok, err := c.CompareAndPut(ctx, key, val, cur.ModRevision)
		if err != nil {
			return "", fmt.Errorf("applying %s: %w", obj, err)
		}
		if ok && exists {
			return Configured, nil
		}
		if ok {
			return Created, nil
		}
	}
	return "", fmt.Errorf("applying %s: changed concurrently %d times, giving up", obj, maxConflicts)
}

// Delete removes the objects (only kind, namespace and name matter; an empty
// namespace of a namespaced kind means "default"). Deleting a Namespace also
// deletes every namespaced object in it, as in Kubernetes; namespaces go
// last so that the objects in them are reported deleted. Missing objects get
// the NotFound action, not an error.
func (r *Registry) Delete(ctx context.Context, c *kvstore.Client, objs []Object) ([]Result, error) {
	objs = slices.Clone(objs)
	slices.SortStableFunc(objs, func(a, b Object) int {
		return cmp.Compare(boolInt(a.Kind == "Namespace"), boolInt(b.Kind == "Namespace"))
	})
	var results []Result
	for _, obj := range objs {
		kind, err := r.LookupKind(obj.APIVersion, obj.Kind)
		if err != nil {
			return results, err
		}
		if kind.Namespaced && obj.Metadata.Namespace == "" {
			obj.Metadata.Namespace = "default"
		} else if !kind.Namespaced {
			obj.Metadata.Namespace = ""
		}
		deleted, err := c.Delete(ctx, obj.Key())
		if err != nil {
			return results, fmt.Errorf("deleting %s: %w", &obj, err)
		}
		if deleted && obj.Kind == "Namespace" {
			for _, k := range r.sorted {
				if k.Namespaced {
					if _, err := c.DeletePrefix(ctx, NamespacePrefix(k.Kind, obj.Metadata.Name)); err != nil {
						return results, fmt.Errorf("deleting the %s of namespace %s: %w", k.PluralName(), obj.Metadata.Name, err)
					}
				}
			}
		}
		action := Deleted
		if !deleted {
			action = NotFound
		}
		results = append(results, Result{Object: obj, Action: action})
	}
	return results, nil
}

// Get reads one object; namespace is ignored for cluster-scoped kinds.
func Get(ctx context.Context, c kvstore.Store, kind *Kind, namespace, name string) (*Object, error) {
	if !kind.Namespaced {
		namespace = ""
	}
	kv, ok, err := c.Get(ctx, Key(kind.Kind, namespace, name))
	if err != nil {
		return nil, fmt.Errorf("reading %s %s: %w", kind.Kind, name, err)
	}
	if !ok {
		return nil, &NotFoundError{Kind: kind.Kind, Namespace: namespace, Name: name, Plural: kind.PluralName()}
	}
	return Unmarshal(kv.Value)
}

// List reads the objects of kind in namespace ("" for all namespaces, and
// for cluster-scoped kinds), sorted by namespace and name.
func List(ctx context.Context, c kvstore.Store, kind *Kind, namespace string) ([]Object, error) {
	prefix := KindPrefix(kind.Kind)
	if kind.Namespaced && namespace != "" {
		prefix = NamespacePrefix(kind.Kind, namespace)
	}
	kvs, _, err := c.List(ctx, prefix)
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", kind.PluralName(), err)
	}
	objs := make([]Object, 0, len(kvs))
	for _, kv := range kvs {
		obj, err := Unmarshal(kv.Value)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", kv.Key, err)
		}
		objs = append(objs, *obj)
	}
	return objs, nil
}

// GetPod reads a pod.
func GetPod(ctx context.Context, c kvstore.Store, namespace, name string) (*Pod, error) {
	obj, err := Get(ctx, c, PodKind, namespace, name)
	if err != nil {
		return nil, err
	}
	return PodOf(obj)
}

// GetNamespace reads a namespace.
func GetNamespace(ctx context.Context, c kvstore.Store, name string) (*Namespace, error) {
	obj, err := Get(ctx, c, NamespaceKind, "", name)
	if err != nil {
		return nil, err
	}
	return NamespaceOf(obj)
}

// NamespaceLabels returns the labels of namespace name. A namespace that was
// never applied (pods may live in one) has just the label the API server
// would give it, kubernetes.io/metadata.name=<name>, so that identities do
// not depend on whether the Namespace object exists.
func NamespaceLabels(ctx context.Context, c kvstore.Store, name string) (map[string]string, error) {
	ns, err := GetNamespace(ctx, c, name)
	if IsNotFound(err) {
		return map[string]string{MetadataNameLabel: name}, nil
	}
	if err != nil {
		return nil, err
	}
	return ns.Labels, nil
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
