package resource

import (
	"fmt"
	"slices"
	"strings"
)

// Kind describes one resource kind. Each feature lists its own (CoreKinds
// here); internal/kinds gathers them into the Registry.
type Kind struct {
	APIVersion string // "v1", "cilium.io/v2"
	Kind       string // "Pod"
	Namespaced bool
	// NamespaceMustExist: apply refuses an object whose namespace does not
	// exist, as the API server does (policy kinds; Pods and Services of the
	// lab are applied with their Namespace).
	NamespaceMustExist bool
	// NameIsLabel restricts names to RFC 1123 labels (63 characters), as for
	// Namespace and Service; other names are RFC 1123 subdomains.
	NameIsLabel bool
	// Fields lists the top-level fields allowed besides apiVersion, kind and
	// metadata. Empty means just "spec". A "status" field is always dropped.
	Fields []string
	// Validate checks the kind-specific content of obj (metadata is checked
	// already) and may fill in defaults, like the API server.
	Validate func(obj *Object) ErrorList
	// Plural and ShortNames are accepted by `lumen get` besides the kind name;
	// Plural defaults to the lower-case kind plus "s".
	Plural     string
	ShortNames []string
	// Columns are shown by `lumen get` after NAME.
	Columns []Column
}

// Column is one kind-specific column of `lumen get`.
type Column struct {
	Header string
	Value  func(*Object) string
}

// String is "v1 Pod".
func (k *Kind) String() string { return k.APIVersion + " " + k.Kind }

// PluralName is the lower-case plural ("pods"), as kubectl prints it.
func (k *Kind) PluralName() string {
	if k.Plural != "" {
		return k.Plural
	}
	return strings.ToLower(k.Kind) + "s"
}

func (k *Kind) allowsField(f string) bool {
	if len(k.Fields) == 0 {
		return f == "spec"
	}
	return slices.Contains(k.Fields, f)
}

// Registry is the set of kinds one program understands: `lumen apply`
// validates against it, the Kubernetes adapter watches its kinds. It is
// built explicitly (see internal/kinds) and never changes afterwards.
type Registry struct {
	byName map[string]*Kind // by Kind name
	sorted []*Kind
}

// NewRegistry returns a registry of kinds; a duplicate or incomplete kind
// is an error.
func NewRegistry(kinds ...Kind) (*Registry, error) {
	r := &Registry{byName: map[string]*Kind{}}
	for i := range kinds {
		k := &kinds[i]
		if k.APIVersion == "" || k.Kind == "" {
			return nil, fmt.Errorf("kind %d (%q %q): APIVersion and Kind are required", i, k.APIVersion, k.Kind)
		}
		if _, dup := r.byName[k.Kind]; dup {
			return nil, fmt.Errorf("duplicate kind %s", k.Kind)
		}
		r.byName[k.Kind] = k
	}
	for _, name := range sortedKeys(r.byName) {
		r.sorted = append(r.sorted, r.byName[name])
	}
	return r, nil
}

// Kinds returns the kinds sorted by name.
func (r *Registry) Kinds() []*Kind { return slices.Clone(r.sorted) }

// LookupKind finds the kind of a manifest by apiVersion and kind.
func (r *Registry) LookupKind(apiVersion, kind string) (*Kind, error) {
	k, ok := r.byName[kind]
	if !ok {
		return nil, fmt.Errorf("unknown kind %q (apiVersion %q); known kinds: %s", kind, apiVersion, r.knownKinds())
	}
	if k.APIVersion != apiVersion {
		return nil, fmt.Errorf("kind %s: unsupported apiVersion %q: want %q", kind, apiVersion, k.APIVersion)
	}
	return k, nil
}

// ResolveKind finds a kind by any name kubectl accepts: "Pod", "pod",
// "pods", "po".
func (r *Registry) ResolveKind(name string) (*Kind, error) {
	n := strings.ToLower(name)
	for _, k := range r.sorted {
		if n == strings.ToLower(k.Kind) || n == k.PluralName() || slices.Contains(k.ShortNames, n) {
			return k, nil
		}
	}
	return nil, fmt.Errorf("unknown resource type %q; known: %s", name, r.knownKinds())
}

func (r *Registry) knownKinds() string {
	var names []string
	for _, k := range r.sorted {
		names = append(names, k.String())
	}
	return strings.Join(names, ", ")
}

// AllowsField reports whether f may appear at the top level of the kind's
// objects besides apiVersion, kind and metadata.
func (k *Kind) AllowsField(f string) bool { return k.allowsField(f) }
