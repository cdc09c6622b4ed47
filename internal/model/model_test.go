package model

import (
	"encoding/json"
	"testing"
)

// TestStoredJSON: announcements as agents store them today decode, and
// encode back byte for byte, so an agent upgraded in place reads what its
// predecessor (and the other nodes) wrote, and they read what it writes.
func TestStoredJSON(t *testing.T) {
	nodes := []string{
		`{"name":"n1","zone":"zone-a","ipv4":"10.99.0.1","ipv6":"fd00:10:99::1","podCIDRv4":"10.200.1.0/24","podCIDRv6":"fd00:10:200:1::/64","labels":{"kubernetes.io/hostname":"n1"}}`,
		`{"name":"n2"}`,
	}
	for _, js := range nodes {
		var n Node
		if err := json.Unmarshal([]byte(js), &n); err != nil {
			t.Fatalf("decoding node %s: %v", js, err)
		}
		if b, _ := json.Marshal(n); string(b) != js {
			t.Errorf("node re-encoded as\n%s\nwant\n%s", b, js)
		}
	}
	eps := []string{
		`{"node":"n1","containerID":"c1","podName":"web","namespace":"shop","ipv4":"10.200.1.2","ipv6":"fd00:10:200:1::2","identity":300,"labels":{"app":"web"}}`,
		`{"node":"","containerID":"","podName":"db","namespace":"shop","ipv4":"10.200.2.3","identity":301,"nodeIP":"10.99.0.2"}`,
		`{"node":"n1","containerID":"c2","identity":5,"namedPorts":[{"name":"dns","port":53,"protocol":"UDP"}]}`,
	}
	for _, js := range eps {
		var ep Endpoint
		if err := json.Unmarshal([]byte(js), &ep); err != nil {
			t.Fatalf("decoding endpoint %s: %v", js, err)
		}
		if b, _ := json.Marshal(ep); string(b) != js {
			t.Errorf("endpoint re-encoded as\n%s\nwant\n%s", b, js)
		}
	}
}
