package lab

import (
	"slices"
	"testing"

	"github.com/lumen-net/lumen/internal/lab/labpath"
)

// The relay gets every node's agent as a peer and serves where `lumen
// observe` looks for it.
func TestRelayArgs(t *testing.T) {
	st := &State{Name: "l1", BinDir: "/opt/lumen", Nodes: []NodeState{{Name: "n1"}, {Name: "n2"}}}
	got := RelayArgs(st)
	want := []string{"/opt/lumen/lumen-relay", "--socket", labpath.RunDir + "/l1/hubble-relay.sock",
		"--peer", "unix://" + labpath.RunDir + "/l1/nodes/n1/hubble.sock", "--peer", "unix://" + labpath.RunDir + "/l1/nodes/n2/hubble.sock"}
	if !slices.Equal(got, want) {
		t.Errorf("relay args\n%q\nwant\n%q", got, want)
	}
	if r := relayReport(st); r != nil {
		t.Errorf("a lab without relay reports %+v", r)
	}
	st.Relay = &Proc{PID: -1}
	if r := relayReport(st); r == nil || r.Socket != "unix://"+labpath.RunDir+"/l1/hubble-relay.sock" || r.Running {
		t.Errorf("relay report %+v", r)
	}
}
