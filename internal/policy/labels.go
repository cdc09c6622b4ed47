package policy

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/lumen-net/lumen/internal/bpfconst"
)

// Label sources used by Lumen.
const (
	SourceK8s      = "k8s"      // pod labels and namespace metadata
	SourceReserved = "reserved" // reserved identities (host, world, ...)
	SourceCIDR     = "cidr"     // CIDR identities: cidr:10.0.0.0/8
	SourceAny      = "any"      // only in selectors: matches every source
)

// Well-known label keys.
const (
	// PodNamespaceLabel carries a pod's namespace: k8s:io.kubernetes.pod.namespace=shop.
	PodNamespaceLabel = "io.kubernetes.pod.namespace"
	// NamespaceLabelsPrefix prefixes the labels of a pod's namespace:
	// k8s:io.cilium.k8s.namespace.labels.team=a.
	NamespaceLabelsPrefix = "io.cilium.k8s.namespace.labels."
	// namespaceNameLabel is the label Kubernetes puts on every namespace
	// (its name); selectors on it are evaluated against PodNamespaceLabel.
	namespaceNameLabel = "kubernetes.io/metadata.name"
)

// Reserved identities. Labels, not numbers, are the truth: a node identity
// may for instance also carry reserved:kube-apiserver.
const (
	IdentityHost          uint32 = bpfconst.IdentityHost
	IdentityWorld         uint32 = bpfconst.IdentityWorld
	IdentityUnmanaged     uint32 = bpfconst.IdentityUnmanaged
	IdentityHealth        uint32 = bpfconst.IdentityHealth
	IdentityInit          uint32 = bpfconst.IdentityInit
	IdentityRemoteNode    uint32 = bpfconst.IdentityRemoteNode
	IdentityKubeAPIServer uint32 = bpfconst.IdentityKubeAPIServer
)

// Label is one label of an identity, "source:key=value" (the value may be
// empty: "reserved:host", "cidr:10.0.0.0/8").
type Label struct {
	Source string
	Key    string
	Value  string
}

// String is the canonical form "source:key=value" ("source:key" when the
// value is empty).
func (l Label) String() string {
	if l.Value == "" {
		return l.Source + ":" + l.Key
	}
	return l.Source + ":" + l.Key + "=" + l.Value
}

// ParseLabel parses "source:key=value" or "source:key". The source is
// everything before the first colon, so keys may contain colons (IPv6
// CIDR labels: "cidr:fd00::/64").
func ParseLabel(s string) (Label, error) {
	colon := strings.IndexByte(s, ':')
	eq := strings.IndexByte(s, '=')
	if colon <= 0 || (eq >= 0 && eq < colon) {
		return Label{}, fmt.Errorf("label %q: want source:key[=value]", s)
	}
	src, rest := s[:colon], s[colon+1:]
	key, val, _ := strings.Cut(rest, "=")
	if key == "" {
		return Label{}, fmt.Errorf("label %q: empty key", s)
	}
	if !validSource(src) {
		return Label{}, fmt.Errorf("label %q: invalid source %q", s, src)
	}
	return Label{Source: src, Key: key, Value: val}, nil
}

func validSource(s string) bool {
	if s == "" || len(s) > 63 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// Labels is a sorted set of labels (sorted by their string form, no
// duplicates). Build it with NewLabels or ParseLabels.
type Labels []Label

// NewLabels sorts and deduplicates ls.
func NewLabels(ls ...Label) Labels {
	out := slices.Clone(ls)
	slices.SortFunc(out, func(a, b Label) int { return strings.Compare(a.String(), b.String()) })
	return slices.CompactFunc(out, func(a, b Label) bool { return a == b })
}

// ParseLabels parses label strings ("k8s:app=web", "reserved:host").
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

// MustParseLabels is ParseLabels for constants and tests; it panics on a
// malformed label.
func MustParseLabels(ss ...string) Labels {
	ls, err := ParseLabels(ss...)
	if err != nil {
		panic(err)
	}
	return ls
}

// Strings returns the label strings, sorted.
func (ls Labels) Strings() []string {
	out := make([]string, len(ls))
	for i, l := range ls {
		out[i] = l.String()
	}
	return out
}

func (ls Labels) String() string { return strings.Join(ls.Strings(), ",") }

// Has reports whether a label with that source and key exists; source
// SourceAny matches every source.
func (ls Labels) Has(source, key string) bool {
	_, ok := ls.Get(source, key)
	return ok
}

// Get returns the value of the first label with that source (SourceAny:
// any source) and key.
func (ls Labels) Get(source, key string) (string, bool) {
	for _, l := range ls {
		if l.Key == key && (source == SourceAny || l.Source == source) {
			return l.Value, true
		}
	}
	return "", false
}

// MarshalJSON writes the labels as a list of strings.
func (ls Labels) MarshalJSON() ([]byte, error) { return json.Marshal(ls.Strings()) }

// UnmarshalJSON reads a list of label strings.
func (ls *Labels) UnmarshalJSON(b []byte) error {
	var ss []string
	if err := json.Unmarshal(b, &ss); err != nil {
		return fmt.Errorf("decoding labels: %w", err)
	}
	parsed, err := ParseLabels(ss...)
	if err != nil {
		return err
	}
	*ls = parsed
	return nil
}
