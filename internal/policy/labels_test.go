package policy

import (
	"encoding/json"
	"slices"
	"testing"
)

func TestParseLabel(t *testing.T) {
	good := map[string]Label{
		"k8s:app=web":                       {"k8s", "app", "web"},
		"reserved:host":                     {"reserved", "host", ""},
		"cidr:10.0.0.0/8":                   {"cidr", "10.0.0.0/8", ""},
		"cidr:fd00::/64":                    {"cidr", "fd00::/64", ""},
		"k8s:a=b=c":                         {"k8s", "a", "b=c"},
		"k8s:io.kubernetes.pod.namespace=x": {"k8s", PodNamespaceLabel, "x"},
	}
	for s, want := range good {
		got, err := ParseLabel(s)
		if err != nil || got != want {
			t.Errorf("ParseLabel(%q) = %+v, %v; want %+v", s, got, err, want)
		}
		if got.String() != s {
			t.Errorf("%q prints as %q", s, got.String())
		}
	}
	for _, s := range []string{"", "app=web", "=x:y", ":app", "k8s:", "k8s:=v", "K8S:app", "a b:c"} {
		if l, err := ParseLabel(s); err == nil {
			t.Errorf("ParseLabel(%q) = %+v, want an error", s, l)
		}
	}
}

func TestLabelsSetAndJSON(t *testing.T) {
	ls := MustParseLabels("reserved:world", "k8s:b=1", "cidr:10.0.0.0/8", "k8s:b=1", "k8s:a=2")
	want := []string{"cidr:10.0.0.0/8", "k8s:a=2", "k8s:b=1", "reserved:world"}
	if !slices.Equal(ls.Strings(), want) {
		t.Errorf("labels = %v, want sorted and deduplicated %v", ls.Strings(), want)
	}
	if v, ok := ls.Get(SourceAny, "a"); !ok || v != "2" {
		t.Errorf("Get(any, a) = %q, %v", v, ok)
	}
	if ls.Has(SourceReserved, "a") || !ls.Has(SourceReserved, "world") {
		t.Error("Has compares the source")
	}
	b, err := json.Marshal(ls)
	if err != nil || string(b) != `["cidr:10.0.0.0/8","k8s:a=2","k8s:b=1","reserved:world"]` {
		t.Fatalf("JSON = %s, %v", b, err)
	}
	var back Labels
	if err := json.Unmarshal(b, &back); err != nil || !slices.Equal(back, ls) {
		t.Errorf("round trip = %v, %v", back, err)
	}
	if err := json.Unmarshal([]byte(`["nosource"]`), &back); err == nil {
		t.Error("bad label in JSON accepted")
	}
}

func TestSelectorSources(t *testing.T) {
	ls := MustParseLabels("k8s:app=web", "container:role=x", "reserved:host")
	cases := []struct {
		req  requirement
		want bool
	}{
		{requirement{source: SourceK8s, key: "app", op: opIn, values: []string{"web"}}, true},
		{requirement{source: "container", key: "app", op: opIn, values: []string{"web"}}, false},
		{requirement{source: SourceAny, key: "role", op: opIn, values: []string{"x"}}, true},
		{requirement{source: SourceK8s, key: "role", op: opExists}, false},
		{requirement{source: SourceK8s, key: "role", op: opDoesNotExist}, true},
		{requirement{source: SourceAny, key: "app", op: opNotIn, values: []string{"web"}}, false},
		{requirement{source: SourceK8s, key: "missing", op: opNotIn, values: []string{"web"}}, true},
		{requirement{source: SourceReserved, key: "host", op: opIn, values: []string{""}}, true},
	}
	ix := newIdentityIndex(map[uint32]Labels{42: ls, 43: MustParseLabels("k8s:app=db")})
	for _, c := range cases {
		if got := c.req.matches(ls); got != c.want {
			t.Errorf("%s matches %v: %v, want %v", c.req, ls, got, c.want)
		}
		// The index gives the same answer as direct matching.
		set := ix.selectLabels(newSelector(c.req))
		if set.has(0) != c.want {
			t.Errorf("%s: index says %v, want %v", c.req, set.has(0), c.want)
		}
	}
}

func TestCIDRLabels(t *testing.T) {
	for key, want := range map[string]string{"10.0.0.0/8": "10.0.0.0/8", "10.1.2.3/8": "10.0.0.0/8", "1.2.3.4": "1.2.3.4/32", "fd00::/64": "fd00::/64", "fd00--/64": "fd00::/64", "f00d-1--/96": "f00d:1::/96"} {
		p, ok := parseCIDRLabel(key)
		if !ok || p.String() != want {
			t.Errorf("parseCIDRLabel(%q) = %v, %v; want %s", key, p, ok, want)
		}
	}
	if _, ok := parseCIDRLabel("not-a-cidr"); ok {
		t.Error("parseCIDRLabel accepted garbage")
	}
}
