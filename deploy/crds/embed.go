// Package crds holds the CustomResourceDefinitions of the Cilium resources
// Lumen uses (group cilium.io, Cilium's kinds, versions and field names, so
// existing Cilium YAML applies as-is), one YAML file per CRD, each with a
// structural OpenAPI schema that makes the API server reject malformed
// objects. internal/controlplane.ApplyCRDs installs them.
package crds

import (
	"embed"
	"fmt"
	"io/fs"
	"slices"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

// FS holds the CRD files (*.yaml), one CustomResourceDefinition each.
//
//go:embed *.yaml
var FS embed.FS

// All decodes every CRD in FS, in file name order.
func All() ([]*unstructured.Unstructured, error) {
	names, err := fs.Glob(FS, "*.yaml")
	if err != nil {
		return nil, err
	}
	slices.Sort(names)
	out := make([]*unstructured.Unstructured, 0, len(names))
	for _, name := range names {
		b, err := FS.ReadFile(name)
		if err != nil {
			return nil, err
		}
		u, err := Decode(b)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		out = append(out, u)
	}
	return out, nil
}

// Decode decodes one CRD from YAML (anchors and aliases are expanded).
func Decode(b []byte) (*unstructured.Unstructured, error) {
	var obj map[string]any
	if err := yaml.Unmarshal(b, &obj); err != nil {
		return nil, fmt.Errorf("decoding CustomResourceDefinition: %w", err)
	}
	u := &unstructured.Unstructured{Object: obj}
	if u.GetAPIVersion() != "apiextensions.k8s.io/v1" || u.GetKind() != "CustomResourceDefinition" {
		return nil, fmt.Errorf("not an apiextensions.k8s.io/v1 CustomResourceDefinition: apiVersion %q, kind %q", u.GetAPIVersion(), u.GetKind())
	}
	if u.GetName() == "" {
		return nil, fmt.Errorf("CustomResourceDefinition without metadata.name")
	}
	return u, nil
}
