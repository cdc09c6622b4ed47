package resource

import (
	"strings"
	"testing"
)

// testKinds are the core kinds, all this package's tests need.
var testKinds = func() *Registry {
	r, err := NewRegistry(CoreKinds()...)
	if err != nil {
		panic(err)
	}
	return r
}()

func TestNewRegistryRefusesBadKinds(t *testing.T) {
	if _, err := NewRegistry(*PodKind, *PodKind); err == nil || !strings.Contains(err.Error(), "duplicate kind Pod") {
		t.Errorf("duplicate kind: error %v", err)
	}
	if _, err := NewRegistry(Kind{Kind: "Widget"}); err == nil || !strings.Contains(err.Error(), "APIVersion and Kind are required") {
		t.Errorf("kind without APIVersion: error %v", err)
	}
	r, err := NewRegistry()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.LookupKind("v1", "Pod"); err == nil {
		t.Error("an empty registry knows Pod")
	}
	if got := testKinds.Kinds(); len(got) != 2 || got[0].Kind != "Namespace" || got[1].Kind != "Pod" {
		t.Errorf("Kinds() = %v, want Namespace and Pod", got)
	}
}
