package lab

import (
	"fmt"
	"log/slog"
	"net/netip"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/lumen-net/lumen/internal/fielderr"
	"github.com/lumen-net/lumen/internal/lab/labpath"
)

// External clients: namespaces on the underlay bridge that play machines
// outside the cluster (no agent, no pod CIDR), e.g. to reach NodePorts the
// way outside traffic does. Client i gets ClientIPv4(i) and ClientIPv6(i).

// MaxClients bounds the clients of a topology (their addresses stay clear
// of the nodes').
const MaxClients = 50

// firstClientHost is the last octet of client 0's IPv4 address; nodes
// with clients present must stay below it.
const firstClientHost = 200

// ClientIPv4 is client i's underlay IPv4 address (prefix /24): 10.99.0.200 and up.
func ClientIPv4(i int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 99, 0, byte(firstClientHost + i)}), 24)
}

// ClientIPv6 is client i's underlay IPv6 address (prefix /64): fd00:10:99::200 and up.
func ClientIPv6(i int) netip.Prefix {
	return netip.PrefixFrom(netip.MustParseAddr(fmt.Sprintf("fd00:10:99::%x", 0x200+i)), 64)
}

// ClientNS is the namespace of an external client.
func ClientNS(lab, client string) string { return labpath.NSPrefix(lab) + "client-" + client }

// ClientState is one external client of a running lab.
type ClientState struct {
	Name  string   `json:"name"`
	NetNS string   `json:"netns"`
	IPs   []string `json:"ips"` // with prefix length, IPv4 then IPv6
}

// Addr returns the client's address of family 4 or 6.
func (c *ClientState) Addr(family int) (netip.Addr, bool) {
	i := 0
	if family == 6 {
		i = 1
	}
	if i >= len(c.IPs) {
		return netip.Addr{}, false
	}
	p, err := netip.ParsePrefix(c.IPs[i])
	return p.Addr(), err == nil
}

// FindClient returns the external client called name.
func (s *State) FindClient(name string) (*ClientState, error) {
	for i := range s.Clients {
		if s.Clients[i].Name == name {
			return &s.Clients[i], nil
		}
	}
	return nil, fmt.Errorf("no client %q in lab %q", name, s.Name)
}

func (t *Topology) validateClients() []*fielderr.Error {
	var errs []*fielderr.Error
	fail := func(path, format string, args ...any) {
		errs = append(errs, &fielderr.Error{Path: path, Msg: fmt.Sprintf(format, args...)})
	}
	if len(t.Clients) == 0 {
		return nil
	}
	if len(t.Clients) > MaxClients {
		fail("clients", "%d clients, at most %d are supported", len(t.Clients), MaxClients)
	}
	if len(t.Nodes) >= firstClientHost {
		fail("clients", "clients use 10.99.0.%d and up: at most %d nodes with clients, got %d", firstClientHost, firstClientHost-1, len(t.Nodes))
	}
	// Client namespaces lmn-<lab>-client-<name> must not collide with
	// lmn-<lab>-<node> or lmn-<lab>-<node>-<pod>.
	taken := map[string]string{}
	for _, n := range t.Nodes {
		taken[n.Name] = fmt.Sprintf("node %q", n.Name)
	}
	for _, p := range t.Pods {
		taken[p.Node+"-"+p.Name] = fmt.Sprintf("pod %q on node %q", p.Name, p.Node)
	}
	seen := map[string]int{}
	for i, c := range t.Clients {
		p := fmt.Sprintf("clients[%d].name", i)
		if msg := checkDNSLabel(c.Name); msg != "" {
			fail(p, "%s", msg)
			continue
		}
		if j, dup := seen[c.Name]; dup {
			fail(p, "duplicate client %q (also clients[%d])", c.Name, j)
			continue
		}
		seen[c.Name] = i
		if other, ok := taken["client-"+c.Name]; ok {
			fail(p, "client %q: its namespace %s would collide with %s", c.Name, "client-"+c.Name, other)
		}
	}
	return errs
}

// buildClients creates the external clients' namespaces on the underlay.
func buildClients(st *State, t *Topology, log *slog.Logger) error {
	for i, c := range t.Clients {
		ns := ClientNS(st.Name, c.Name)
		log.Info("creating client", "client", c.Name, "netns", ns)
		st.Clients = append(st.Clients, ClientState{Name: c.Name, NetNS: ns, IPs: []string{ClientIPv4(i).String(), ClientIPv6(i).String()}})
		if err := st.save(); err != nil {
			return err
		}
		if err := setupUnderlayNS(labpath.UnderlayNS(st.Name), ns, clientPort(c.Name, i), []netip.Prefix{ClientIPv4(i), ClientIPv6(i)}); err != nil {
			return fmt.Errorf("client %s: %w", c.Name, err)
		}
		if WantsXDPPeers(st.AgentArgs) { // complete checksums for XDP, see xdp.go
			if err := txChecksumOff(ns, NodeDevice); err != nil {
				return fmt.Errorf("client %s: %w", c.Name, err)
			}
		}
	}
	return nil
}

// clientPort names client i's bridge port in the underlay.
func clientPort(name string, i int) string {
	if n := "cl-" + name; len(n) <= 15 {
		return n
	}
	return fmt.Sprintf("client%d", i)
}

// setupUnderlayNS creates a namespace of the underlay (an external client's,
// a BGP router's) joined to the underlay bridge by a veth (eth0 inside)
// carrying addrs.
func setupUnderlayNS(underlayNS, nsName, port string, addrs []netip.Prefix) error {
	if err := CreateNS(nsName); err != nil {
		return err
	}
	uh, err := nlHandle(underlayNS)
	if err != nil {
		return err
	}
	defer uh.Close()
	nh, err := nlHandle(nsName)
	if err != nil {
		return err
	}
	defer nh.Close()
	fd, err := unix.Open(labpath.NSPath(nsName), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("opening namespace %s: %w", nsName, err)
	}
	defer unix.Close(fd)
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: port}, PeerName: NodeDevice, PeerNamespace: netlink.NsFd(fd)}
	if err := uh.LinkAdd(veth); err != nil {
		return fmt.Errorf("adding veth %s/%s: %w", port, NodeDevice, err)
	}
	br, err := uh.LinkByName(underlayBridge)
	if err != nil {
		return fmt.Errorf("finding bridge: %w", err)
	}
	pl, err := uh.LinkByName(port)
	if err != nil {
		return fmt.Errorf("finding %s: %w", port, err)
	}
	if err := uh.LinkSetMaster(pl, br); err != nil {
		return fmt.Errorf("attaching %s to the bridge: %w", port, err)
	}
	if err := uh.LinkSetUp(pl); err != nil {
		return fmt.Errorf("setting %s up: %w", port, err)
	}
	if err := linkUp(nh, "lo"); err != nil {
		return err
	}
	eth, err := nh.LinkByName(NodeDevice)
	if err != nil {
		return fmt.Errorf("finding %s: %w", NodeDevice, err)
	}
	for _, a := range addrs {
		ipn, err := netlink.ParseIPNet(a.String())
		if err != nil {
			return err
		}
		addr := &netlink.Addr{IPNet: ipn}
		if a.Addr().Is6() {
			addr.Flags = unix.IFA_F_NODAD
		}
		if err := nh.AddrAdd(eth, addr); err != nil {
			return fmt.Errorf("adding %s to %s: %w", a, NodeDevice, err)
		}
	}
	if err := nh.LinkSetUp(eth); err != nil {
		return fmt.Errorf("setting %s up: %w", NodeDevice, err)
	}
	return nil
}

// ClientProbeSpecs resolves `lumen lab probe client/NAME TO:PORT/PROTO`:
// probes from an external client (TO a pod or an address).
func ClientProbeSpecs(st *State, name string, t Target, families []int) ([]ProbeSpec, error) {
	c, err := st.FindClient(name)
	if err != nil {
		return nil, err
	}
	// Probes name their source as a pod does: "client/NAME".
	src := &PodState{Name: c.Name, Namespace: "client", NetNS: c.NetNS}
	if !t.IsPod {
		return []ProbeSpec{{From: src, To: t.Addr.String(), Target: netip.AddrPortFrom(t.Addr, t.Port.Port), Proto: t.Port.Protocol}}, nil
	}
	dst, err := st.FindPod(t.Host)
	if err != nil {
		return nil, err
	}
	var specs []ProbeSpec
	for _, fam := range families {
		addr, ok := dst.Addr(fam)
		if !ok {
			return nil, fmt.Errorf("pod %s has no IPv%d address", dst.FullName(), fam)
		}
		specs = append(specs, ProbeSpec{From: src, To: dst.FullName(), Target: netip.AddrPortFrom(addr, t.Port.Port), Proto: t.Port.Protocol})
	}
	return specs, nil
}

// ClientRef returns NAME for "client/NAME" when the lab has such a client
// (a pod "NAME" in a namespace "client" is shadowed by it).
func ClientRef(st *State, ref string) (string, bool) {
	name, ok := strings.CutPrefix(ref, "client/")
	if !ok {
		return "", false
	}
	_, err := st.FindClient(name)
	return name, err == nil
}
