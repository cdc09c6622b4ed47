package loadbalancer

import (
	"encoding/json"
	"fmt"
	"hash/fnv"
	"math/big"
	"net/netip"
	"slices"

	"github.com/lumen-net/lumen/internal/fielderr"
	"github.com/lumen-net/lumen/internal/resource"
)

// DefaultServiceCIDRs are the service CIDRs the Allocator uses when none are
// configured (a /16 of kubeadm's IPv4 default 10.96.0.0/12, clear of the lab's 10.99.0.0/24 underlay, and an IPv6 /108).
var DefaultServiceCIDRs = []netip.Prefix{
	netip.MustParsePrefix("10.96.0.0/16"),
	netip.MustParsePrefix("fd00:10:96::/108"),
}

// Allocator assigns what the API server assigns to a Service on creation:
// cluster IPs from the service CIDRs and node ports from the node port
// range. Standalone mode has no API server, so `lumen apply` must run
// Assign (or AssignAll) on Services before storing them.
//
// Allocation is deterministic and conflict-free over what is stored: a
// service's first candidate address is a hash of "namespace/name/family"
// into the CIDR, probing upwards (wrapping) past addresses other services
// hold; node ports likewise from "namespace/name/port". An update keeps the
// addresses and node ports the stored object already has (cluster IPs are
// immutable, like in Kubernetes).
type Allocator struct {
	// ServiceCIDRs has at most one prefix per family; the first one's family
	// is the primary one (single-stack services without ipFamilies get it).
	// Empty means DefaultServiceCIDRs.
	ServiceCIDRs []netip.Prefix
	// NodePortMin and NodePortMax bound allocated node ports; 0 means the
	// default 30000-32767.
	NodePortMin, NodePortMax int32
}

// AssignAll assigns every Service of objs in order, against the stored
// objects and the services assigned before it in the same batch. Other
// kinds are left alone. The objects must have been validated.
func (a *Allocator) AssignAll(objs []resource.Object, stored []*resource.Object) error {
	have := slices.Clone(stored)
	for i := range objs {
		if objs[i].Kind != "Service" {
			continue
		}
		if err := a.Assign(&objs[i], have); err != nil {
			return err
		}
		have = append(have, &objs[i]) // a later duplicate of the same key replaces it
	}
	return nil
}

// Holders tells the Allocator which cluster IPs and node ports services
// hold: the holder's "namespace/name", "" when free. A service's own
// addresses and ports may be reported with its own name.
type Holders interface {
	IPHolder(a netip.Addr) (string, error)
	NodePortHolder(port int32) (string, error)
}

// mapHolders are Holders from decoded services.
type mapHolders struct {
	ips   map[netip.Addr]string
	ports map[int32]string
}

func (m *mapHolders) IPHolder(a netip.Addr) (string, error)  { return m.ips[a], nil }
func (m *mapHolders) NodePortHolder(p int32) (string, error) { return m.ports[p], nil }
func (m *mapHolders) add(s *Service) {
	for _, ip := range s.ClusterAddrs() {
		if _, ok := m.ips[ip]; !ok {
			m.ips[ip] = s.Key()
		}
	}
	for _, p := range s.Spec.Ports {
		if p.NodePort != 0 {
			if _, ok := m.ports[p.NodePort]; !ok {
				m.ports[p.NodePort] = s.Key()
			}
		}
	}
}

// Assign fills in obj's missing cluster IPs and node ports and checks the
// given ones against the other services of existing (objects of other
// kinds, and the stored version of obj itself, are not conflicts). obj must
// have been validated. Errors name the field and value, like validation.
func (a *Allocator) Assign(obj *resource.Object, existing []*resource.Object) error {
	svc, err := ServiceOf(obj)
	if err != nil {
		return err
	}
	used := &mapHolders{ips: map[netip.Addr]string{}, ports: map[int32]string{}}
	var prev *Service
	for i := len(existing) - 1; i >= 0; i-- { // later entries win
		o := existing[i]
		if o.Kind != "Service" {
			continue
		}
		s, err := ServiceOf(o)
		if err != nil {
			continue // not ours to judge; it holds nothing we can read
		}
		if s.Key() == svc.Key() {
			if prev == nil {
				prev = s
			}
			continue
		}
		used.add(s)
	}
	return a.AssignWith(obj, prev, used)
}

// AssignWith is Assign against Holders: prev is the stored version of obj
// (nil when new); what holders attribute to obj itself counts as free.
func (a *Allocator) AssignWith(obj *resource.Object, prev *Service, holders Holders) error {
	svc, err := ServiceOf(obj)
	if err != nil {
		return err
	}
	cidrs := a.ServiceCIDRs
	if len(cidrs) == 0 {
		cidrs = DefaultServiceCIDRs
	}
	h := &checkedHolders{h: holders, self: svc.Key()}
	var el errs
	if !svc.IsHeadless() {
		a.assignClusterIPs(svc, prev, cidrs, h, &el)
	}
	a.assignNodePorts(svc, prev, h, &el)
	if h.err != nil {
		return fmt.Errorf("allocating for %s: %w", obj, h.err)
	}
	if len(el) > 0 {
		return &resource.ObjectError{Object: obj.String(), Errs: resource.ErrorList(el)}
	}
	b, err := json.Marshal(svc.Spec)
	if err != nil {
		return fmt.Errorf("encoding %s: %w", obj, err)
	}
	obj.Spec = b
	return nil
}

// checkedHolders keeps the first lookup error (allocation then fails with
// it) and reads the service's own holdings as free.
type checkedHolders struct {
	h    Holders
	self string
	err  error
}

func (c *checkedHolders) ip(a netip.Addr) string {
	if c.err != nil {
		return ""
	}
	o, err := c.h.IPHolder(a)
	if err != nil {
		c.err = err
		return ""
	}
	if o == c.self {
		return ""
	}
	return o
}

func (c *checkedHolders) port(p int32) string {
	if c.err != nil {
		return ""
	}
	o, err := c.h.NodePortHolder(p)
	if err != nil {
		c.err = err
		return ""
	}
	if o == c.self {
		return ""
	}
	return o
}

func cidrFor(cidrs []netip.Prefix, fam string) (netip.Prefix, bool) {
	for _, p := range cidrs {
		if family(p.Addr()) == fam {
			return p.Masked(), true
		}
	}
	return netip.Prefix{}, false
}

func (a *Allocator) assignClusterIPs(svc, prev *Service, cidrs []netip.Prefix, used *checkedHolders, el *errs) {
	spec := &svc.Spec
	var prevAddrs []netip.Addr
	if prev != nil && !prev.IsHeadless() {
		prevAddrs = prev.ClusterAddrs()
	}
	// Which families, in order.
	fams := slices.Clone(spec.IPFamilies)
	if len(fams) == 0 && len(spec.ClusterIPs) == 0 {
		for _, p := range prevAddrs {
			fams = append(fams, family(p))
		}
		if len(fams) == 0 {
			fams = []string{family(cidrs[0].Addr())}
		}
	}
	if len(fams) == 1 && spec.IPFamilyPolicy != SingleStack {
		other := IPv6
		if fams[0] == IPv6 {
			other = IPv4
		}
		if _, ok := cidrFor(cidrs, other); ok {
			fams = append(fams, other)
		} else if spec.IPFamilyPolicy == RequireDualStack {
			el.add(resource.Invalid("spec.ipFamilyPolicy", spec.IPFamilyPolicy, "this cluster is not configured for dual-stack services (no "+other+" service CIDR)"))
			return
		}
	}
	if len(fams) > 1 && spec.IPFamilyPolicy == SingleStack {
		fams = fams[:1]
	}
	ips := make([]string, len(fams))
	for i, fam := range fams {
		path := fmt.Sprintf("spec.clusterIPs[%d]", i)
		cidr, ok := cidrFor(cidrs, fam)
		var prevIP netip.Addr
		for _, p := range prevAddrs {
			if family(p) == fam {
				prevIP = p
			}
		}
		if i < len(spec.ClusterIPs) {
			ip := spec.ClusterIPs[i]
			addr, err := parseIP(ip)
			switch {
			case err != nil:
				el.add(resource.Invalid(path, ip, err.Error()))
			case prevIP.IsValid() && addr != prevIP:
				el.add(resource.Invalid(path, ip, fmt.Sprintf("field is immutable (the service has %s)", prevIP)))
			case !ok:
				el.add(resource.Invalid(path, ip, "this cluster has no "+fam+" service CIDR"))
			case !cidr.Contains(addr):
				el.add(resource.Invalid(path, ip, fmt.Sprintf("provided IP is not in the valid range. The range of valid IPs is %s", cidr)))
			case used.ip(addr) != "":
				el.add(resource.Invalid(path, ip, fmt.Sprintf("provided IP is already allocated (to service %s)", used.ip(addr))))
			}
			ips[i] = ip
			continue
		}
		if prevIP.IsValid() {
			ips[i] = prevIP.String()
			continue
		}
		if !ok {
			el.add(resource.Invalid("spec.ipFamilies", fam, "this cluster has no "+fam+" service CIDR"))
			return
		}
		addr, found := allocateIP(cidr, svc.Key()+"/"+fam, used)
		if !found {
			el.add(&fielderr.Error{Path: path, Msg: fmt.Sprintf("no free address left in the service CIDR %s", cidr)})
			return
		}
		ips[i] = addr.String()
	}
	spec.ClusterIPs = ips
	spec.ClusterIP = ips[0]
	spec.IPFamilies = fams
}

// maxProbes bounds the candidates one allocation looks at (a full range
// is found full sooner: see allocateIP).
const maxProbes = 1 << 20

// allocateIP picks the first free address at or after hash(seed) in cidr,
// skipping the network address (and the IPv4 broadcast address).
func allocateIP(cidr netip.Prefix, seed string, used *checkedHolders) (netip.Addr, bool) {
	hostBits := cidr.Addr().BitLen() - cidr.Bits()
	// Hosts are [first, first+size); huge IPv6 ranges are cut to 2^62
	// addresses, far more than any probe visits.
	first, size := uint64(0), uint64(1)<<min(hostBits, 62)
	if hostBits >= 2 {
		first, size = 1, size-1 // not the network address
		if cidr.Addr().Is4() {
			size-- // nor the broadcast address
		}
	}
	h := fnv.New64a()
	h.Write([]byte(seed))
	off := h.Sum64() % size
	for i := range min(size, maxProbes) {
		a := addOffset(cidr.Addr(), first+(off+i)%size)
		if used.ip(a) == "" {
			return a, used.err == nil
		}
	}
	return netip.Addr{}, false
}

func addOffset(base netip.Addr, off uint64) netip.Addr {
	b := base.As16()
	n := new(big.Int).SetBytes(b[:])
	n.Add(n, new(big.Int).SetUint64(off))
	var out [16]byte
	n.FillBytes(out[:])
	a := netip.AddrFrom16(out)
	if base.Is4() {
		return a.Unmap()
	}
	return a
}

func (a *Allocator) assignNodePorts(svc, prev *Service, used *checkedHolders, el *errs) {
	spec := &svc.Spec
	lo, hi := a.NodePortMin, a.NodePortMax
	if lo == 0 {
		lo = DefaultNodePortMin
	}
	if hi == 0 {
		hi = DefaultNodePortMax
	}
	wants := spec.Type == TypeNodePort || (spec.Type == TypeLoadBalancer && (spec.AllocateLoadBalancerNodePorts == nil || *spec.AllocateLoadBalancerNodePorts))
	own := map[int32]bool{} // ports this service uses (several protocols may share one)
	for i, p := range spec.Ports {
		if p.NodePort == 0 {
			continue
		}
		path := fmt.Sprintf("spec.ports[%d].nodePort", i)
		switch {
		case p.NodePort < lo || p.NodePort > hi:
			el.add(resource.Invalid(path, p.NodePort, fmt.Sprintf("provided port is not in the valid range. The range of valid ports is %d-%d", lo, hi)))
		case used.port(p.NodePort) != "":
			el.add(resource.Invalid(path, p.NodePort, fmt.Sprintf("provided port is already allocated (to service %s)", used.port(p.NodePort))))
		}
		own[p.NodePort] = true
	}
	if !wants {
		return
	}
	for i := range spec.Ports {
		p := &spec.Ports[i]
		if p.NodePort != 0 {
			continue
		}
		// Keep what the stored service had for the same port.
		if prev != nil {
			for _, pp := range prev.Spec.Ports {
				if pp.Port == p.Port && pp.Protocol == p.Protocol && pp.NodePort != 0 && !own[pp.NodePort] && used.port(pp.NodePort) == "" {
					p.NodePort = pp.NodePort
				}
			}
		}
		if p.NodePort == 0 {
			n, ok := allocatePort(lo, hi, fmt.Sprintf("%s/%d/%s", svc.Key(), p.Port, p.Protocol), used, own)
			if !ok {
				el.add(&fielderr.Error{Path: fmt.Sprintf("spec.ports[%d].nodePort", i), Msg: fmt.Sprintf("no free node port left in %d-%d", lo, hi)})
				return
			}
			p.NodePort = n
		}
		own[p.NodePort] = true
	}
}

func allocatePort(lo, hi int32, seed string, used *checkedHolders, own map[int32]bool) (int32, bool) {
	size := uint64(hi - lo + 1)
	h := fnv.New64a()
	h.Write([]byte(seed))
	off := h.Sum64() % size
	for i := range size {
		n := lo + int32((off+i)%size)
		if !own[n] && used.port(n) == "" {
			return n, used.err == nil
		}
	}
	return 0, false
}
