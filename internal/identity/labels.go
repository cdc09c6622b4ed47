package identity

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"unicode"
)

// Label sources.
const (
	SourceK8s      = "k8s"
	SourceReserved = "reserved"
	SourceCIDR     = "cidr"
)

// Label is one security-relevant label, written "source:key=value" (or
// "source:key" when the value is empty).
type Label struct {
	Source string
	Key    string
	Value  string
}

func (l Label) String() string {
	if l.Value == "" {
		return l.Source + ":" + l.Key
	}
	return l.Source + ":" + l.Key + "=" + l.Value
}

// ParseLabel reads "source:key=value". The source is everything before the
// first colon (IPv6 CIDR keys keep theirs), the value everything after the
// first '=' of the rest.
func ParseLabel(s string) (Label, error) {
	src, rest, ok := strings.Cut(s, ":")
	if !ok {
		return Label{}, fmt.Errorf("invalid label %q: want source:key=value", s)
	}
	key, value, _ := strings.Cut(rest, "=")
	l := Label{Source: src, Key: key, Value: value}
	return l, l.check()
}

func (l Label) check() error {
	switch {
	case l.Source == "" || strings.ContainsAny(l.Source, ":=; \t\n") || hasControl(l.Source):
		return fmt.Errorf("invalid label %q: bad source %q", l, l.Source)
	case l.Key == "" || strings.ContainsAny(l.Key, "=; \t\n") || hasControl(l.Key):
		return fmt.Errorf("invalid label %q: bad key %q", l, l.Key)
	case strings.ContainsAny(l.Value, "; \t\n") || hasControl(l.Value):
		return fmt.Errorf("invalid label %q: bad value %q", l, l.Value)
	}
	return nil
}

// hasControl reports control characters (NUL included): no Kubernetes
// label has them, and they would make two label sets print alike.
func hasControl(s string) bool { return strings.ContainsFunc(s, unicode.IsControl) }

// Labels is a sorted set of labels, at most one per source and key. Build it
// with NewLabels or ParseLabels; its String is the canonical form used as
// the identity's key in the store.
type Labels []Label

// NewLabels sorts ls and drops duplicates (for one source and key the last
// value wins).
func NewLabels(ls ...Label) Labels {
	out := slices.Clone(ls)
	slices.SortStableFunc(out, compareLabels)
	// Keep the last of each run of equal source and key.
	var dedup Labels
	for i, l := range out {
		if i+1 < len(out) && out[i+1].Source == l.Source && out[i+1].Key == l.Key {
			continue
		}
		dedup = append(dedup, l)
	}
	return dedup
}

// ParseLabels reads labels in "source:key=value" form.
func ParseLabels(ss ...string) (Labels, error) {
	ls := make([]Label, 0, len(ss))
	for _, s := range ss {
		l, err := ParseLabel(s)
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
	}
	return NewLabels(ls...), nil
}

// ParseCanonical reads the String form back.
func ParseCanonical(s string) (Labels, error) {
	if s == "" {
		return nil, nil
	}
	return ParseLabels(strings.Split(s, ";")...)
}

// String is the canonical form: the sorted labels joined by ';'.
func (ls Labels) String() string {
	parts := make([]string, len(ls))
	for i, l := range ls {
		parts[i] = l.String()
	}
	return strings.Join(parts, ";")
}

// Strings returns each label in "source:key=value" form.
func (ls Labels) Strings() []string {
	out := make([]string, len(ls))
	for i, l := range ls {
		out[i] = l.String()
	}
	return out
}

// Has reports whether the set holds l exactly.
func (ls Labels) Has(l Label) bool { return slices.Contains(ls, l) }

// Get returns the value of source:key.
func (ls Labels) Get(source, key string) (string, bool) {
	for _, l := range ls {
		if l.Source == source && l.Key == key {
			return l.Value, true
		}
	}
	return "", false
}

// compareLabels orders labels by source, then key.
func compareLabels(a, b Label) int {
	if c := strings.Compare(a.Source, b.Source); c != 0 {
		return c
	}
	return strings.Compare(a.Key, b.Key)
}

func (ls Labels) check() error {
	if len(ls) == 0 {
		return fmt.Errorf("empty label set")
	}
	for _, l := range ls {
		if err := l.check(); err != nil {
			return err
		}
	}
	if !slices.IsSortedFunc(ls, compareLabels) {
		return fmt.Errorf("labels %s are not sorted: build them with NewLabels", ls)
	}
	return nil
}

// Label keys Cilium uses for a pod's namespace.
const (
	PodNamespaceLabel    = "io.kubernetes.pod.namespace"
	NamespaceLabelPrefix = "io.cilium.k8s.namespace.labels."
)

// PodLabels is the security label set of a pod: its labels as k8s:<k>=<v>,
// k8s:io.kubernetes.pod.namespace=<ns>, and each label of its namespace as
// k8s:io.cilium.k8s.namespace.labels.<k>=<v>.
func PodLabels(podLabels map[string]string, namespace string, namespaceLabels map[string]string) Labels {
	if namespace == "" {
		namespace = "default"
	}
	ls := make([]Label, 0, len(podLabels)+len(namespaceLabels)+1)
	for k, v := range podLabels {
		ls = append(ls, Label{Source: SourceK8s, Key: k, Value: v})
	}
	for k, v := range namespaceLabels {
		ls = append(ls, Label{Source: SourceK8s, Key: NamespaceLabelPrefix + k, Value: v})
	}
	ls = append(ls, Label{Source: SourceK8s, Key: PodNamespaceLabel, Value: namespace})
	return NewLabels(ls...)
}

// CIDRLabels is the label set of a CIDR identity: cidr:<prefix> and
// reserved:world. Such identities are node-local.
func CIDRLabels(p netip.Prefix) Labels {
	return NewLabels(
		Label{Source: SourceCIDR, Key: p.Masked().String()},
		Label{Source: SourceReserved, Key: "world"},
	)
}
