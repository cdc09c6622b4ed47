package policy

// Validation of the policy fields Kubernetes defines: metadata, names,
// label selectors and CIDRs, with the API server's messages.

import (
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strings"
)

func (w *walker) metadata(p *Policy, v any) {
	md, ok := v.(map[string]any)
	if !ok {
		if v == nil {
			w.required("metadata.name")
		} else {
			w.errf("metadata", "must be an object, not %s", typeName(v))
		}
		return
	}
	if name, ok := md["name"]; !ok || name == nil {
		w.required("metadata.name")
	} else if s, ok := w.str("metadata.name", name); ok {
		if !dnsSubdomain(s) {
			w.invalid("metadata.name", s, "must be a lowercase RFC 1123 subdomain")
		} else {
			p.Name = s
		}
	}
	ns := ""
	if v := md["namespace"]; v != nil {
		if s, ok := w.str("metadata.namespace", v); ok {
			if s != "" && !dnsLabel(s) {
				w.invalid("metadata.namespace", s, "must be a lowercase RFC 1123 label")
			} else {
				ns = s
			}
		}
	}
	switch p.Kind {
	case KindCiliumClusterwideNetworkPolicy:
		// Cluster-scoped: the API server ignores a namespace.
	default:
		if ns == "" {
			ns = "default" // what kubectl does for namespaced kinds
		}
		p.Namespace = ns
	}
}

var (
	dnsLabelRE  = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	qualNameRE  = regexp.MustCompile(`^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$`)
	ianaSvcRE   = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]*[a-z0-9])?$`)
	hasLetterRE = regexp.MustCompile(`[a-z]`)
)

func dnsLabel(s string) bool { return len(s) <= 63 && dnsLabelRE.MatchString(s) }

func dnsSubdomain(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for _, part := range strings.Split(s, ".") {
		if !dnsLabel(part) {
			return false
		}
	}
	return true
}

// qualifiedName validates a Kubernetes label key: [prefix/]name.
func qualifiedName(s string) string {
	prefix, name, hasPrefix := strings.Cut(s, "/")
	if !hasPrefix {
		name, prefix = prefix, ""
	}
	switch {
	case hasPrefix && !dnsSubdomain(prefix):
		return "the prefix must be a lowercase RFC 1123 subdomain"
	case name == "" || len(name) > 63 || !qualNameRE.MatchString(name):
		return "must be a qualified name: alphanumerics, '-', '_' or '.', at most 63 characters, starting and ending with an alphanumeric, with an optional DNS subdomain prefix and '/'"
	}
	return ""
}

func labelValue(s string) bool { return s == "" || len(s) <= 63 && qualNameRE.MatchString(s) }

// portName validates an IANA service name (a named port).
func portName(s string) string {
	switch {
	case len(s) > 15:
		return "must be no more than 15 characters"
	case !ianaSvcRE.MatchString(s):
		return "must contain only lowercase alphanumerics and '-', starting and ending with an alphanumeric"
	case strings.Contains(s, "--"):
		return "must not contain consecutive hyphens"
	case !hasLetterRE.MatchString(s):
		return "must contain at least one letter"
	}
	return ""
}

// selectorKeys says how the keys of a label selector are read.
type selectorKeys int

const (
	keysPod       selectorKeys = iota // Kubernetes pod labels: source k8s, no prefix allowed
	keysNamespace                     // Kubernetes namespace labels: k8s:io.cilium.k8s.namespace.labels.<key>
	keysCilium                        // Cilium: optional "source:" prefix, k8s by default
)

func (w *walker) selectorKey(path string, key string, mode selectorKeys) (src, k string, ok bool) {
	src, k = SourceK8s, key
	if mode == keysCilium {
		if s, rest, found := strings.Cut(key, ":"); found {
			if !validSource(s) {
				w.invalid(path, key, "invalid label source "+fmt.Sprintf("%q", s))
				return "", "", false
			}
			src, k = s, rest
		}
	}
	if msg := qualifiedName(k); msg != "" {
		w.invalid(path, key, msg)
		return "", "", false
	}
	if mode == keysNamespace {
		if k == namespaceNameLabel {
			// Kubernetes sets this label on every namespace to its name.
			return SourceK8s, PodNamespaceLabel, true
		}
		k = NamespaceLabelsPrefix + k
	}
	if (src == SourceK8s || src == SourceAny) && k == NamespaceLabelsPrefix+namespaceNameLabel {
		k = PodNamespaceLabel
	}
	return src, k, true
}

// labelSelector decodes a Kubernetes LabelSelector. A nil value is the
// empty selector (everything).
func (w *walker) labelSelector(path string, v any, mode selectorKeys) *selector {
	s := newSelector()
	m := w.object(path, v, "matchLabels", "matchExpressions")
	if m == nil {
		return s
	}
	if v := m["matchLabels"]; v != nil {
		if _, ok := v.(map[string]any); !ok {
			w.errf(child(path, "matchLabels"), "must be an object, not %s", typeName(v))
		}
	}
	if raw, ok := m["matchLabels"].(map[string]any); ok {
		for _, key := range slices.Sorted(mapKeys(raw)) {
			p := child(child(path, "matchLabels"), key)
			val, ok := w.str(p, raw[key])
			if !ok {
				continue
			}
			if !labelValue(val) {
				w.invalid(p, val, "must be a label value: at most 63 alphanumerics, '-', '_' or '.', starting and ending with an alphanumeric")
				continue
			}
			src, k, ok := w.selectorKey(p, key, mode)
			if ok {
				s.add(requirement{source: src, key: k, op: opIn, values: []string{val}})
			}
		}
	}
	for i, e := range w.list(child(path, "matchExpressions"), m["matchExpressions"]) {
		ep := index(child(path, "matchExpressions"), i)
		em := w.object(ep, e, "key", "operator", "values")
		if em == nil {
			if e == nil {
				w.required(child(ep, "key"))
			}
			continue
		}
		var src, k string
		keyOK := false
		if em["key"] == nil {
			w.required(child(ep, "key"))
		} else if key, ok := w.str(child(ep, "key"), em["key"]); ok {
			src, k, keyOK = w.selectorKey(child(ep, "key"), key, mode)
		}
		op := ""
		if em["operator"] == nil {
			w.required(child(ep, "operator"))
		} else if o, ok := w.str(child(ep, "operator"), em["operator"]); ok {
			switch o {
			case opIn, opNotIn, opExists, opDoesNotExist:
				op = o
			default:
				w.unsupported(child(ep, "operator"), o, opIn, opNotIn, opExists, opDoesNotExist)
			}
		}
		var values []string
		valsOK := true
		for j, x := range w.list(child(ep, "values"), em["values"]) {
			vp := index(child(ep, "values"), j)
			if s, ok := w.str(vp, x); !ok {
				valsOK = false
			} else if !labelValue(s) {
				w.invalid(vp, s, "must be a label value")
				valsOK = false
			} else {
				values = append(values, s)
			}
		}
		switch op {
		case opIn, opNotIn:
			if len(values) == 0 && valsOK {
				w.errf(child(ep, "values"), "required value: must be non-empty when operator is %s", op)
				valsOK = false
			}
		case opExists, opDoesNotExist:
			if len(values) > 0 {
				w.errf(child(ep, "values"), "must be empty when operator is %s", op)
				valsOK = false
			}
		}
		if keyOK && op != "" && valsOK {
			s.add(requirement{source: src, key: k, op: op, values: values})
		}
	}
	return s
}

func mapKeys(m map[string]any) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// cidr parses a prefix ("10.0.0.0/8"); allowAddr also accepts a bare address
// (a host prefix), as Cilium's fromCIDR does.
func (w *walker) cidr(path string, v any, allowAddr bool) (netip.Prefix, bool) {
	s, ok := w.str(path, v)
	if !ok {
		return netip.Prefix{}, false
	}
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked(), true
	}
	if allowAddr {
		if a, err := netip.ParseAddr(s); err == nil && a.Zone() == "" {
			return netip.PrefixFrom(a, a.BitLen()), true
		}
	}
	w.invalid(path, s, "must be a valid CIDR (e.g. 10.0.0.0/8 or fd00::/64)")
	return netip.Prefix{}, false
}
