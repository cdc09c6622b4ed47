package resource

import (
	"fmt"
	"slices"
	"strings"
	"sync"
)

// Kind describes one resource kind. Features register theirs with Register.
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

var (
	kindsMu sync.RWMutex
	kinds   = map[string]*Kind{} // by Kind name
)

// Register adds a kind; it panics on a duplicate or incomplete kind, which
// is a programming error caught at init.
func Register(k Kind) {
	if k.APIVersion == "" || k.Kind == "" {
		panic("resource.Register: APIVersion and Kind are required")
	}
	kindsMu.Lock()
	defer kindsMu.Unlock()
	if _, dup := kinds[k.Kind]; dup {
		panic("resource.Register: duplicate kind " + k.Kind)
	}
	kinds[k.Kind] = &k
}

// Kinds returns the registered kinds sorted by name.
func Kinds() []*Kind {
	kindsMu.RLock()
	defer kindsMu.RUnlock()
	out := make([]*Kind, 0, len(kinds))
	for _, name := range sortedKeys(kinds) {
		out = append(out, kinds[name])
	}
	return out
}

// LookupKind finds the kind of a manifest by apiVersion and kind.
func LookupKind(apiVersion, kind string) (*Kind, error) {
	kindsMu.RLock()
	k, ok := kinds[kind]
	kindsMu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("unknown kind %q (apiVersion %q); known kinds: %s", kind, apiVersion, knownKinds())
	}
	if k.APIVersion != apiVersion {
		return nil, fmt.Errorf("kind %s: unsupported apiVersion %q: want %q", kind, apiVersion, k.APIVersion)
	}
	return k, nil
}

// ResolveKind finds a kind by any name kubectl accepts: "Pod", "pod",
// "pods", "po".
func ResolveKind(name string) (*Kind, error) {
	n := strings.ToLower(name)
	for _, k := range Kinds() {
		if n == strings.ToLower(k.Kind) || n == k.PluralName() || slices.Contains(k.ShortNames, n) {
			return k, nil
		}
	}
	return nil, fmt.Errorf("unknown resource type %q; known: %s", name, knownKinds())
}

func knownKinds() string {
	var names []string
	for _, k := range Kinds() {
		names = append(names, k.String())
	}
	return strings.Join(names, ", ")
}

// AllowsField reports whether f may appear at the top level of the kind's
// objects besides apiVersion, kind and metadata.
func (k *Kind) AllowsField(f string) bool { return k.allowsField(f) }
