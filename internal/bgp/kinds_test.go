package bgp

import (
	"github.com/lumen-net/lumen/internal/loadbalancer"
	"github.com/lumen-net/lumen/internal/resource"
)

// testKinds are the core kinds, the load balancer's and this package's,
// for its tests.
var testKinds = func() *resource.Registry {
	r, err := resource.NewRegistry(append(append(resource.CoreKinds(), loadbalancer.Kinds()...), Kinds()...)...)
	if err != nil {
		panic(err)
	}
	return r
}()
