// Package resource holds Kubernetes-shaped objects (Namespace, Pod, and the
// kinds later features register): decoding them from multi-document YAML,
// validating them like the Kubernetes API server would, and storing them in
// the kvstore under /lumen/v1/resources/<Kind>/<namespace>/<name>.
package resource

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"

	"github.com/lumen-net/lumen/internal/fielderr"
)

// Metadata is the part of Kubernetes' ObjectMeta that Lumen uses.
type Metadata struct {
	Name        string            `json:"name"`
	Namespace   string            `json:"namespace,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

// Object is one resource. Kind-specific content stays JSON: Spec, and any
// other top-level field the kind allows (Kind.Fields) in Other.
type Object struct {
	APIVersion string
	Kind       string
	Metadata   Metadata
	Spec       json.RawMessage
	Other      map[string]json.RawMessage
}

// String names the object like error messages do: "Pod default/web", "Namespace prod".
func (o *Object) String() string {
	kind, name := o.Kind, o.Metadata.Name
	if kind == "" {
		kind = "object"
	}
	if name == "" {
		name = "<no name>"
	}
	if o.Metadata.Namespace != "" {
		return kind + " " + o.Metadata.Namespace + "/" + name
	}
	return kind + " " + name
}

// Ref is the kubectl-style reference: "pod/web".
func (o *Object) Ref() string { return strings.ToLower(o.Kind) + "/" + o.Metadata.Name }

// Key is where the object is stored.
func (o *Object) Key() string { return Key(o.Kind, o.Metadata.Namespace, o.Metadata.Name) }

// MarshalJSON writes the object as a Kubernetes manifest (keys sorted, so the
// stored form of equal objects is byte-for-byte equal).
func (o Object) MarshalJSON() ([]byte, error) {
	m := map[string]any{"apiVersion": o.APIVersion, "kind": o.Kind, "metadata": o.Metadata}
	if len(o.Spec) > 0 {
		m["spec"] = o.Spec
	}
	for k, v := range o.Other {
		m[k] = v
	}
	return json.Marshal(m)
}

// UnmarshalJSON reads a manifest without validating it beyond its shape:
// top-level fields other than apiVersion, kind, metadata and spec land in
// Other and are judged by Validate.
func (o *Object) UnmarshalJSON(data []byte) error {
	obj, errs := parseObject(data)
	if len(errs) > 0 {
		return errs[0]
	}
	*o = *obj
	return nil
}

// parseObject splits a JSON manifest into an Object, reporting type errors
// and unknown metadata fields as field errors.
func parseObject(data []byte) (*Object, ErrorList) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, ErrorList{{Path: "<document>", Msg: "must be an object (" + err.Error() + ")"}}
	}
	o := &Object{}
	var errs ErrorList
	for _, k := range sortedKeys(m) {
		v := m[k]
		switch k {
		case "apiVersion":
			errs.add(decodeStrict(k, v, &o.APIVersion))
		case "kind":
			errs.add(decodeStrict(k, v, &o.Kind))
		case "metadata":
			errs.add(decodeStrict(k, v, &o.Metadata))
		case "spec":
			if !bytes.Equal(v, []byte("null")) {
				o.Spec = v
			}
		default:
			if o.Other == nil {
				o.Other = map[string]json.RawMessage{}
			}
			o.Other[k] = v
		}
	}
	return o, errs
}

// Unmarshal decodes a stored object.
func Unmarshal(data []byte) (*Object, error) {
	var o Object
	if err := json.Unmarshal(data, &o); err != nil {
		return nil, fmt.Errorf("decoding stored resource: %w", err)
	}
	return &o, nil
}

// Prefix is the root of all resource keys.
const Prefix = "/lumen/v1/resources/"

// clusterScope is the namespace segment of cluster-scoped objects' keys.
const clusterScope = "_"

// Key is the store key of an object; namespace "" means cluster-scoped.
func Key(kind, namespace, name string) string {
	return NamespacePrefix(kind, namespace) + name
}

// KindPrefix is the key prefix of every object of kind.
func KindPrefix(kind string) string { return Prefix + kind + "/" }

// NamespacePrefix is the key prefix of kind's objects in namespace ("" for
// cluster-scoped kinds).
func NamespacePrefix(kind, namespace string) string {
	if namespace == "" {
		namespace = clusterScope
	}
	return KindPrefix(kind) + namespace + "/"
}

// ParseKey splits a store key into kind, namespace ("" when cluster-scoped) and name.
func ParseKey(key string) (kind, namespace, name string, ok bool) {
	rest, found := strings.CutPrefix(key, Prefix)
	if !found {
		return "", "", "", false
	}
	parts := strings.Split(rest, "/")
	if len(parts) != 3 || parts[0] == "" || parts[1] == "" || parts[2] == "" {
		return "", "", "", false
	}
	if parts[1] == clusterScope {
		parts[1] = ""
	}
	return parts[0], parts[1], parts[2], true
}

// decodeStrict decodes the JSON at path into v, rejecting fields v does not
// have, and words failures as field errors.
func decodeStrict(path string, data []byte, v any) *fielderr.Error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil && dec.More() {
		err = errors.New("unexpected data after the value")
	}
	if err == nil {
		return nil
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		if te.Field != "" {
			path += "." + te.Field
		}
		return &fielderr.Error{Path: path, Msg: fmt.Sprintf("invalid value: must be %s, not %s", typeName(te.Type), te.Value)}
	}
	if f, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		return &fielderr.Error{Path: path, Msg: "unknown field " + f}
	}
	return &fielderr.Error{Path: path, Msg: "invalid value: " + strings.TrimPrefix(err.Error(), "json: ")}
}

func typeName(t reflect.Type) string {
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Int, reflect.Int32, reflect.Int64, reflect.Uint16, reflect.Uint32:
		return "an integer"
	case reflect.Bool:
		return "a boolean"
	case reflect.Map, reflect.Struct:
		return "an object"
	case reflect.Slice:
		return "a list"
	}
	return t.String()
}

func sortedKeys[V any](m map[string]V) []string { return slices.Sorted(maps.Keys(m)) }
