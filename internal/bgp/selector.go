package bgp

import (
	"slices"
	"sort"
	"strings"

	"github.com/lumen-net/lumen/internal/fielderr"
	"github.com/lumen-net/lumen/internal/resource"
)

// Selector is a Kubernetes label selector (matchLabels and
// matchExpressions, ANDed). The zero Selector matches everything.
type Selector struct {
	MatchLabels      map[string]string `json:"matchLabels,omitempty"`
	MatchExpressions []Requirement     `json:"matchExpressions,omitempty"`
}

// Requirement is one matchExpressions entry.
type Requirement struct {
	Key      string   `json:"key"`
	Operator string   `json:"operator"`
	Values   []string `json:"values,omitempty"`
}

// Label selector operators.
const (
	OpIn           = "In"
	OpNotIn        = "NotIn"
	OpExists       = "Exists"
	OpDoesNotExist = "DoesNotExist"
)

// Matches reports whether labels satisfy every term of the selector.
func (s *Selector) Matches(labels map[string]string) bool {
	if s == nil {
		return true
	}
	for k, v := range s.MatchLabels {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	for _, r := range s.MatchExpressions {
		v, ok := labels[r.Key]
		switch r.Operator {
		case OpIn:
			if !ok || !slices.Contains(r.Values, v) {
				return false
			}
		case OpNotIn:
			if ok && slices.Contains(r.Values, v) {
				return false
			}
		case OpExists:
			if !ok {
				return false
			}
		case OpDoesNotExist:
			if ok {
				return false
			}
		default:
			return false
		}
	}
	return true
}

// String is the kubectl form: "a=b,c in (x,y),!d".
func (s *Selector) String() string {
	if s == nil || (len(s.MatchLabels) == 0 && len(s.MatchExpressions) == 0) {
		return "<all>"
	}
	var parts []string
	for _, k := range sortedKeys(s.MatchLabels) {
		parts = append(parts, k+"="+s.MatchLabels[k])
	}
	for _, r := range s.MatchExpressions {
		switch r.Operator {
		case OpIn:
			parts = append(parts, r.Key+" in ("+strings.Join(r.Values, ",")+")")
		case OpNotIn:
			parts = append(parts, r.Key+" notin ("+strings.Join(r.Values, ",")+")")
		case OpExists:
			parts = append(parts, r.Key)
		case OpDoesNotExist:
			parts = append(parts, "!"+r.Key)
		}
	}
	return strings.Join(parts, ",")
}

// selector decodes a label selector. names are the spellings of its two
// fields: matchLabels/matchExpressions (Kubernetes) or
// match-labels/match-expressions (MetalLB's ConfigMap).
func (w *walker) selector(path string, v any, labelsField, exprField string) *Selector {
	m := w.object(path, v, labelsField, exprField)
	if m == nil {
		return nil
	}
	s := &Selector{}
	if lv := m[labelsField]; lv != nil {
		lp := child(path, labelsField)
		lm := w.object(lp, lv, sortedKeys(asMap(lv))...)
		if lm != nil {
			s.MatchLabels = map[string]string{}
			for _, k := range sortedKeys(lm) {
				kp := child(lp, k)
				val := w.str(kp, lm[k])
				w.add(resource.QualifiedName(lp, k))
				w.add(resource.LabelValue(kp, val))
				s.MatchLabels[k] = val
			}
		}
	}
	ep := child(path, exprField)
	for i, ev := range w.list(ep, m[exprField]) {
		rp := index(ep, i)
		em := w.object(rp, ev, "key", "operator", "values")
		if em == nil {
			continue
		}
		r := Requirement{Key: w.str(child(rp, "key"), em["key"]), Operator: w.str(child(rp, "operator"), em["operator"])}
		if r.Key == "" {
			w.add(resource.Required(child(rp, "key")))
		} else {
			w.add(resource.QualifiedName(child(rp, "key"), r.Key))
		}
		vp := child(rp, "values")
		for j, vv := range w.list(vp, em["values"]) {
			val := w.str(index(vp, j), vv)
			w.add(resource.LabelValue(index(vp, j), val))
			r.Values = append(r.Values, val)
		}
		switch r.Operator {
		case OpIn, OpNotIn:
			if len(r.Values) == 0 {
				w.errs = append(w.errs, &fielderr.Error{Path: vp, Msg: "must be non-empty for operator " + r.Operator})
			}
		case OpExists, OpDoesNotExist:
			if len(r.Values) > 0 {
				w.errs = append(w.errs, &fielderr.Error{Path: vp, Msg: "must be empty for operator " + r.Operator})
			}
		case "":
			w.add(resource.Required(child(rp, "operator")))
		default:
			w.add(resource.Unsupported(child(rp, "operator"), r.Operator, OpIn, OpNotIn, OpExists, OpDoesNotExist))
		}
		sort.Strings(r.Values)
		s.MatchExpressions = append(s.MatchExpressions, r)
	}
	if len(s.MatchLabels) == 0 {
		s.MatchLabels = nil // {} and absent mean the same
	}
	return s
}

func asMap(v any) map[string]any {
	m, _ := v.(map[string]any)
	return m
}
