package cli

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/lumen-net/lumen/internal/api"
	"github.com/lumen-net/lumen/internal/kvstore"
	lb "github.com/lumen-net/lumen/internal/loadbalancer" // also registers Service and EndpointSlice
	"github.com/lumen-net/lumen/internal/resource"
)

// assignServices gives Services what the API server would on creation
// (cluster IPs, node ports), against what the store already holds.
func assignServices(ctx context.Context, c *kvstore.Client, objs []resource.Object) error {
	has := false
	for _, o := range objs {
		has = has || o.Kind == "Service"
	}
	if !has {
		return nil
	}
	kind, err := resource.ResolveKind("Service")
	if err != nil {
		return err
	}
	stored, err := resource.List(ctx, c, kind, "")
	if err != nil {
		return err
	}
	ptrs := make([]*resource.Object, len(stored))
	for i := range stored {
		ptrs[i] = &stored[i]
	}
	var a lb.Allocator
	return a.AssignAll(objs, ptrs)
}

func newServiceCmd() *cobra.Command {
	svc := &cobra.Command{Use: "service", Aliases: []string{"services", "svc"}, Short: "Services as this node's datapath load-balances them"}
	svc.AddCommand(&cobra.Command{
		Use:   "list",
		Short: "List frontends with their backends, states and zones",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			asJSON, err := jsonOutput()
			if err != nil {
				return err
			}
			var list []api.Service
			if err := client().Do(cmd.Context(), "GET", "/v1/services", nil, &list); err != nil {
				return err
			}
			if asJSON {
				return printJSON(os.Stdout, list)
			}
			var rows [][]string
			for _, s := range list {
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
				rows = append(rows, []string{u(s.ID), s.Service, s.Type, s.Frontend + "/" + s.Protocol, s.Scope, dash(strings.Join(bs, ", "))})
			}
			return printTable("ID\tSERVICE\tTYPE\tFRONTEND\tSCOPE\tBACKENDS", rows)
		},
	})
	return svc
}
