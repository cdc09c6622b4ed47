package labcmd

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/lumen-net/lumen/internal/cli"
)

// realNodeScript finds hack/realnode.sh (the real-node lab: real kubelets
// and containerd, Lumen by its Helm chart) in the checkout holding the
// working directory or this binary ($LUMEN_SRC wins).
func realNodeScript() (string, error) {
	var starts []string
	if s := os.Getenv("LUMEN_SRC"); s != "" {
		starts = append(starts, s)
	}
	if wd, err := os.Getwd(); err == nil {
		starts = append(starts, wd)
	}
	if exe, err := os.Executable(); err == nil {
		starts = append(starts, filepath.Dir(exe))
	}
	for _, dir := range starts {
		for d := dir; ; d = filepath.Dir(d) {
			p := filepath.Join(d, "hack", "realnode.sh")
			if _, err := os.Stat(p); err == nil {
				return p, nil
			}
			if filepath.Dir(d) == d {
				break
			}
		}
	}
	return "", errors.New("--kubelet: hack/realnode.sh not found: run from a Lumen checkout or set LUMEN_SRC")
}

// runRealNode runs the real-node lab script for the current lab name.
func runRealNode(cmd *cobra.Command, args ...string) error {
	script, err := realNodeScript()
	if err != nil {
		return err
	}
	c := exec.CommandContext(cmd.Context(), script, args...)
	c.Env = append(os.Environ(), "LAB="+cli.LabName())
	c.Stdin, c.Stdout, c.Stderr = os.Stdin, os.Stdout, os.Stderr
	return c.Run()
}
