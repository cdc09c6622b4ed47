// Package kinds builds the one registry of resource kinds Lumen
// understands, from the kinds each feature lists: the core kinds, the
// load balancer's, the policy kinds and BGP's. The CLI, the agent and the
// Kubernetes adapter are handed it; nothing registers itself.
package kinds

import (
	"github.com/lumen-net/lumen/internal/bgp"
	"github.com/lumen-net/lumen/internal/loadbalancer"
	"github.com/lumen-net/lumen/internal/policysync"
	"github.com/lumen-net/lumen/internal/resource"
)

// Registry returns a new registry of every kind.
func Registry() *resource.Registry {
	var all []resource.Kind
	for _, ks := range [][]resource.Kind{resource.CoreKinds(), loadbalancer.Kinds(), policysync.Kinds(), bgp.Kinds()} {
		all = append(all, ks...)
	}
	r, err := resource.NewRegistry(all...)
	if err != nil {
		panic("kinds: " + err.Error()) // the lists above are wrong: a programming error the test catches
	}
	return r
}
