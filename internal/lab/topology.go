package lab

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/lumen-net/lumen/internal/fielderr"
)

// Routing modes.
const (
	RoutingNative = "native"
	RoutingVXLAN  = "vxlan"
)

// Protocols a pod port can use.
const (
	ProtoTCP  = "tcp"
	ProtoUDP  = "udp"
	ProtoSCTP = "sctp"
)

// Limits that keep the address plan (10.99.0.<i+1>, 10.200.<i+1>.0/24) valid.
const (
	MaxNodes       = 250
	MaxPodsPerNode = 250
)

// MaxNodeNameLen keeps /run/lumen-lab/<lab>/nodes/<node>/agent.sock within
// the 107 bytes of a unix socket address.
const MaxNodeNameLen = 48

// Topology is what `lumen lab up -f` reads.
type Topology struct {
	Routing string `json:"routing,omitempty"`
	Nodes   []Node `json:"nodes"`
	Pods    []Pod  `json:"pods"`
	// AgentArgs are extra lumen-agent flags for every node, e.g.
	// ["--policy-audit-mode"].
	AgentArgs []string `json:"agentArgs,omitempty"`
	// KubeAPIServer names the node whose addresses stand for the Kubernetes
	// API server (the kube-apiserver policy entity) in standalone mode.
	KubeAPIServer string `json:"kubeAPIServer,omitempty"`
	// Clients are machines outside the cluster: namespaces on the underlay
	// bridge without an agent (e.g. to reach NodePorts from outside).
	Clients []Client `json:"clients,omitempty"`
	// Routers are BGP routers on the underlay (router.go).
	Routers []Router `json:"routers,omitempty"`
}

// Client is a machine outside the cluster, on the underlay network.
type Client struct {
	Name string `json:"name"`
}

// Node is one lab node.
type Node struct {
	Name   string            `json:"name"`
	Zone   string            `json:"zone,omitempty"`
	Labels map[string]string `json:"labels,omitempty"`
}

// Pod is one lab pod.
type Pod struct {
	Name      string            `json:"name"`
	Namespace string            `json:"namespace"`
	Labels    map[string]string `json:"labels,omitempty"`
	Node      string            `json:"node"`
	Ports     []Port            `json:"ports,omitempty"`
}

// Port is a port a pod serves, written "80/tcp", or "http=80/tcp" for a
// named container port (policies may name it).
type Port struct {
	Port     uint16
	Protocol string
	Name     string // optional
}

func (p Port) String() string {
	if p.Name != "" {
		return fmt.Sprintf("%s=%d/%s", p.Name, p.Port, p.Protocol)
	}
	return fmt.Sprintf("%d/%s", p.Port, p.Protocol)
}

// MarshalJSON writes the port as "80/tcp" ("http=80/tcp").
func (p Port) MarshalJSON() ([]byte, error) { return json.Marshal(p.String()) }

// UnmarshalJSON reads "80/tcp" ("http=80/tcp").
func (p *Port) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	q, err := ParsePort(s)
	if err != nil {
		return err
	}
	*p = q
	return nil
}

// portName is a container port name as Kubernetes accepts it
// (IANA_SVC_NAME): up to 15 lowercase letters, digits and inner dashes,
// with at least one letter and no "--".
var portName = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?$`)

// ParsePort parses "[NAME=]PORT/PROTO" with PROTO one of tcp, udp, sctp.
func ParsePort(s string) (Port, error) {
	name, rest, named := strings.Cut(s, "=")
	if !named {
		name, rest = "", s
	} else if !portName.MatchString(name) || strings.Contains(name, "--") || !strings.ContainsAny(name, "abcdefghijklmnopqrstuvwxyz") {
		return Port{}, fmt.Errorf("invalid port %q: name %q must be up to 15 lowercase letters, digits and inner dashes, with a letter", s, name)
	}
	num, proto, ok := strings.Cut(rest, "/")
	if !ok {
		return Port{}, fmt.Errorf("invalid port %q: want PORT/PROTO, e.g. 80/tcp", s)
	}
	n, err := strconv.ParseUint(num, 10, 16)
	if err != nil || n == 0 {
		return Port{}, fmt.Errorf("invalid port %q: port must be 1-65535", s)
	}
	proto = strings.ToLower(proto)
	switch proto {
	case ProtoTCP, ProtoUDP, ProtoSCTP:
	default:
		return Port{}, fmt.Errorf("invalid port %q: protocol must be tcp, udp or sctp", s)
	}
	return Port{Name: name, Port: uint16(n), Protocol: proto}, nil
}

// TopologyError lists every problem found in a topology.
type TopologyError struct {
	Errs []*fielderr.Error
}

func (e *TopologyError) Error() string {
	parts := make([]string, len(e.Errs))
	for i, fe := range e.Errs {
		parts[i] = fe.Error()
	}
	return strings.Join(parts, "\n")
}

// LoadTopology reads and validates a topology file.
func LoadTopology(path string) (*Topology, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading topology: %w", err)
	}
	t, err := ParseTopology(b)
	if err != nil {
		return nil, fmt.Errorf("topology %s:\n%w", path, err)
	}
	return t, nil
}

// ParseTopology decodes a YAML (or JSON) topology and validates it fully.
// Errors name the field path and the offending value.
func ParseTopology(data []byte) (*Topology, error) {
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
	d := &decoder{}
	t := d.topology(withoutRouters(raw))
	d.routers(t, raw)
	if len(d.errs) == 0 {
		d.errs = append(d.errs, t.validate()...)
	}
	if len(d.errs) > 0 {
		return nil, &TopologyError{Errs: d.errs}
	}
	return t, nil
}

// decoder turns the generic YAML tree into a Topology, recording every type
// error and unknown field with its path.
type decoder struct {
	errs []*fielderr.Error
}

func (d *decoder) fail(path, format string, args ...any) {
	d.errs = append(d.errs, &fielderr.Error{Path: path, Msg: fmt.Sprintf(format, args...)})
}

func (d *decoder) object(path string, v any, known ...string) map[string]any {
	m, ok := v.(map[string]any)
	if !ok {
		d.fail(path, "must be a mapping, got %s", describe(v))
		return nil
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		found := false
		for _, kn := range known {
			found = found || k == kn
		}
		if !found {
			d.fail(join(path, k), "unknown field (want one of %s)", strings.Join(known, ", "))
		}
	}
	return m
}

func (d *decoder) list(path string, v any) []any {
	if v == nil {
		return nil
	}
	l, ok := v.([]any)
	if !ok {
		d.fail(path, "must be a list, got %s", describe(v))
	}
	return l
}

func (d *decoder) str(path string, v any) string {
	if v == nil {
		return ""
	}
	s, ok := v.(string)
	if !ok {
		d.fail(path, "must be a string, got %s", describe(v))
	}
	return s
}

func (d *decoder) topology(raw any) *Topology {
	t := &Topology{}
	if raw == nil {
		d.fail("topology", "is empty")
		return t
	}
	m := d.object("topology", raw, "nodes", "pods", "routing", "agentArgs", "kubeAPIServer", "clients")
	if m == nil {
		return t
	}
	t.Routing = d.str("routing", m["routing"])
	t.KubeAPIServer = d.str("kubeAPIServer", m["kubeAPIServer"])
	for i, av := range d.list("agentArgs", m["agentArgs"]) {
		p := fmt.Sprintf("agentArgs[%d]", i)
		a := d.str(p, av)
		if !strings.HasPrefix(a, "--") {
			d.fail(p, "invalid agent flag %q: want --flag or --flag=value", a)
			continue
		}
		t.AgentArgs = append(t.AgentArgs, a)
	}
	for i, nv := range d.list("nodes", m["nodes"]) {
		p := fmt.Sprintf("nodes[%d]", i)
		nm := d.object(p, nv, "name", "zone", "labels")
		if nm == nil {
			continue
		}
		n := Node{Name: d.str(p+".name", nm["name"]), Zone: d.str(p+".zone", nm["zone"])}
		if lv := nm["labels"]; lv != nil {
			if lm, ok := lv.(map[string]any); ok {
				n.Labels = map[string]string{}
				for k, v := range lm {
					if strings.ContainsAny(k, ",=") || k == "" {
						d.fail(p+".labels", "invalid label key %q", k)
						continue
					}
					n.Labels[k] = d.str(p+".labels."+k, v)
					if strings.Contains(n.Labels[k], ",") {
						d.fail(p+".labels."+k, "invalid label value %q", n.Labels[k])
					}
				}
			} else {
				d.fail(p+".labels", "must be a mapping of strings, got %s", describe(lv))
			}
		}
		t.Nodes = append(t.Nodes, n)
	}
	for i, pv := range d.list("pods", m["pods"]) {
		p := fmt.Sprintf("pods[%d]", i)
		pm := d.object(p, pv, "name", "namespace", "labels", "node", "ports")
		if pm == nil {
			continue
		}
		pod := Pod{
			Name:      d.str(p+".name", pm["name"]),
			Namespace: d.str(p+".namespace", pm["namespace"]),
			Node:      d.str(p+".node", pm["node"]),
		}
		if lv := pm["labels"]; lv != nil {
			if lm, ok := lv.(map[string]any); ok {
				pod.Labels = make(map[string]string, len(lm))
				keys := make([]string, 0, len(lm))
				for k := range lm {
					keys = append(keys, k)
				}
				sort.Strings(keys)
				for _, k := range keys {
					pod.Labels[k] = d.str(p+".labels."+k, lm[k])
				}
			} else {
				d.fail(p+".labels", "must be a mapping of strings, got %s", describe(lv))
			}
		}
		for j, portv := range d.list(p+".ports", pm["ports"]) {
			pp := fmt.Sprintf("%s.ports[%d]", p, j)
			s, ok := portv.(string)
			if !ok {
				d.fail(pp, "invalid port %s: want a string like \"80/tcp\"", describe(portv))
				continue
			}
			port, err := ParsePort(s)
			if err != nil {
				d.fail(pp, "%v", err)
				continue
			}
			pod.Ports = append(pod.Ports, port)
		}
		t.Pods = append(t.Pods, pod)
	}
	for i, cv := range d.list("clients", m["clients"]) {
		p := fmt.Sprintf("clients[%d]", i)
		if cm := d.object(p, cv, "name"); cm != nil {
			t.Clients = append(t.Clients, Client{Name: d.str(p+".name", cm["name"])})
		}
	}
	return t
}

var (
	dnsLabelRE  = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	labelNameRE = regexp.MustCompile(`^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$`)
	dnsSubRE    = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
)

func checkDNSLabel(s string) string {
	switch {
	case s == "":
		return "is required"
	case len(s) > 63:
		return fmt.Sprintf("invalid name %q: longer than 63 characters", s)
	case !dnsLabelRE.MatchString(s):
		return fmt.Sprintf("invalid name %q: want lowercase letters, digits and '-', starting and ending with a letter or digit", s)
	}
	return ""
}

func checkLabelKey(k string) string {
	prefix, name, hasPrefix := strings.Cut(k, "/")
	if !hasPrefix {
		name, prefix = prefix, ""
	}
	if hasPrefix && (prefix == "" || len(prefix) > 253 || !dnsSubRE.MatchString(prefix)) {
		return fmt.Sprintf("invalid label key %q: prefix must be a DNS subdomain", k)
	}
	if name == "" || len(name) > 63 || !labelNameRE.MatchString(name) {
		return fmt.Sprintf("invalid label key %q: name must be 1-63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit", k)
	}
	return ""
}

func checkLabelValue(v string) string {
	if v == "" {
		return ""
	}
	if len(v) > 63 || !labelNameRE.MatchString(v) {
		return fmt.Sprintf("invalid label value %q: want at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit", v)
	}
	return ""
}

// validate checks names, references, uniqueness and limits.
func (t *Topology) validate() []*fielderr.Error {
	errs := t.validateNodesAndPods()
	errs = append(errs, t.validateClients()...)
	errs = append(errs, t.validateRouters()...)
	if t.KubeAPIServer != "" {
		found := false
		for _, n := range t.Nodes {
			found = found || n.Name == t.KubeAPIServer
		}
		if !found {
			errs = append(errs, &fielderr.Error{Path: "kubeAPIServer", Msg: fmt.Sprintf("unknown node %q", t.KubeAPIServer)})
		}
	}
	return errs
}

func (t *Topology) validateNodesAndPods() []*fielderr.Error {
	var errs []*fielderr.Error
	fail := func(path, format string, args ...any) {
		errs = append(errs, &fielderr.Error{Path: path, Msg: fmt.Sprintf(format, args...)})
	}
	switch t.Routing {
	case "", RoutingNative, RoutingVXLAN:
	default:
		fail("routing", "invalid routing %q: want native or vxlan", t.Routing)
	}
	if len(t.Nodes) == 0 {
		fail("nodes", "at least one node is required")
	}
	if len(t.Nodes) > MaxNodes {
		fail("nodes", "%d nodes, at most %d are supported", len(t.Nodes), MaxNodes)
	}
	nodes := map[string]int{}
	for i, n := range t.Nodes {
		p := fmt.Sprintf("nodes[%d]", i)
		if msg := checkDNSLabel(n.Name); msg != "" {
			fail(p+".name", "%s", msg)
		} else if len(n.Name) > MaxNodeNameLen {
			fail(p+".name", "invalid name %q: node names are limited to %d characters (the agent's socket path must fit a unix socket address)", n.Name, MaxNodeNameLen)
		} else if n.Name == "underlay" {
			fail(p+".name", "invalid name %q: reserved for the lab's underlay namespace", n.Name)
		} else if j, dup := nodes[n.Name]; dup {
			fail(p+".name", "duplicate node %q (also nodes[%d])", n.Name, j)
		} else {
			nodes[n.Name] = i
		}
		if msg := checkLabelValue(n.Zone); msg != "" {
			fail(p+".zone", "invalid zone %q: want at most 63 letters, digits, '-', '_' or '.'", n.Zone)
		}
	}
	// Namespace names lmn-<lab>-<node> and lmn-<lab>-<node>-<pod> must not
	// collide (node "a-b" versus pod "b" on node "a").
	nsNames := map[string]string{}
	for _, n := range t.Nodes {
		nsNames[n.Name] = fmt.Sprintf("node %q", n.Name)
	}
	perNode := map[string]int{}
	pods := map[string]int{}
	for i, pod := range t.Pods {
		p := fmt.Sprintf("pods[%d]", i)
		if pod.Namespace == "" {
			pod.Namespace = "default"
			t.Pods[i].Namespace = "default"
		}
		nameOK := true
		if msg := checkDNSLabel(pod.Name); msg != "" {
			fail(p+".name", "%s", msg)
			nameOK = false
		}
		if msg := checkDNSLabel(pod.Namespace); msg != "" {
			fail(p+".namespace", "%s", strings.Replace(msg, "name", "namespace", 1))
			nameOK = false
		}
		if pod.Node == "" {
			fail(p+".node", "is required")
		} else if _, ok := nodes[pod.Node]; !ok {
			fail(p+".node", "unknown node %q", pod.Node)
		} else if nameOK {
			perNode[pod.Node]++
			if perNode[pod.Node] == MaxPodsPerNode+1 {
				fail(p, "more than %d pods on node %q", MaxPodsPerNode, pod.Node)
			}
			key := pod.Node + "-" + pod.Name
			if other, dup := nsNames[key]; dup {
				fail(p+".name", "pod %q on node %q: its namespace %s would collide with %s", pod.Name, pod.Node, key, other)
			} else {
				nsNames[key] = fmt.Sprintf("pods[%d]", i)
			}
		}
		if nameOK {
			full := pod.Namespace + "/" + pod.Name
			if j, dup := pods[full]; dup {
				fail(p+".name", "duplicate pod %q (also pods[%d])", full, j)
			} else {
				pods[full] = i
			}
		}
		keys := make([]string, 0, len(pod.Labels))
		for k := range pod.Labels {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if msg := checkLabelKey(k); msg != "" {
				fail(p+".labels", "%s", msg)
			}
			if msg := checkLabelValue(pod.Labels[k]); msg != "" {
				fail(p+".labels."+k, "%s", msg)
			}
		}
		seen, names := map[Port]int{}, map[string]int{}
		for j, port := range pod.Ports {
			if k, dup := seen[Port{Port: port.Port, Protocol: port.Protocol}]; dup {
				fail(fmt.Sprintf("%s.ports[%d]", p, j), "duplicate port %q (also ports[%d])", port.String(), k)
			}
			seen[Port{Port: port.Port, Protocol: port.Protocol}] = j
			if k, dup := names[port.Name]; dup && port.Name != "" {
				fail(fmt.Sprintf("%s.ports[%d]", p, j), "duplicate port name %q (also ports[%d])", port.Name, k)
			}
			names[port.Name] = j
		}
	}
	return errs
}

// RoutingMode returns the topology's routing, native when unset.
func (t *Topology) RoutingMode() string {
	if t.Routing == "" {
		return RoutingNative
	}
	return t.Routing
}

// NodeIndex returns the position of a node, or -1.
func (t *Topology) NodeIndex(name string) int {
	for i, n := range t.Nodes {
		if n.Name == name {
			return i
		}
	}
	return -1
}

// Address plan of node i (0-based).

// NodeIPv4 is node i's underlay IPv4 address (prefix /24).
func NodeIPv4(i int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 99, 0, byte(i + 1)}), 24)
}

// NodeIPv6 is node i's underlay IPv6 address (prefix /64).
func NodeIPv6(i int) netip.Prefix {
	return netip.PrefixFrom(netip.MustParseAddr(fmt.Sprintf("fd00:10:99::%x", i+1)), 64)
}

// PodCIDRv4 is node i's IPv4 pod CIDR.
func PodCIDRv4(i int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 200, byte(i + 1), 0}), 24)
}

// PodCIDRv6 is node i's IPv6 pod CIDR.
func PodCIDRv6(i int) netip.Prefix {
	return netip.MustParsePrefix(fmt.Sprintf("fd00:10:200:%x::/64", i+1))
}

func join(path, key string) string {
	if path == "topology" {
		return key
	}
	return path + "." + key
}

func describe(v any) string {
	switch x := v.(type) {
	case nil:
		return "null"
	case string:
		return strconv.Quote(x)
	case json.Number:
		return x.String()
	case bool:
		return strconv.FormatBool(x)
	case []any:
		return "a list"
	case map[string]any:
		return "a mapping"
	}
	return fmt.Sprintf("%T", v)
}
