package cli

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/lumen-net/lumen/internal/api"
	"github.com/lumen-net/lumen/internal/ipproto"
)

func newBPFCmd() *cobra.Command {
	b := &cobra.Command{Use: "bpf", Short: "Show the datapath's BPF maps as the kernel holds them"}
	list := func(use, short string, header string, rows func(ctx context.Context) (any, [][]string, error)) *cobra.Command {
		return &cobra.Command{
			Use: use, Short: short, Args: cobra.NoArgs,
			RunE: func(cmd *cobra.Command, _ []string) error {
				asJSON, err := JSONOutput()
				if err != nil {
					return err
				}
				raw, table, err := rows(cmd.Context())
				if err != nil {
					return err
				}
				if asJSON {
					return PrintJSON(os.Stdout, raw)
				}
				return printTable(header, table)
			},
		}
	}
	group := func(name, short string, sub *cobra.Command) *cobra.Command {
		g := &cobra.Command{Use: name, Short: short}
		g.AddCommand(sub)
		return g
	}
	b.AddCommand(group("endpoint", "Endpoint map", list("list", "List the endpoint map", "IP\tID\tIDENTITY\tIFINDEX\tFLAGS\tMAC\tHOST MAC",
		func(ctx context.Context) (any, [][]string, error) {
			eps, err := client().BPFEndpoints(ctx)
			var t [][]string
			for _, e := range eps {
				t = append(t, []string{e.IP, u(e.ID), u(e.Identity), u(e.IfIndex), epFlags(e.Flags), e.MAC, e.HostMAC})
			}
			return eps, t, err
		})))
	b.AddCommand(group("ipcache", "IP to identity map", list("list", "List the ipcache", "PREFIX\tIDENTITY\tTUNNEL ENDPOINT\tNODE OF",
		func(ctx context.Context) (any, [][]string, error) {
			es, err := client().BPFIPCache(ctx)
			var t [][]string
			for _, e := range es {
				t = append(t, []string{e.Prefix, u(e.Identity), Dash(e.Tunnel), Dash(e.NodeOf)})
			}
			return es, t, err
		})))
	ct := group("ct", "Connection tracking table", &cobra.Command{
		Use:   "flush",
		Short: "Delete every connection tracking entry (established connections are then evaluated as new)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var out map[string]int
			if err := client().Do(cmd.Context(), "DELETE", "/v1/bpf/ct", nil, &out); err != nil {
				return err
			}
			fmt.Printf("deleted %d entries\n", out["deleted"])
			return nil
		},
	})
	b.AddCommand(ct)
	ct.AddCommand(list("list", "List connection tracking entries", "DIRECTION\tPROTO\tSOURCE\tDESTINATION\tPACKETS\tBYTES\tREPLY\tCLOSING\tIDLE",
		func(ctx context.Context) (any, [][]string, error) {
			es, err := client().BPFCT(ctx)
			var t [][]string
			for _, e := range es {
				t = append(t, []string{e.Direction, ipproto.Name(e.Proto), e.Src, e.Dst, u(e.Packets), u(e.Bytes), fmt.Sprint(e.SeenReply), fmt.Sprint(e.Closing), u(e.IdleSeconds) + "s"})
			}
			return es, t, err
		}))
	b.AddCommand(group("lb", "Service load-balancing maps", list("list", "List frontends and their active backends", "FRONTEND\tPROTO\tSCOPE\tID\tFLAGS\tBACKENDS",
		func(ctx context.Context) (any, [][]string, error) {
			svcs, err := client().BPFLB(ctx)
			var t [][]string
			for _, s := range svcs {
				var bs []string
				for _, b := range s.Backends {
					bs = append(bs, fmt.Sprintf("%d=%s", b.ID, b.Address))
				}
				scope := "external"
				if s.Scope == 1 {
					scope = "internal"
				}
				t = append(t, []string{s.Frontend, ipproto.Name(s.Proto), scope, u(s.RevNat), lbFlags(s.Flags), Dash(strings.Join(bs, " "))})
			}
			return svcs, t, err
		})))
	b.AddCommand(group("policy", "Per-endpoint policy map", &cobra.Command{
		Use:   "get ENDPOINT",
		Short: "Show an endpoint's policy map (ENDPOINT: id, container ID, pod name or namespace/pod)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			asJSON, err := JSONOutput()
			if err != nil {
				return err
			}
			ep, err := resolveEndpoint(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			rows, err := client().BPFPolicy(cmd.Context(), ep.ID)
			if err != nil {
				return err
			}
			if asJSON {
				return PrintJSON(os.Stdout, rows)
			}
			fmt.Printf("Endpoint %d (%s/%s), identity %d\n", ep.ID, ep.Namespace, ep.PodName, ep.Identity)
			var t [][]string
			for _, r := range rows {
				port := "any"
				if r.Proto != 0 && r.PortBits > 0 {
					port = u(r.Port)
					if r.PortBits < 16 {
						port = fmt.Sprintf("%d-%d", r.Port, uint32(r.Port)+(1<<(16-r.PortBits))-1)
					}
				}
				id := "any"
				if r.Identity != 0 {
					id = u(r.Identity)
				}
				t = append(t, []string{r.Direction, id, ipproto.Name(r.Proto), port, r.Verdict})
			}
			return printTable("DIRECTION\tIDENTITY\tPROTO\tPORT\tVERDICT", t)
		},
	}))
	return b
}

// resolveEndpoint finds an endpoint by id, container ID, pod or ns/pod.
func resolveEndpoint(ctx context.Context, ref string) (*api.Endpoint, error) {
	eps, err := client().Endpoints(ctx)
	if err != nil {
		return nil, err
	}
	var found []api.Endpoint
	for _, e := range eps {
		if strconv.Itoa(int(e.ID)) == ref || e.ContainerID == ref || e.PodName == ref || e.Namespace+"/"+e.PodName == ref {
			found = append(found, e)
		}
	}
	switch len(found) {
	case 0:
		return nil, fmt.Errorf("endpoint %q: no such endpoint on this node", ref)
	case 1:
		return &found[0], nil
	}
	return nil, fmt.Errorf("endpoint %q: ambiguous (%d matches): use namespace/pod or the id", ref, len(found))
}

func printTable(header string, rows [][]string) error {
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, header)
	for _, r := range rows {
		fmt.Fprintln(w, strings.Join(r, "\t"))
	}
	return w.Flush()
}

func u[T ~uint8 | ~uint16 | ~uint32 | ~uint64](v T) string { return strconv.FormatUint(uint64(v), 10) }

func epFlags(f uint16) string {
	var s []string
	for i, name := range []string{"ingress-enforced", "egress-enforced", "audit", "host"} {
		if f&(1<<i) != 0 {
			s = append(s, name)
		}
	}
	if len(s) == 0 {
		return "-"
	}
	return strings.Join(s, ",")
}

func lbFlags(f uint32) string {
	var s []string
	for i, name := range []string{"maglev", "affinity", "nodeport"} {
		if f&(1<<i) != 0 {
			s = append(s, name)
		}
	}
	if len(s) == 0 {
		return "-"
	}
	return strings.Join(s, ",")
}
