package loadbalancer

import "github.com/lumen-net/lumen/internal/resource"

// testKinds are the core kinds and this package's, for its tests.
var testKinds = func() *resource.Registry {
	r, err := resource.NewRegistry(append(resource.CoreKinds(), Kinds()...)...)
	if err != nil {
		panic(err)
	}
	return r
}()
