package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/vishvananda/netlink"

	"github.com/lumen-net/lumen/internal/fielderr"
	"github.com/lumen-net/lumen/internal/lab/labpath"
)

// BGP routers: namespaces on the underlay bridge running BIRD 2 or FRR,
// playing the data centre's top-of-rack routers. Router i has
// RouterIPv4(i) and RouterIPv6(i), peers (passively) with every node over
// IPv4 with both unicast families, installs what it learns into its own
// kernel, and sends nothing back. Unless the topology's agentArgs configure
// BGP themselves, the lab writes a Cilium 1.11 BGP ConfigMap peering every
// node with every router (BGPConfigFile) and starts the agents with it.
//
// Their state lives in routers.json beside state.json; `lab down` stops
// them before it deletes the namespaces.

// Router kinds.
const (
	RouterBIRD = "bird"
	RouterFRR  = "frr"
)

// MaxRouters keeps the routers' addresses (10.99.0.251-254) valid.
const MaxRouters = 4

// DefaultNodeASN is the nodes' AS number towards a router unless set.
const DefaultNodeASN = 65001

// firstRouterHost is the last octet of router 0's IPv4 address.
const firstRouterHost = 251

// Router is one BGP router of a topology.
type Router struct {
	Name string `json:"name"`
	// Kind is bird (default) or frr.
	Kind string `json:"kind,omitempty"`
	// ASN is the router's AS number.
	ASN uint32 `json:"asn"`
	// NodeASN is the AS the nodes use towards this router (default 65001);
	// it must differ from ASN: the lab's routers speak eBGP.
	NodeASN uint32 `json:"nodeASN,omitempty"`
}

// RouterIPv4 is router i's underlay IPv4 address (prefix /24).
func RouterIPv4(i int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 99, 0, byte(firstRouterHost + i)}), 24)
}

// RouterIPv6 is router i's underlay IPv6 address (prefix /64).
func RouterIPv6(i int) netip.Prefix {
	return netip.PrefixFrom(netip.MustParseAddr(fmt.Sprintf("fd00:10:99::%d", firstRouterHost+i)), 64)
}

// RouterNS is the namespace of a router.
func RouterNS(lab, router string) string { return labpath.NSPrefix(lab) + "router-" + router }

// RouterDir holds a router's configuration, control socket and pid files.
func RouterDir(lab, router string) string { return filepath.Join(labpath.Dir(lab), "routers", router) }

// RoutersFile records a lab's routers.
func RoutersFile(lab string) string { return filepath.Join(labpath.Dir(lab), "routers.json") }

// BGPConfigFile is the ConfigMap the lab writes for the agents.
func BGPConfigFile(lab string) string { return filepath.Join(labpath.Dir(lab), "bgp-config.yaml") }

// RouterState is one router of a running lab.
type RouterState struct {
	Name    string   `json:"name"`
	Kind    string   `json:"kind"`
	ASN     uint32   `json:"asn"`
	NodeASN uint32   `json:"nodeASN"`
	NetNS   string   `json:"netns"`
	IPs     []string `json:"ips"` // with prefix length, IPv4 then IPv6
	Dir     string   `json:"dir"`
	// Procs are bird, or zebra and bgpd.
	Procs []*Proc `json:"procs,omitempty"`
}

// Addr returns the router's address of family 4 or 6.
func (r *RouterState) Addr(family int) netip.Addr {
	i := 0
	if family == 6 {
		i = 1
	}
	if i >= len(r.IPs) {
		return netip.Addr{}
	}
	p, _ := netip.ParsePrefix(r.IPs[i])
	return p.Addr()
}

// CLI returns the command line that runs a router command: birdc for
// BIRD ("show route"), vtysh -c for FRR ("show bgp summary json").
func (r *RouterState) CLI(command string) []string {
	if r.Kind == RouterFRR {
		return []string{frrBinary("vtysh"), "--vty_socket", r.Dir, "-c", command}
	}
	return append([]string{birdBinary("birdc"), "-s", filepath.Join(r.Dir, "bird.ctl")}, strings.Fields(command)...)
}

// Run runs a router command (see CLI) and returns its output.
func (r *RouterState) Run(ctx context.Context, command string) (string, error) {
	argv := r.CLI(command)
	out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("router %s: %s: %w: %s", r.Name, strings.Join(argv, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// LoadRouters reads a lab's routers (none when it has no routers.json).
func LoadRouters(lab string) ([]RouterState, error) {
	b, err := os.ReadFile(RoutersFile(lab))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading routers: %w", err)
	}
	var rs []RouterState
	if err := json.Unmarshal(b, &rs); err != nil {
		return nil, fmt.Errorf("reading %s: %w", RoutersFile(lab), err)
	}
	return rs, nil
}

// FindRouter returns a router of the lab.
func FindRouter(lab, name string) (*RouterState, error) {
	rs, err := LoadRouters(lab)
	if err != nil {
		return nil, err
	}
	for i := range rs {
		if rs[i].Name == name {
			return &rs[i], nil
		}
	}
	return nil, fmt.Errorf("no router %q in lab %q", name, lab)
}

func saveRouters(lab string, rs []RouterState) error {
	b, err := json.MarshalIndent(rs, "", "  ")
	if err != nil {
		return err
	}
	tmp := RoutersFile(lab) + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("writing routers: %w", err)
	}
	return os.Rename(tmp, RoutersFile(lab))
}

// RouterRoutes lists the routes a router's kernel holds to other networks
// (those with a gateway): prefix -> next hops.
func RouterRoutes(lab, router string) (map[netip.Prefix][]netip.Addr, error) {
	h, err := nlHandle(RouterNS(lab, router))
	if err != nil {
		return nil, err
	}
	defer h.Close()
	out := map[netip.Prefix][]netip.Addr{}
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		routes, err := h.RouteList(nil, fam)
		if err != nil {
			return nil, fmt.Errorf("listing routes of router %s: %w", router, err)
		}
		for _, rt := range routes {
			if rt.Dst == nil {
				continue
			}
			p, ok := netipPrefix(rt.Dst.IP, rt.Dst.Mask)
			if !ok {
				continue
			}
			var gws []netip.Addr
			if a, ok := netip.AddrFromSlice(rt.Gw); ok {
				gws = append(gws, a.Unmap())
			}
			for _, nh := range rt.MultiPath {
				if a, ok := netip.AddrFromSlice(nh.Gw); ok {
					gws = append(gws, a.Unmap())
				}
			}
			if len(gws) > 0 {
				slices.SortFunc(gws, netip.Addr.Compare)
				out[p] = gws
			}
		}
	}
	return out, nil
}

func netipPrefix(ip []byte, mask []byte) (netip.Prefix, bool) {
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		return netip.Prefix{}, false
	}
	a = a.Unmap()
	ones := 0
	for _, b := range mask {
		for ; b&0x80 != 0; b <<= 1 {
			ones++
		}
	}
	return netip.PrefixFrom(a, ones), true
}

// decoding and validation (called from ParseTopology and validate)

// withoutRouters returns the topology tree without its routers, which
// routers() decodes.
func withoutRouters(raw any) any {
	m, ok := raw.(map[string]any)
	if !ok {
		return raw
	}
	if _, has := m["routers"]; !has {
		return raw
	}
	out := make(map[string]any, len(m))
	for k, v := range m {
		if k != "routers" {
			out[k] = v
		}
	}
	return out
}

func (d *decoder) routers(t *Topology, raw any) {
	m, ok := raw.(map[string]any)
	if !ok {
		return
	}
	for i, rv := range d.list("routers", m["routers"]) {
		p := fmt.Sprintf("routers[%d]", i)
		rm := d.object(p, rv, "name", "kind", "asn", "nodeASN")
		if rm == nil {
			continue
		}
		r := Router{Name: d.str(p+".name", rm["name"]), Kind: d.str(p+".kind", rm["kind"])}
		r.ASN = d.asn(p+".asn", rm["asn"], true)
		r.NodeASN = d.asn(p+".nodeASN", rm["nodeASN"], false)
		t.Routers = append(t.Routers, r)
	}
}

// asn reads an AS number: 1-4294967295 except AS_TRANS (23456).
func (d *decoder) asn(path string, v any, required bool) uint32 {
	if v == nil {
		if required {
			d.fail(path, "is required")
		}
		return 0
	}
	n, ok := v.(json.Number)
	if !ok {
		d.fail(path, "invalid AS number %s: want a number", describe(v))
		return 0
	}
	u, err := strconv.ParseUint(n.String(), 10, 32)
	if err != nil || u == 0 {
		d.fail(path, "invalid AS number %s: want 1 to 4294967295", n)
		return 0
	}
	if u == 23456 {
		d.fail(path, "invalid AS number 23456: reserved (AS_TRANS)")
		return 0
	}
	return uint32(u)
}

func (t *Topology) validateRouters() []*fielderr.Error {
	var errs []*fielderr.Error
	fail := func(path, format string, args ...any) {
		errs = append(errs, &fielderr.Error{Path: path, Msg: fmt.Sprintf(format, args...)})
	}
	if len(t.Routers) > MaxRouters {
		fail("routers", "%d routers, at most %d are supported", len(t.Routers), MaxRouters)
	}
	// Namespaces lmn-<lab>-router-<name> must not collide with the nodes'
	// and pods' (lmn-<lab>-<node>, lmn-<lab>-<node>-<pod>).
	taken := map[string]string{}
	for _, n := range t.Nodes {
		taken[n.Name] = fmt.Sprintf("node %q", n.Name)
	}
	for _, p := range t.Pods {
		taken[p.Node+"-"+p.Name] = fmt.Sprintf("pod %q on node %q", p.Name, p.Node)
	}
	seen := map[string]int{}
	for i := range t.Routers {
		r := &t.Routers[i]
		p := fmt.Sprintf("routers[%d]", i)
		if msg := checkDNSLabel(r.Name); msg != "" {
			fail(p+".name", "%s", msg)
		} else if j, dup := seen[r.Name]; dup {
			fail(p+".name", "duplicate router %q (also routers[%d])", r.Name, j)
		} else {
			seen[r.Name] = i
			if other, ok := taken["router-"+r.Name]; ok {
				fail(p+".name", "router %q: its namespace router-%s would collide with %s", r.Name, r.Name, other)
			}
		}
		switch r.Kind {
		case "":
			r.Kind = RouterBIRD
		case RouterBIRD, RouterFRR:
		default:
			fail(p+".kind", "invalid kind %q: want bird or frr", r.Kind)
		}
		if r.NodeASN == 0 {
			r.NodeASN = DefaultNodeASN
		}
		if r.ASN != 0 && r.ASN == r.NodeASN {
			fail(p+".nodeASN", "invalid AS number %d: the same as the router's asn; the lab's routers speak eBGP (set nodeASN)", r.NodeASN)
		}
	}
	return errs
}

// starting and stopping
