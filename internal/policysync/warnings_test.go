package policysync

import (
	"reflect"
	"testing"
)

func TestPolicyWarnings(t *testing.T) {
	names := map[string]string{
		"CiliumNetworkPolicy z/a":          "/lumen/v1/resources/CiliumNetworkPolicy/z/a",
		"CiliumNetworkPolicy z/ab":         "/lumen/v1/resources/CiliumNetworkPolicy/z/ab",
		"NetworkPolicy z/a":                "/lumen/v1/resources/NetworkPolicy/z/a",
		"CiliumClusterwideNetworkPolicy c": "/lumen/v1/resources/CiliumClusterwideNetworkPolicy/_/c",
	}
	got := policyWarnings(names, map[string][]string{
		"z/p1": {`CiliumNetworkPolicy z/a spec.egress[0] any peer: named port "x" not found on any peer the rule selects`,
			`CiliumNetworkPolicy z/ab spec.ingress[0]: named port "y" not found on the endpoint`},
		"z/p2": {`CiliumNetworkPolicy z/a spec.egress[0] any peer: named port "x" not found on any peer the rule selects`},
		"z/p3": {`CiliumClusterwideNetworkPolicy c spec.ingress[1]: named port "y" not found on the endpoint`},
	})
	want := map[string][]string{
		"/lumen/v1/resources/CiliumNetworkPolicy/z/a":            {`spec.egress[0] any peer: named port "x" not found on any peer the rule selects (endpoints z/p1, z/p2)`},
		"/lumen/v1/resources/CiliumNetworkPolicy/z/ab":           {`spec.ingress[0]: named port "y" not found on the endpoint (endpoints z/p1)`},
		"/lumen/v1/resources/CiliumClusterwideNetworkPolicy/_/c": {`spec.ingress[1]: named port "y" not found on the endpoint (endpoints z/p3)`},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %q\nwant %q", got, want)
	}
}
