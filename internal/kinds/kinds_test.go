package kinds

import (
	"strings"
	"testing"
)

func TestRegistry(t *testing.T) {
	var names []string
	for _, k := range Registry().Kinds() {
		names = append(names, k.Kind)
	}
	want := "CiliumBGPPeeringPolicy CiliumClusterwideNetworkPolicy CiliumNetworkPolicy EndpointSlice Namespace NetworkPolicy Pod Service"
	if got := strings.Join(names, " "); got != want {
		t.Errorf("kinds: %s\nwant:  %s", got, want)
	}
}
