package lab

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	observerpb "github.com/cilium/cilium/api/v1/observer"

	"github.com/lumen-net/lumen/internal/hubble/transport"
	"github.com/lumen-net/lumen/internal/lab/labpath"
)

// RelayBinary is the Hubble relay, next to lumen-agent.
const RelayBinary = "lumen-relay"

// RelaySocket is where the lab's relay serves the Hubble API for all nodes
// (`lumen observe` without --node uses it).
func RelaySocket(lab string) string { return filepath.Join(labpath.Dir(lab), "hubble-relay.sock") }

// HubbleSocket is a node agent's Hubble API socket.
func HubbleSocket(lab, node string) string {
	return filepath.Join(labpath.NodeDir(lab, node), "hubble.sock")
}

// RelayArgs are the relay's flags: every node's agent as a static peer (unix
// sockets reach across namespaces; a restarted agent is reconnected).
func RelayArgs(st *State) []string {
	args := []string{filepath.Join(st.BinDir, RelayBinary), "--socket", RelaySocket(st.Name)}
	for _, n := range st.Nodes {
		args = append(args, "--peer", "unix://"+HubbleSocket(st.Name, n.Name))
	}
	return args
}

// startRelay runs lumen-relay in the underlay namespace, like the store,
// once the agents run, and waits until it answers. A lab built without
// lumen-relay next to lumen-agent has no relay.
func startRelay(ctx context.Context, st *State, log *slog.Logger) error {
	if err := checkExecutable(filepath.Join(st.BinDir, RelayBinary)); err != nil {
		log.Warn("no hubble relay for this lab: "+RelayBinary+" not found next to lumen-agent", "err", err)
		return nil
	}
	log.Info("starting hubble relay", "socket", RelaySocket(st.Name))
	p, err := StartDetached(labpath.UnderlayNS(st.Name), filepath.Join(labpath.LogDir(st.Name), "relay.log"), RelayArgs(st))
	if err != nil {
		return fmt.Errorf("starting the hubble relay: %w", err)
	}
	st.Relay = p
	if err := st.save(); err != nil {
		return err
	}
	return waitFor(ctx, time.Minute, p, "the hubble relay", func(ctx context.Context) error {
		if _, err := os.Stat(RelaySocket(st.Name)); err != nil {
			return err
		}
		conn, err := transport.Dial("unix://"+RelaySocket(st.Name), nil)
		if err != nil {
			return err
		}
		defer conn.Close()
		_, err = observerpb.NewObserverClient(conn).ServerStatus(ctx, &observerpb.ServerStatusRequest{})
		return err
	})
}

// RelayReport describes the lab's relay.
type RelayReport struct {
	Socket  string `json:"socket"`
	PID     int    `json:"pid"`
	Running bool   `json:"running"`
}

func relayReport(st *State) *RelayReport {
	if st.Relay == nil {
		return nil
	}
	return &RelayReport{Socket: "unix://" + RelaySocket(st.Name), PID: st.Relay.PID, Running: st.Relay.Alive()}
}
