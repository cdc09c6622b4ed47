package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/lumen-net/lumen/internal/api"
	"github.com/lumen-net/lumen/internal/kvstore"
	lb "github.com/lumen-net/lumen/internal/loadbalancer" // also registers Service and EndpointSlice
	"github.com/lumen-net/lumen/internal/resource"
)

// serviceClaims are the Services of one apply with what they held before
// (nil: new) and what they hold now, as recorded in the allocation index.
type serviceClaims struct {
	c    *kvstore.Client
	objs []int // indices into the applied objects
	prev []*lb.Service
	now  []*lb.Service
}

// assignServices gives Services what the API server would on creation
// (cluster IPs, node ports) and records them in the store's allocation
// index: a few keys per service are read, however many services exist. A
// Service applied without a status keeps the stored one (set by a load
// balancer controller), as status is not part of what kubectl applies.
// finish must be called with the outcome of the apply.
func assignServices(ctx context.Context, c *kvstore.Client, objs []resource.Object) (*serviceClaims, error) {
	sc := &serviceClaims{c: c}
	var a lb.Allocator
	for i := range objs {
		obj := &objs[i]
		if obj.Kind != "Service" {
			continue
		}
		prevObj, prev, err := storedService(ctx, c, obj)
		if err != nil {
			return sc, err
		}
		if _, has := obj.Other["status"]; !has && prevObj != nil {
			if st, ok := prevObj.Other["status"]; ok {
				if obj.Other == nil {
					obj.Other = map[string]json.RawMessage{}
				}
				obj.Other["status"] = st
			}
		}
		spec := obj.Spec
		for attempt := 0; ; attempt++ {
			idx, err := lb.OpenIndex(ctx, c)
			if err != nil {
				return sc, err
			}
			obj.Spec = spec
			if err := a.AssignWith(obj, prev, idx); err != nil {
				return sc, err
			}
			now, err := lb.ServiceOf(obj)
			if err != nil {
				return sc, err
			}
			err = idx.Claim(now)
			if err == nil {
				sc.objs, sc.prev, sc.now = append(sc.objs, i), append(sc.prev, prev), append(sc.now, now)
				break
			}
			if !lb.IsLostRace(err) || attempt == 4 {
				return sc, fmt.Errorf("allocating for %s: %w", obj, err)
			}
		}
	}
	return sc, nil
}

// storedService reads the stored version of a Service (nil, nil when new).
func storedService(ctx context.Context, c kvstore.Store, obj *resource.Object) (*resource.Object, *lb.Service, error) {
	kv, ok, err := c.Get(ctx, obj.Key())
	if err != nil || !ok {
		return nil, nil, err
	}
	stored, err := resource.Unmarshal(kv.Value)
	if err != nil {
		return nil, nil, nil // not ours to judge: overwritten like any object
	}
	svc, err := lb.ServiceOf(stored)
	if err != nil {
		return nil, nil, nil
	}
	return stored, svc, nil
}

// finish releases what the applied services no longer hold, or, for those
// the apply did not write (results lists the written ones, in order), what
// they claimed for nothing.
func (sc *serviceClaims) finish(ctx context.Context, written int) error {
	if sc == nil {
		return nil
	}
	var errs []error
	for j, i := range sc.objs {
		var err error
		if i < written {
			if sc.prev[j] != nil {
				err = lb.ReleaseAllocations(ctx, sc.c, sc.prev[j], sc.now[j])
			}
		} else {
			err = lb.ReleaseAllocations(ctx, sc.c, sc.now[j], sc.prev[j])
		}
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// servicesToDelete reads the stored Services that deleting objs removes
// (Services named, and those in Namespaces named), to release their
// allocations afterwards.
func servicesToDelete(ctx context.Context, reg *resource.Registry, c *kvstore.Client, objs []resource.Object) ([]*lb.Service, error) {
	var out []*lb.Service
	kind, err := reg.ResolveKind("Service")
	if err != nil {
		return nil, err
	}
	for i := range objs {
		o := &objs[i]
		switch o.Kind {
		case "Service":
			x := *o
			if x.Metadata.Namespace == "" {
				x.Metadata.Namespace = "default"
			}
			_, svc, err := storedService(ctx, c, &x)
			if err != nil {
				return nil, err
			}
			if svc != nil {
				out = append(out, svc)
			}
		case "Namespace":
			stored, err := resource.List(ctx, c, kind, o.Metadata.Name)
			if err != nil {
				return nil, err
			}
			for j := range stored {
				if svc, err := lb.ServiceOf(&stored[j]); err == nil {
					out = append(out, svc)
				}
			}
		}
	}
	return out, nil
}

// releaseDeleted releases the allocations of the services that are gone.
func releaseDeleted(ctx context.Context, c *kvstore.Client, svcs []*lb.Service) error {
	var errs []error
	for _, svc := range svcs {
		if _, still, err := c.Get(ctx, resource.Key("Service", svc.Namespace, svc.Name)); err != nil {
			errs = append(errs, err)
		} else if !still {
			errs = append(errs, lb.ReleaseAllocations(ctx, c, svc, nil))
		}
	}
	return errors.Join(errs...)
}

func newServiceCmd() *cobra.Command {
	svc := &cobra.Command{Use: "service", Aliases: []string{"services", "svc"}, Short: "Services as this node's datapath load-balances them"}
	svc.AddCommand(&cobra.Command{
		Use:   "list",
		Short: "List frontends with their backends, states and zones",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			asJSON, err := JSONOutput()
			if err != nil {
				return err
			}
			var list []api.Service
			if err := client().Do(cmd.Context(), "GET", "/v1/services", nil, &list); err != nil {
				return err
			}
			if asJSON {
				return PrintJSON(os.Stdout, list)
			}
			var rows [][]string
			for _, s := range list {
				rows = append(rows, []string{u(s.ID), s.Service, s.Type, s.Frontend + "/" + s.Protocol, s.Scope, backendsColumn(s)})
			}
			return printTable("ID\tSERVICE\tTYPE\tFRONTEND\tSCOPE\tBACKENDS", rows)
		},
	})
	return svc
}

// backendsColumn lists a frontend's backends, and says first when none
// takes new connections, why, and what happens to them.
func backendsColumn(s api.Service) string {
	var bs []string
	for _, b := range s.Backends {
		desc := fmt.Sprintf("%s (%s", b.Address, b.State)
		if b.Zone != "" {
			desc += ", zone " + b.Zone
		}
		if b.Node != "" {
			desc += ", node " + b.Node
		}
		bs = append(bs, desc+")")
	}
	out := strings.Join(bs, ", ")
	if s.NoBackends != "" {
		verdict := map[string]string{"reject": "rejected", "drop": "dropped"}[s.NewConnections]
		out = strings.TrimSuffix("NO BACKEND: "+s.NoBackends+", new connections "+verdict+"; "+out, "; ")
	}
	return Dash(out)
}
