package lab

import (
	"os"
	"path/filepath"
)

// RunDir holds the state of every lab on this machine.
const RunDir = "/run/lumen-lab"

// DefaultName is the lab used when none is given.
const DefaultName = "lumen"

// Name returns the lab name from LUMEN_LAB, or the default.
func Name() string {
	if n := os.Getenv("LUMEN_LAB"); n != "" {
		return n
	}
	return DefaultName
}

// Dir is the state directory of one lab.
func Dir(lab string) string { return filepath.Join(RunDir, lab) }

// NodeDir is the state directory of one lab node (its agent's state dir).
func NodeDir(lab, node string) string { return filepath.Join(Dir(lab), "nodes", node) }

// NodeSocket is the API socket of a lab node's agent.
func NodeSocket(lab, node string) string { return filepath.Join(NodeDir(lab, node), "agent.sock") }
