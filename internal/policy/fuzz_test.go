package policy

import (
	"strings"
	"testing"
)

func fuzzSeeds() []string {
	var seeds []string
	for _, tt := range truthTables {
		seeds = append(seeds, tt.policies...)
	}
	seeds = append(seeds,
		"",
		"{}",
		"[]",
		"kind: NetworkPolicy\n",
		"apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: a}\nspec:\n  endpointSelector: {matchLabels: {app: 1}}\n",
		cnpHeader+"metadata: {name: a}\nspec:\n  endpointSelector: {}\n  ingress:\n  - toPorts: [{ports: [{port: \"80\", endPort: 65535}, {port: http, endPort: 3}]}]\n",
		npHeader+"metadata: {name: a}\nspec:\n  podSelector: {}\n  ingress:\n  - from: [{ipBlock: {cidr: \"::/0\", except: [\"fd00::/8\"]}}]\n",
		`{"apiVersion":"cilium.io/v2","kind":"CiliumClusterwideNetworkPolicy","metadata":{"name":"x"},"specs":[{"nodeSelector":{}},{"endpointSelector":{},"egressDeny":[{"toCIDRSet":[{"cidr":"0.0.0.0/0","except":["10.0.0.0/8"]}]}]}]}`,
		"a: &a [*a, *a]\n",
	)
	return seeds
}

// FuzzDecode: decoding never panics, and whatever decodes can be computed
// for the test world, giving entries that keep the datapath contract and
// agree with the rule oracle.
func FuzzDecode(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := Decode(data)
		if err != nil {
			if p != nil {
				t.Fatalf("Decode returned a policy and an error: %v", err)
			}
			if !strings.Contains(err.Error(), ": ") {
				t.Fatalf("error without object or field: %q", err)
			}
			return
		}
		policies := []*Policy{p}
		_ = CIDRPrefixes(policies)
		w := newWorld(t, policies)
		eng, err := NewEngine(policies, w.ids, Options{AllowLocalhost: true})
		if err != nil {
			t.Fatal(err)
		}
		for _, subject := range []string{"shop/web", "host"} {
			ep := w.endpoint(t, subject)
			pol, err := eng.Compute(ep)
			if err != nil {
				t.Fatal(err)
			}
			checkInvariants(t, pol)
			for _, peer := range []string{"shop/api", "world", "cidr:10.1.2.0/24", "host"} {
				id := w.id(t, peer)
				for _, port := range []uint16{0, 53, 80, 81, 65535} {
					for _, egress := range []bool{false, true} {
						v := Lookup(pol, id, egress, ProtoTCP, port)
						x := pol.Explain(id, egress, ProtoTCP, port)
						if x.Allowed() != v.Allowed {
							t.Fatalf("Explain and Lookup disagree for %s %d", peer, port)
						}
					}
				}
			}
		}
	})
}

// FuzzParseLabel: parsing never panics and a parsed label round-trips.
func FuzzParseLabel(f *testing.F) {
	for _, s := range []string{"k8s:app=web", "reserved:host", "cidr:10.0.0.0/8", "cidr:fd00::/64", "k8s:a=b=c", "=x", ":", "k8s:", "a:b:c=d:e"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		l, err := ParseLabel(s)
		if err != nil {
			return
		}
		back, err := ParseLabel(l.String())
		if err != nil || back != l {
			t.Fatalf("%q parsed to %+v, which prints as %q and parses back to %+v (%v)", s, l, l.String(), back, err)
		}
	})
}

// FuzzDecodeLenient: lenient decoding never panics, agrees with Decode on
// valid policies, names what it could not enforce, and what it returns can
// be computed with the datapath contract kept.
func FuzzDecodeLenient(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add([]byte(s))
	}
	for _, tt := range failClosedTables {
		for _, s := range tt.policies {
			f.Add([]byte(s))
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		strict, serr := Decode(data)
		p, err := DecodeLenient(data)
		switch {
		case serr == nil && (err != nil || p == nil || len(p.Unenforced) > 0 || p.String() != strict.String()):
			t.Fatalf("valid policy %s decoded leniently as %v, %v", strict, p, err)
		case serr != nil && err == nil:
			t.Fatalf("DecodeLenient accepted what Decode rejects (%v)", serr)
		case p == nil:
			return
		case len(p.Unenforced) == 0 && err != nil:
			t.Fatalf("error %v without unenforced fields", err)
		}
		policies := []*Policy{p}
		w := newWorld(t, policies)
		eng, err := NewEngine(policies, w.ids, Options{AllowLocalhost: true})
		if err != nil {
			t.Fatal(err)
		}
		for _, subject := range []string{"shop/web", "host"} {
			pol, err := eng.Compute(w.endpoint(t, subject))
			if err != nil {
				t.Fatal(err)
			}
			checkInvariants(t, pol)
		}
	})
}
