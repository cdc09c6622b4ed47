package policy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/lumen-net/lumen/internal/fielderr"
)

// Policy kinds.
const (
	KindNetworkPolicy                  = "NetworkPolicy"
	KindCiliumNetworkPolicy            = "CiliumNetworkPolicy"
	KindCiliumClusterwideNetworkPolicy = "CiliumClusterwideNetworkPolicy"
)

// Policy is one decoded and validated policy object. Build it with Decode.
type Policy struct {
	Kind      string
	Namespace string // empty for CiliumClusterwideNetworkPolicy
	Name      string

	rules []*rule
	// Unenforced lists what DecodeLenient could not enforce as written
	// (empty from Decode): see DecodeLenient for what stands in for it.
	Unenforced []fielderr.Error
}

// String names the policy like error messages and RuleRefs do:
// "CiliumNetworkPolicy shop/allow-web", "CiliumClusterwideNetworkPolicy host-fw".
func (p *Policy) String() string {
	if p.Namespace == "" {
		return p.Kind + " " + p.Name
	}
	return p.Kind + " " + p.Namespace + "/" + p.Name
}

// Rules is the number of rules: 1 for a NetworkPolicy, len(spec)+len(specs)
// for Cilium policies. RuleRef.RuleIndex counts in this order (spec first).
func (p *Policy) Rules() int { return len(p.rules) }

// HostRules returns the indexes of the rules that use a nodeSelector: they
// apply to the host endpoint only (and rules with an endpointSelector never
// do). Only CiliumClusterwideNetworkPolicy has them.
func (p *Policy) HostRules() []int {
	var out []int
	for _, r := range p.rules {
		if r.subjectKind == subjectNode {
			out = append(out, r.index)
		}
	}
	return out
}

type subjectKind int

const (
	subjectPods      subjectKind = iota // NetworkPolicy: pods of the namespace matching the selector
	subjectEndpoints                    // Cilium endpointSelector: any non-host endpoint (namespace-limited for CNP)
	subjectNode                         // Cilium nodeSelector: the host endpoint
)

// rule is one normalized rule: a NetworkPolicy, or one spec of a Cilium policy.
type rule struct {
	policy      *Policy
	index       int
	path        string // "spec", "specs[1]"
	subjectKind subjectKind
	namespace   string // subjectPods, and subjectEndpoints of a namespaced policy
	subject     *selector

	// Whether endpoints selected by the rule are under policy enforcement
	// per direction, and whether the rule asks for default deny there.
	ingress, egress                       bool
	ingressDefaultDeny, egressDefaultDeny bool

	sections []*section
	// noSubject: the subject selector could not be read (lenient decoding):
	// the rule selects nothing, there is nobody to fail closed for.
	noSubject bool
}

// section is one ingress/egress/ingressDeny/egressDeny element.
type section struct {
	name         string // "ingress[1]"
	egress, deny bool
	peers        []*peer
	allPorts     bool       // no port restriction (L3-only)
	ports        []portSpec // when !allPorts; empty: the section matches nothing
	// requires are fromRequires/toRequires: ANDed with the fromEndpoints /
	// toEndpoints peers of every section of the same direction and verdict
	// of every rule selecting the endpoint (Cilium semantics).
	requires       []*selector
	brokenRequires bool // a requirement could not be read (lenient decoding)
	// selfContained: its problems were in whole port rules, dropped
	// (allowing nothing); the rest of the section stands.
	selfContained bool
}

type peerKind int

const (
	peerSelector peerKind = iota // label selector over identities
	peerCIDR                     // prefix with excepts over CIDR identities
	peerAll                      // wildcard identity 0
)

type peer struct {
	desc string // "fromEndpoints[0] {k8s:app=web, ...}", used as RuleRef.Selector
	kind peerKind
	// endpoints marks fromEndpoints/toEndpoints peers: the ones
	// fromRequires/toRequires restrict.
	endpoints bool
	sel       *selector
	prefix    netip.Prefix
	except    []netip.Prefix
}

// Unsupported reports whether fe is about a field Lumen does not implement
// (or know), rather than a malformed value.
func Unsupported(fe fielderr.Error) bool {
	return fe.Msg == msgNotSupported || strings.HasPrefix(fe.Msg, "unknown field ") || strings.HasPrefix(fe.Msg, msgL7)
}

const (
	msgNotSupported = "not supported yet"
	msgL7           = "L7 rules are not supported yet"
)

// DecodeError is the failure to decode or validate one policy object; every
// line of its message names the object.
type DecodeError struct {
	Object string // "CiliumNetworkPolicy shop/allow-web"
	Errs   []fielderr.Error
}

func (e *DecodeError) Error() string {
	lines := make([]string, len(e.Errs))
	for i, fe := range e.Errs {
		lines[i] = e.Object + ": " + fe.Error()
	}
	return strings.Join(lines, "\n")
}

// maxErrors bounds the errors collected for one object (fuzzed inputs can
// be huge).
const maxErrors = 50

// Decode decodes and validates one policy object from YAML or JSON (one
// document; the caller splits multi-document YAML). Unknown fields are
// errors, so a typo never silently widens or narrows a policy; fields Lumen
// does not implement yet (fromRequires, toFQDNs, toServices, icmps, L7
// rules, ...) are rejected with "not supported yet".
func Decode(data []byte) (p *Policy, err error) {
	j, err := yamlToJSON(data)
	if err != nil {
		return nil, &DecodeError{Object: "policy", Errs: []fielderr.Error{{Path: "<document>", Msg: err.Error()}}}
	}
	d := json.NewDecoder(bytes.NewReader(j))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return nil, &DecodeError{Object: "policy", Errs: []fielderr.Error{{Path: "<document>", Msg: "decoding JSON: " + err.Error()}}}
	}
	if v == nil {
		return nil, &DecodeError{Object: "policy", Errs: []fielderr.Error{{Path: "<document>", Msg: "empty document"}}}
	}
	w := &walker{}
	p = w.policy(v)
	if len(w.errs) > 0 {
		return nil, &DecodeError{Object: p.String(), Errs: w.errs}
	}
	return p, nil
}

// DecodeLenient decodes like Decode, but a policy whose subjects can be
// read is returned even when parts of it are unsupported or malformed, with
// those parts failing closed (Kubernetes mode: the API server accepted the
// object, and what it selects must not run unprotected):
//   - an allow section (ingress[i], egress[i], a NetworkPolicy rule) with a
//     problem anywhere in it allows nothing; its rule still enforces the
//     direction (default deny), so e.g. an L7 rule on port 80 leaves port
//     80 closed rather than open;
//   - a deny section with a problem denies every peer on every port;
//   - a problem in a rule outside its sections and subject (an unknown
//     rule field, a malformed enableDefaultDeny) makes the rule enforce both
//     directions with default deny and allow nothing;
//   - a rule whose endpointSelector/nodeSelector/podSelector cannot be read
//     selects nothing.
//
// The problems are in p.Unenforced and in the returned *DecodeError; p is
// nil only when the object is not a policy at all (kind, apiVersion).
func DecodeLenient(data []byte) (*Policy, error) {
	p, err := Decode(data)
	if err == nil {
		return p, nil
	}
	j, jerr := yamlToJSON(data)
	if jerr != nil {
		return nil, err
	}
	d := json.NewDecoder(bytes.NewReader(j))
	d.UseNumber()
	var v any
	if d.Decode(&v) != nil || v == nil {
		return nil, err
	}
	w := &walker{lenient: true}
	p = w.policy(v)
	if w.fatal {
		return nil, err
	}
	p.Unenforced = w.errs
	return p, &DecodeError{Object: p.String(), Errs: w.errs}
}

// yamlToJSON converts, turning a panic of the YAML library on hostile
// input into an error: Decode must never panic.
func yamlToJSON(data []byte) (j []byte, err error) {
	defer func() {
		if r := recover(); r != nil {
			j, err = nil, fmt.Errorf("parsing YAML: %v", r)
		}
	}()
	j, err = yaml.YAMLToJSON(data)
	if err != nil {
		return nil, fmt.Errorf("parsing YAML: %w", err)
	}
	return j, nil
}

type walker struct {
	errs []fielderr.Error
	n    int // errors found (errs is bounded): scopes compare it before and after
	// lenient: keep what can be kept (DecodeLenient); fatal: the object
	// cannot be used at all.
	lenient, fatal bool
}

func (w *walker) errf(path, format string, a ...any) {
	w.n++
	if len(w.errs) < maxErrors {
		w.errs = append(w.errs, fielderr.Error{Path: path, Msg: fmt.Sprintf(format, a...)})
	}
}

func (w *walker) invalid(path string, v any, detail string) {
	w.errf(path, "invalid value %s: %s", show(v), detail)
}

func (w *walker) required(path string) { w.errf(path, "required value") }

func (w *walker) unsupported(path string, v any, supported ...string) {
	q := make([]string, len(supported))
	for i, s := range supported {
		q[i] = fmt.Sprintf("%q", s)
	}
	w.errf(path, "unsupported value %s: supported values: %s", show(v), strings.Join(q, ", "))
}

func show(v any) string {
	switch x := v.(type) {
	case string:
		return fmt.Sprintf("%q", x)
	case json.Number:
		return x.String()
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	if len(b) > 80 {
		return string(b[:77]) + "..."
	}
	return string(b)
}

func child(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func index(path string, i int) string { return fmt.Sprintf("%s[%d]", path, i) }

func typeName(v any) string {
	switch v.(type) {
	case map[string]any:
		return "an object"
	case []any:
		return "a list"
	case string:
		return "a string"
	case json.Number:
		return "a number"
	case bool:
		return "a boolean"
	}
	return "null"
}

// object checks that v is an object (nil stays nil) whose fields are all in
// known.
func (w *walker) object(path string, v any, known ...string) map[string]any {
	if v == nil {
		return nil
	}
	m, ok := v.(map[string]any)
	if !ok {
		w.errf(path, "must be an object, not %s", typeName(v))
		return nil
	}
	for _, k := range slices.Sorted(mapKeys(m)) {
		if !slices.Contains(known, k) {
			w.errf(path, "unknown field %q", k)
		}
	}
	return m
}

// notSupported reports fields Lumen knows but does not implement yet.
func (w *walker) notSupported(path string, m map[string]any, fields ...string) {
	for _, f := range fields {
		if v, ok := m[f]; ok && v != nil {
			w.errf(child(path, f), msgNotSupported)
		}
	}
}

func (w *walker) list(path string, v any) []any {
	if v == nil {
		return nil
	}
	l, ok := v.([]any)
	if !ok {
		w.errf(path, "must be a list, not %s", typeName(v))
		return nil
	}
	return l
}

func (w *walker) str(path string, v any) (string, bool) {
	s, ok := v.(string)
	if !ok {
		w.errf(path, "must be a string, not %s", typeName(v))
	}
	return s, ok
}

func (w *walker) boolean(path string, v any) (bool, bool) {
	b, ok := v.(bool)
	if !ok {
		w.errf(path, "must be a boolean, not %s", typeName(v))
	}
	return b, ok
}

// integer reads a whole JSON number.
func (w *walker) integer(path string, v any) (int64, bool) {
	n, ok := v.(json.Number)
	if !ok {
		w.errf(path, "must be an integer, not %s", typeName(v))
		return 0, false
	}
	i, err := n.Int64()
	if err != nil {
		w.invalid(path, n, "must be an integer")
		return 0, false
	}
	return i, true
}

func (w *walker) policy(v any) *Policy {
	p := &Policy{Kind: "policy", Name: "<no name>"}
	m := w.object("", v, "apiVersion", "kind", "metadata", "spec", "specs", "status")
	if m == nil {
		return p
	}
	kind, _ := m["kind"].(string)
	apiVersion, _ := m["apiVersion"].(string)
	want := map[string]string{
		KindNetworkPolicy:                  "networking.k8s.io/v1",
		KindCiliumNetworkPolicy:            "cilium.io/v2",
		KindCiliumClusterwideNetworkPolicy: "cilium.io/v2",
	}
	switch {
	case m["kind"] == nil:
		w.required("kind")
		w.fatal = true
	case want[kind] == "":
		w.fatal = true
		w.unsupported("kind", m["kind"], KindNetworkPolicy, KindCiliumNetworkPolicy, KindCiliumClusterwideNetworkPolicy)
		if kind != "" {
			p.Kind = kind // to name the object in errors
		}
	default:
		p.Kind = kind
		if m["apiVersion"] == nil {
			w.required("apiVersion")
			w.fatal = true
		} else if apiVersion != want[kind] {
			w.unsupported("apiVersion", m["apiVersion"], want[kind])
			w.fatal = true
		}
	}
	w.metadata(p, m["metadata"])
	switch p.Kind {
	case KindNetworkPolicy:
		if m["specs"] != nil {
			w.errf("", "unknown field %q", "specs")
		}
		w.networkPolicy(p, m["spec"])
	case KindCiliumNetworkPolicy, KindCiliumClusterwideNetworkPolicy:
		w.ciliumPolicy(p, m["spec"], m["specs"])
	}
	return p
}
