// Package labpath names where a local lab keeps its state, sockets and
// network namespaces, for the lab and for the commands that talk to a
// running lab's agents (without linking the lab itself).
package labpath

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
)

// RunDir holds the state of every lab on this machine.
const RunDir = "/run/lumen-lab"

// NetnsDir is where named network namespaces are bound (as iproute2 does).
const NetnsDir = "/run/netns"

// DefaultName is the lab used when none is given.
const DefaultName = "lumen"

// Name returns the lab name from LUMEN_LAB, or the default.
func Name() string {
	if n := os.Getenv("LUMEN_LAB"); n != "" {
		return n
	}
	return DefaultName
}

// labNameRE keeps lab names free of '-' so that the namespace prefix
// "lmn-<lab>-" of one lab never matches another lab's namespaces.
var labNameRE = regexp.MustCompile(`^[a-z0-9]{1,16}$`)

// ValidateName checks a lab name.
func ValidateName(lab string) error {
	if !labNameRE.MatchString(lab) {
		return fmt.Errorf("invalid lab name %q: want 1-16 lowercase letters or digits", lab)
	}
	return nil
}

// Dir is the state directory of one lab.
func Dir(lab string) string { return filepath.Join(RunDir, lab) }

// StateFile is the JSON record of a running lab.
func StateFile(lab string) string { return filepath.Join(Dir(lab), "state.json") }

// LockFile serializes commands that change a lab.
func LockFile(lab string) string { return filepath.Join(RunDir, "."+lab+".lock") }

// LogDir holds the logs of the lab's processes.
func LogDir(lab string) string { return filepath.Join(Dir(lab), "logs") }

// StoreDir is the data directory of the lab's store.
func StoreDir(lab string) string { return filepath.Join(Dir(lab), "etcd") }

// StoreSocket is the unix socket the lab's store listens on.
func StoreSocket(lab string) string { return filepath.Join(Dir(lab), "etcd.sock") }

// StoreURL is the client URL of the lab's store.
func StoreURL(lab string) string { return "unix://" + StoreSocket(lab) }

// NodeDir is the state directory of one lab node (its agent's state dir).
func NodeDir(lab, node string) string { return filepath.Join(Dir(lab), "nodes", node) }

// NodeSocket is the API socket of a lab node's agent.
func NodeSocket(lab, node string) string { return filepath.Join(NodeDir(lab, node), "agent.sock") }

// NodeBPFDir is the bpffs a lab node's agent mounts.
func NodeBPFDir(lab, node string) string { return filepath.Join(NodeDir(lab, node), "bpf") }

// NodeCNIConfDir holds the CNI network configuration of a lab node.
func NodeCNIConfDir(lab, node string) string {
	return filepath.Join(NodeDir(lab, node), "cni", "net.d")
}

// NodeCNICacheDir is libcni's result cache for a lab node.
func NodeCNICacheDir(lab, node string) string {
	return filepath.Join(NodeDir(lab, node), "cni", "cache")
}

// NSPrefix starts the name of every network namespace of a lab.
func NSPrefix(lab string) string { return "lmn-" + lab + "-" }

// UnderlayNS is the namespace holding the bridge that joins the nodes.
func UnderlayNS(lab string) string { return NSPrefix(lab) + "underlay" }

// NodeNS is the namespace of a lab node.
func NodeNS(lab, node string) string { return NSPrefix(lab) + node }

// PodNS is the namespace of a lab pod.
func PodNS(lab, node, pod string) string { return NSPrefix(lab) + node + "-" + pod }

// NSPath is the bind mount of a named namespace.
func NSPath(name string) string { return filepath.Join(NetnsDir, name) }
