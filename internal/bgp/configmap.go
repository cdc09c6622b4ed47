package bgp

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/lumen-net/lumen/internal/fielderr"
	"github.com/lumen-net/lumen/internal/resource"
)

// ConfigMapKey is the key of the ConfigMap's data holding the configuration.
const ConfigMapKey = "config.yaml"

// FileConfig is the Cilium 1.11 BGP configuration: MetalLB's peers and
// address pools, as a ConfigMap (data."config.yaml") or its bare content.
type FileConfig struct {
	Peers []FilePeer
	Pools []AddressPool
}

// FilePeer is one entry of peers.
type FilePeer struct {
	Neighbor
	MyASN    uint32
	RouterID netip.Addr
	// NodeSelectors select the nodes that peer; none selects every node,
	// several select the union.
	NodeSelectors []*Selector
}

// AddressPool is one entry of address-pools.
type AddressPool struct {
	Name       string
	Protocol   string
	Prefixes   []netip.Prefix
	AutoAssign bool
}

// ConfigError lists every problem of a configuration, each naming its field.
type ConfigError struct {
	Source string
	Errs   resource.ErrorList
}

func (e *ConfigError) Error() string {
	lines := make([]string, len(e.Errs))
	for i, fe := range e.Errs {
		lines[i] = fe.Error()
		if e.Source != "" {
			lines[i] = e.Source + ": " + lines[i]
		}
	}
	return strings.Join(lines, "\n")
}

// LoadConfigMap reads and validates a configuration file.
func LoadConfigMap(path string) (*FileConfig, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading BGP configuration: %w", err)
	}
	c, err := ParseConfigMap(b)
	if ce, ok := err.(*ConfigError); ok {
		ce.Source = path
	}
	return c, err
}

// ParseConfigMap decodes and validates the Cilium 1.11 BGP configuration:
// a v1 ConfigMap whose data."config.yaml" holds it, or that content alone.
func ParseConfigMap(data []byte) (*FileConfig, error) {
	raw, err := yamlTree(data)
	if err != nil {
		return nil, &ConfigError{Errs: resource.ErrorList{{Path: "<document>", Msg: err.Error()}}}
	}
	w := &walker{}
	prefix := ""
	if m, ok := raw.(map[string]any); ok && (m["kind"] != nil || m["apiVersion"] != nil) {
		top := w.object("", m, "apiVersion", "kind", "metadata", "data")
		if api, _ := top["apiVersion"].(string); api != "v1" {
			w.add(resource.Unsupported("apiVersion", show(top["apiVersion"]), "v1"))
		}
		if kind, _ := top["kind"].(string); kind != "ConfigMap" {
			w.add(resource.Unsupported("kind", show(top["kind"]), "ConfigMap"))
		}
		dm := w.object("data", top["data"], ConfigMapKey)
		prefix = "data." + ConfigMapKey
		content, ok := dm[ConfigMapKey].(string)
		switch {
		case len(w.errs) > 0:
		case dm[ConfigMapKey] == nil:
			w.add(resource.Required(prefix))
		case !ok:
			w.errs = append(w.errs, &fielderr.Error{Path: prefix, Msg: "must be a string holding the YAML configuration"})
		default:
			raw, err = yamlTree([]byte(content))
			if err != nil {
				w.errs = append(w.errs, &fielderr.Error{Path: prefix, Msg: err.Error()})
			}
		}
		if len(w.errs) > 0 {
			return nil, &ConfigError{Errs: w.errs}
		}
	}
	c := w.fileConfig(prefix, raw)
	if len(w.errs) > 0 {
		return nil, &ConfigError{Errs: w.errs}
	}
	return c, nil
}

// yamlTree decodes YAML (or JSON) into a generic tree with json.Number
// numbers; duplicate keys are errors.
func yamlTree(data []byte) (any, error) {
	j, err := yaml.YAMLToJSONStrict(data)
	if err != nil {
		return nil, fmt.Errorf("parsing YAML: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(j))
	dec.UseNumber()
	var raw any
	if err := dec.Decode(&raw); err != nil {
		return nil, fmt.Errorf("parsing YAML: %w", err)
	}
	return raw, nil
}

func (w *walker) fileConfig(path string, raw any) *FileConfig {
	c := &FileConfig{}
	if raw == nil {
		w.errs = append(w.errs, &fielderr.Error{Path: orDoc(path), Msg: "is empty: want peers (and address-pools)"})
		return c
	}
	m := w.object(path, raw, "peers", "address-pools", "bgp-communities")
	if m == nil {
		return c
	}
	if m["bgp-communities"] != nil {
		w.errs = append(w.errs, &fielderr.Error{Path: child(path, "bgp-communities"), Msg: "not supported by Lumen"})
	}
	pp := child(path, "peers")
	peers := w.list(pp, m["peers"])
	if len(peers) == 0 && m["peers"] == nil {
		w.add(resource.Required(pp))
	}
	for i, v := range peers {
		c.Peers = append(c.Peers, w.filePeer(index(pp, i), v))
	}
	// One router per my-asn: its peers must agree on the router id.
	ids := map[uint32]netip.Addr{}
	seen := map[string]int{}
	for i, p := range c.Peers {
		if p.RouterID.IsValid() {
			if id, ok := ids[p.MyASN]; ok && id != p.RouterID {
				w.fail(child(index(pp, i), "router-id"), p.RouterID.String(), fmt.Sprintf("peers of my-asn %d must use one router-id (another peer has %s)", p.MyASN, id))
			}
			ids[p.MyASN] = p.RouterID
		}
		if !p.Address.IsValid() {
			continue
		}
		key := fmt.Sprintf("%d/%s", p.MyASN, p.Address)
		if j, dup := seen[key]; dup && len(p.NodeSelectors) == 0 && len(c.Peers[j].NodeSelectors) == 0 {
			w.add(resource.Duplicate(child(index(pp, i), "peer-address"), p.Address.String()))
		}
		seen[key] = i
	}
	ap := child(path, "address-pools")
	names := map[string]bool{}
	for i, v := range w.list(ap, m["address-pools"]) {
		pool := w.addressPool(index(ap, i), v)
		if pool.Name != "" {
			if names[pool.Name] {
				w.add(resource.Duplicate(child(index(ap, i), "name"), pool.Name))
			}
			names[pool.Name] = true
		}
		c.Pools = append(c.Pools, pool)
	}
	return c
}

func orDoc(path string) string {
	if path == "" {
		return "<document>"
	}
	return path
}

func (w *walker) filePeer(path string, v any) FilePeer {
	m := w.object(path, v, "peer-address", "peer-asn", "my-asn", "peer-port", "hold-time", "keepalive-time",
		"router-id", "source-address", "password", "node-selectors", "ebgp-multihop",
		"graceful-restart", "restart-time", "connect-retry")
	var p FilePeer
	if m == nil {
		return p
	}
	p.Address = w.addr(child(path, "peer-address"), m["peer-address"])
	p.ASN = w.asn(child(path, "peer-asn"), m["peer-asn"])
	p.MyASN = w.asn(child(path, "my-asn"), m["my-asn"])
	p.Port = uint16(w.integer(child(path, "peer-port"), m["peer-port"], DefaultPeerPort, 1, 65535))
	p.HoldTime = w.duration(child(path, "hold-time"), m["hold-time"], DefaultHoldTime, 3*time.Second, 65535*time.Second)
	p.KeepaliveTime = w.duration(child(path, "keepalive-time"), m["keepalive-time"], p.HoldTime/3, time.Second, 65535*time.Second)
	if p.KeepaliveTime > p.HoldTime {
		w.fail(child(path, "keepalive-time"), p.KeepaliveTime.String(), fmt.Sprintf("keepalive time %s must not exceed the hold time %s", p.KeepaliveTime, p.HoldTime))
	}
	if m["router-id"] != nil {
		id := w.str(child(path, "router-id"), m["router-id"])
		a, err := netip.ParseAddr(id)
		if err != nil || !a.Is4() {
			w.fail(child(path, "router-id"), id, "must be an IPv4 address")
		} else {
			p.RouterID = a
		}
	}
	if m["source-address"] != nil {
		p.SourceAddress = w.addr(child(path, "source-address"), m["source-address"])
		if p.SourceAddress.IsValid() && p.Address.IsValid() && p.SourceAddress.Is4() != p.Address.Is4() {
			w.fail(child(path, "source-address"), p.SourceAddress.String(), "must be of the peer address's family")
		}
	}
	p.Password = w.str(child(path, "password"), m["password"])
	if len(p.Password) > 80 {
		w.fail(child(path, "password"), "<redacted>", "TCP MD5 keys are at most 80 bytes")
	}
	if w.boolean(child(path, "ebgp-multihop"), m["ebgp-multihop"], false) {
		p.EBGPMultihopTTL = 255
	}
	p.GracefulRestart = w.boolean(child(path, "graceful-restart"), m["graceful-restart"], true)
	p.RestartTime = w.duration(child(path, "restart-time"), m["restart-time"], DefaultRestartTime, time.Second, MaxRestartTime)
	if !p.GracefulRestart {
		if m["restart-time"] != nil {
			w.errs = append(w.errs, &fielderr.Error{Path: child(path, "restart-time"), Msg: "set while graceful-restart is false"})
		}
		p.RestartTime = 0
	}
	p.ConnectRetry = w.duration(child(path, "connect-retry"), m["connect-retry"], DefaultConnectRetry, time.Second, time.Hour)
	sp := child(path, "node-selectors")
	for i, sv := range w.list(sp, m["node-selectors"]) {
		if s := w.selector(index(sp, i), sv, "match-labels", "match-expressions"); s != nil {
			p.NodeSelectors = append(p.NodeSelectors, s)
		}
	}
	p.fillDefaults()
	return p
}

func (w *walker) addressPool(path string, v any) AddressPool {
	m := w.object(path, v, "name", "protocol", "addresses", "auto-assign", "avoid-buggy-ips", "bgp-advertisements")
	var pool AddressPool
	if m == nil {
		return pool
	}
	pool.Name = w.str(child(path, "name"), m["name"])
	if pool.Name == "" {
		w.add(resource.Required(child(path, "name")))
	}
	pool.Protocol = w.str(child(path, "protocol"), m["protocol"])
	switch pool.Protocol {
	case "bgp":
	case "":
		w.add(resource.Required(child(path, "protocol")))
	case "layer2":
		w.errs = append(w.errs, &fielderr.Error{Path: child(path, "protocol"), Msg: `unsupported value "layer2": Lumen announces addresses over BGP only (supported values: "bgp")`})
	default:
		w.add(resource.Unsupported(child(path, "protocol"), pool.Protocol, "bgp"))
	}
	if m["bgp-advertisements"] != nil {
		w.errs = append(w.errs, &fielderr.Error{Path: child(path, "bgp-advertisements"), Msg: "not supported by Lumen (addresses are announced as /32 and /128)"})
	}
	pool.AutoAssign = w.boolean(child(path, "auto-assign"), m["auto-assign"], true)
	w.boolean(child(path, "avoid-buggy-ips"), m["avoid-buggy-ips"], false)
	ap := child(path, "addresses")
	addrs := w.list(ap, m["addresses"])
	if len(addrs) == 0 {
		w.add(resource.Required(ap))
	}
	for i, av := range addrs {
		s := strings.TrimSpace(w.str(index(ap, i), av))
		if s == "" {
			continue
		}
		ps, err := parsePoolAddresses(s)
		if err != nil {
			w.fail(index(ap, i), s, err.Error())
			continue
		}
		pool.Prefixes = append(pool.Prefixes, ps...)
	}
	return pool
}

// parsePoolAddresses reads a CIDR ("192.0.2.0/24") or an inclusive range
// ("192.0.2.10-192.0.2.20").
func parsePoolAddresses(s string) ([]netip.Prefix, error) {
	if from, to, ok := strings.Cut(s, "-"); ok {
		a, err1 := netip.ParseAddr(strings.TrimSpace(from))
		b, err2 := netip.ParseAddr(strings.TrimSpace(to))
		switch {
		case err1 != nil || err2 != nil || a.Zone() != "" || b.Zone() != "":
			return nil, fmt.Errorf("not a CIDR or an address range FROM-TO")
		case a.Is4() != b.Is4():
			return nil, fmt.Errorf("range mixes IPv4 and IPv6")
		case a.Compare(b) > 0:
			return nil, fmt.Errorf("range ends before it starts")
		}
		return rangePrefixes(a.Unmap(), b.Unmap()), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return nil, fmt.Errorf("not a CIDR or an address range FROM-TO")
	}
	if p.Masked() != p {
		return nil, fmt.Errorf("host bits set: did you mean %s?", p.Masked())
	}
	return []netip.Prefix{p}, nil
}

// AnnounceOptions are the Cilium 1.11 agent flags that decide what the
// ConfigMap's routers export.
type AnnounceOptions struct {
	PodCIDR bool // --bgp-announce-pod-cidr
	LBIP    bool // --bgp-announce-lb-ip
}

// Routers resolves the configuration for a node with the given labels:
// one virtual router per my-asn, holding the peers selecting the node.
func (c *FileConfig) Routers(nodeLabels map[string]string, o AnnounceOptions, source string) []VirtualRouter {
	// Non-nil: without bgp pools no service address qualifies (MetalLB's rule).
	pools := []netip.Prefix{}
	for _, p := range c.Pools {
		if p.Protocol == "bgp" {
			pools = append(pools, p.Prefixes...)
		}
	}
	byASN := map[uint32]*VirtualRouter{}
	var order []uint32
	for _, p := range c.Peers {
		if !selectsNode(p.NodeSelectors, nodeLabels) {
			continue
		}
		r, ok := byASN[p.MyASN]
		if !ok {
			r = &VirtualRouter{LocalASN: p.MyASN, ExportPodCIDR: o.PodCIDR, Source: source}
			if o.LBIP {
				r.ServiceSelector = &Selector{}
				r.Pools = pools
			}
			byASN[p.MyASN] = r
			order = append(order, p.MyASN)
		}
		if p.RouterID.IsValid() {
			r.RouterID = p.RouterID
		}
		if slices.ContainsFunc(r.Neighbors, func(n Neighbor) bool { return n.Address == p.Address }) {
			continue // a later entry for the same peer, selected too: the first wins
		}
		r.Neighbors = append(r.Neighbors, p.Neighbor)
	}
	out := make([]VirtualRouter, 0, len(order))
	for _, asn := range order {
		out = append(out, *byASN[asn])
	}
	return out
}

func selectsNode(sels []*Selector, labels map[string]string) bool {
	if len(sels) == 0 {
		return true
	}
	for _, s := range sels {
		if s.Matches(labels) {
			return true
		}
	}
	return false
}
