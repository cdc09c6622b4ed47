package cli

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/lumen-net/lumen/internal/api"
	"github.com/lumen-net/lumen/internal/lab/labpath"
	"github.com/lumen-net/lumen/internal/policysync" // also registers the policy kinds
	"github.com/lumen-net/lumen/internal/resource"
)

func newPolicyCmd(reg *resource.Registry, openLab OpenLab) *cobra.Command {
	p := &cobra.Command{Use: "policy", Short: "Network policies: list, delete, explain verdicts"}
	var kv, ns string
	get := &cobra.Command{
		Use:   "get [NAME]",
		Short: "List network policies of every kind (all namespaces unless -n)",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			asJSON, err := JSONOutput()
			if err != nil {
				return err
			}
			c, err := dialKVStore(cmd.Context(), kv)
			if err != nil {
				return err
			}
			defer c.Close()
			var objs []resource.Object
			for _, name := range policysync.KindNames {
				kind, err := reg.ResolveKind(name)
				if err != nil {
					return err
				}
				list, err := resource.List(cmd.Context(), c, kind, ns)
				if err != nil {
					return err
				}
				for _, o := range list {
					if len(args) == 0 || o.Metadata.Name == args[0] {
						objs = append(objs, o)
					}
				}
			}
			if len(args) == 1 && len(objs) == 0 {
				return fmt.Errorf("policy %q not found", args[0])
			}
			if asJSON {
				return PrintJSON(os.Stdout, objs)
			}
			var rows [][]string
			for _, o := range objs {
				rows = append(rows, []string{o.Kind, Dash(o.Metadata.Namespace), o.Metadata.Name})
			}
			return printTable("KIND\tNAMESPACE\tNAME", rows)
		},
	}
	kvstoreFlag(get, &kv)
	get.Flags().StringVarP(&ns, "namespace", "n", "", "only this namespace")
	del := newDeleteCmd(reg)
	del.Short = "Delete network policies (KIND NAME..., e.g. cnp allow-web, or -f FILE)"
	p.AddCommand(get, del, newExplainCmd(openLab))
	return p
}

// side is one end of the packet being explained.
type side struct {
	ip   netip.Addr
	node string // lab node hosting it, if it is a lab pod
	name string
}

func newExplainCmd(openLab OpenLab) *cobra.Command {
	var from, to, family string
	cmd := &cobra.Command{
		Use:   "explain --from POD|IP --to POD|IP:PORT/PROTO",
		Short: "Explain why a connection is allowed or denied, naming the exact rules",
		Long: `Explain asks the agents that enforce the connection: the source's node for
its egress policy and the destination's node for its ingress policy. The
answer comes from the same computation that fills the policy maps.

In the lab, PODs are namespace/name (or a unique name); elsewhere give IPs and
the agent (--socket or --node) that hosts the endpoint.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			asJSON, err := JSONOutput()
			if err != nil {
				return err
			}
			target, port, proto, err := splitTarget(to)
			if err != nil {
				return err
			}
			fam := 4
			switch family {
			case "4", "":
			case "6":
				fam = 6
			default:
				return fmt.Errorf("invalid --family %q: want 4 or 6", family)
			}
			src, err := resolveSide(openLab, from, fam)
			if err != nil {
				return fmt.Errorf("--from: %w", err)
			}
			dst, err := resolveSide(openLab, target, fam)
			if err != nil {
				return fmt.Errorf("--to: %w", err)
			}
			ctx := cmd.Context()
			var answers []*api.Explanation
			var notes []string
			ask := func(s side, peer netip.Addr, dir string) {
				x, err := sideClient(s).Explain(ctx, &api.ExplainRequest{Endpoint: s.ip.String(), Peer: peer.String(), Direction: dir, Protocol: proto, Port: port})
				if err != nil {
					notes = append(notes, fmt.Sprintf("%s side (%s): %v", dir, s.ip, err))
					return
				}
				answers = append(answers, x)
			}
			ask(src, dst.ip, "egress")
			ask(dst, src.ip, "ingress")
			allowed := len(answers) > 0
			for _, x := range answers {
				allowed = allowed && x.Allowed
			}
			if asJSON {
				return PrintJSON(os.Stdout, struct {
					Allowed bool               `json:"allowed"`
					Sides   []*api.Explanation `json:"sides"`
					Notes   []string           `json:"notes,omitempty"`
				}{allowed, answers, notes})
			}
			verdict := "ALLOWED"
			if !allowed {
				verdict = "DENIED"
			}
			fmt.Printf("%s -> %s %d/%s: %s\n", src.name, dst.name, port, strings.ToUpper(proto), verdict)
			for _, x := range answers {
				v := "allowed"
				if !x.Allowed {
					v = "denied"
				}
				fmt.Printf("\n%s of %s (endpoint %d, identity %d) on node %s, peer identity %d: %s\n  %s\n",
					x.Direction, x.Endpoint, x.EndpointID, x.EndpointIdentity, x.Node, x.PeerIdentity, v, x.Reason)
				for _, r := range x.Rules {
					fmt.Printf("  - %s %s.%s %s ports %s\n", r.Policy, r.Rule, r.Section, r.Selector, r.Ports)
				}
				for _, r := range x.Overridden {
					fmt.Printf("  - overridden allow: %s %s.%s %s ports %s\n", r.Policy, r.Rule, r.Section, r.Selector, r.Ports)
				}
				for _, w := range x.Warnings {
					fmt.Printf("  warning: %s\n", w)
				}
			}
			for _, n := range notes {
				fmt.Printf("\nnote: %s\n", n)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&from, "from", "", "source pod or IP")
	cmd.Flags().StringVar(&to, "to", "", "destination pod or IP, with :PORT/PROTO (tcp, udp, sctp; :TYPE/icmp or icmpv6)")
	cmd.Flags().StringVar(&family, "family", "4", "address family of lab pods: 4 or 6")
	_ = cmd.MarkFlagRequired("from")
	_ = cmd.MarkFlagRequired("to")
	return cmd
}

// splitTarget parses POD|IP:PORT/PROTO ([v6]:port/proto for IPv6); for
// icmp and icmpv6 the "port" is the ICMP type, as in the policy map.
func splitTarget(s string) (string, uint16, string, error) {
	slash := strings.LastIndex(s, "/")
	colon := strings.LastIndex(s, ":")
	if slash < 0 || colon < 0 || colon > slash {
		return "", 0, "", fmt.Errorf("--to %q: want POD|IP:PORT/PROTO", s)
	}
	proto := strings.ToLower(s[slash+1:])
	icmp := proto == "icmp" || proto == "icmpv6"
	switch {
	case proto == "tcp", proto == "udp", proto == "sctp", icmp:
	default:
		return "", 0, "", fmt.Errorf("--to %q: invalid protocol %q: want tcp, udp, sctp, icmp or icmpv6", s, proto)
	}
	port, err := strconv.ParseUint(s[colon+1:slash], 10, 16)
	switch {
	case icmp && (err != nil || port > 255):
		return "", 0, "", fmt.Errorf("--to %q: invalid ICMP type %q: want 0-255", s, s[colon+1:slash])
	case !icmp && (err != nil || port == 0):
		return "", 0, "", fmt.Errorf("--to %q: invalid port %q: want 1-65535", s, s[colon+1:slash])
	}
	host := strings.TrimSuffix(strings.TrimPrefix(s[:colon], "["), "]")
	return host, uint16(port), proto, nil
}

// Lab is a running lab as `policy explain` sees it.
type Lab interface {
	// Owner names the pod ("namespace/name") or node ("host NODE")
	// holding a, and its node.
	Owner(a netip.Addr) (name, node string, ok bool)
	// Pod finds pod ref (NAME or NAMESPACE/NAME): its full name, node and
	// addresses ("" when it has none of a family).
	Pod(ref string) (name, node, ipv4, ipv6 string, err error)
}

// OpenLab opens the running lab of that name. The lab's package provides
// it (cmd/lumen passes it in Options); without it explain takes addresses.
type OpenLab func(name string) (Lab, error)

// resolveSide finds a pod of the lab, or takes an IP as is.
func resolveSide(openLab OpenLab, ref string, family int) (side, error) {
	open := func() (Lab, error) {
		if openLab == nil {
			return nil, errors.New("this lumen has no lab support")
		}
		return openLab(g.lab)
	}
	if a, err := netip.ParseAddr(ref); err == nil {
		s := side{ip: a, name: a.String()}
		if l, err := open(); err == nil {
			if name, node, ok := l.Owner(a); ok {
				s.node, s.name = node, name
			}
		}
		return s, nil
	}
	l, err := open()
	if err != nil {
		return side{}, fmt.Errorf("%q is not an IP address, and there is no lab %q to find a pod in: %v", ref, g.lab, err)
	}
	name, node, ipv4, ipv6, err := l.Pod(ref)
	if err != nil {
		return side{}, err
	}
	addr := ipv4
	if family == 6 {
		addr = ipv6
	}
	a, err := netip.ParseAddr(addr)
	if err != nil {
		return side{}, fmt.Errorf("pod %s has no IPv%d address", name, family)
	}
	return side{ip: a, node: node, name: name}, nil
}

func sideClient(s side) *api.Client {
	if s.node != "" && g.node == "" {
		return api.NewClient(labpath.NodeSocket(g.lab, s.node))
	}
	return client()
}
