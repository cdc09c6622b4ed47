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
type NotFoundError struct{ Kind, Namespace, Name string }

func (e *NotFoundError) Error() string {
	k, _ := ResolveKind(e.Kind)
	what := strings.ToLower(e.Kind) + "s"
	if k != nil {
		what = k.PluralName()
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

// Apply validates every object, then creates or updates each in order. A
// validation failure writes nothing.
func Apply(ctx context.Context, c *kvstore.Client, objs []Object) ([]Result, error) {
	for i := range objs {
		if err := Validate(&objs[i]); err != nil {
			return nil, err
		}
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
func Delete(ctx context.Context, c *kvstore.Client, objs []Object) ([]Result, error) {
	objs = slices.Clone(objs)
	slices.SortStableFunc(objs, func(a, b Object) int {
		return cmp.Compare(boolInt(a.Kind == "Namespace"), boolInt(b.Kind == "Namespace"))
	})
	var results []Result
	for _, obj := range objs {
		kind, err := LookupKind(obj.APIVersion, obj.Kind)
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
			for _, k := range Kinds() {
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
		return nil, &NotFoundError{Kind: kind.Kind, Namespace: namespace, Name: name}
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
	obj, err := Get(ctx, c, mustKind("Pod"), namespace, name)
	if err != nil {
		return nil, err
	}
	return PodOf(obj)
}

// GetNamespace reads a namespace.
func GetNamespace(ctx context.Context, c kvstore.Store, name string) (*Namespace, error) {
	obj, err := Get(ctx, c, mustKind("Namespace"), "", name)
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

func mustKind(name string) *Kind {
	kindsMu.RLock()
	defer kindsMu.RUnlock()
	return kinds[name]
}
