// Package cniinstall puts lumen-cni and its conflist on a node: what the
// agent DaemonSet's init container runs (`lumen-cni install`). Both files
// are written to a temporary name and renamed, so a runtime calling the
// plugin during a rolling update sees the old or the new file, never half
// of one (and a running plugin binary is never overwritten: ETXTBSY).
package cniinstall

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/lumen-net/lumen/internal/api"
	"github.com/lumen-net/lumen/internal/cni"
)

// Options say where the files go.
type Options struct {
	BinDir      string // the runtime's CNI plugin directory
	ConfDir     string // the runtime's CNI config directory
	ConfName    string // file name of the conflist (default 05-lumen.conflist)
	AgentSocket string // the agent's API socket as the plugin (on the host) sees it
	LogFile     string // the plugin's log file on the host; empty: none
	Plugin      string // the lumen-cni binary to copy; empty: this program
}

// Conflist is the network configuration list containerd/CRI-O read.
func Conflist(o Options) ([]byte, error) {
	plugin := map[string]any{"type": "lumen-cni"}
	if o.AgentSocket != "" {
		plugin["agentSocket"] = o.AgentSocket
	}
	if o.LogFile != "" {
		plugin["logFile"] = o.LogFile
	}
	raw, err := json.Marshal(plugin)
	if err != nil {
		return nil, err
	}
	// the plugin's own validation, so that a bad value fails the install
	// (and the pod) instead of every later pod's network setup
	withVersion := strings.Replace(string(raw), "{", `{"cniVersion":"1.0.0","name":"lumen",`, 1)
	if _, err := cni.ParseConfig([]byte(withVersion)); err != nil {
		return nil, err
	}
	list := map[string]any{"cniVersion": "1.0.0", "name": "lumen", "plugins": []json.RawMessage{raw}}
	return json.MarshalIndent(list, "", "  ")
}

// Install copies the plugin and writes the conflist.
func Install(o Options) error {
	if o.BinDir == "" || o.ConfDir == "" {
		return errors.New("bin-dir and conf-dir are required")
	}
	if o.ConfName == "" {
		o.ConfName = "05-lumen.conflist"
	}
	if strings.ContainsRune(o.ConfName, '/') || !strings.HasSuffix(o.ConfName, ".conflist") {
		return fmt.Errorf("conf-name: invalid value %q: want a file name ending in .conflist", o.ConfName)
	}
	conf, err := Conflist(o)
	if err != nil {
		return err
	}
	src := o.Plugin
	if src == "" {
		if src, err = os.Executable(); err != nil {
			return err
		}
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	if err := atomicWrite(filepath.Join(o.BinDir, "lumen-cni"), 0o755, func(w io.Writer) error {
		_, err := io.Copy(w, in)
		return err
	}); err != nil {
		return err
	}
	return atomicWrite(filepath.Join(o.ConfDir, o.ConfName), 0o644, func(w io.Writer) error {
		_, err := w.Write(append(conf, '\n'))
		return err
	})
}

func atomicWrite(dst string, mode os.FileMode, fill func(io.Writer) error) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if err := fill(f); err != nil {
		f.Close()
		return fmt.Errorf("writing %s: %w", dst, err)
	}
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), dst)
}

// Main runs `lumen-cni install [flags]` and exits.
func Main(args []string) {
	fs := flag.NewFlagSet("lumen-cni install", flag.ContinueOnError)
	var o Options
	fs.StringVar(&o.BinDir, "bin-dir", "/host/opt/cni/bin", "CNI plugin directory (as mounted in this container)")
	fs.StringVar(&o.ConfDir, "conf-dir", "/host/etc/cni/net.d", "CNI config directory (as mounted in this container)")
	fs.StringVar(&o.ConfName, "conf-name", "05-lumen.conflist", "file name of the conflist")
	fs.StringVar(&o.AgentSocket, "agent-socket", api.DefaultSocket, "the agent's API socket, as seen on the host")
	fs.StringVar(&o.LogFile, "log-file", "", "lumen-cni's log file on the host (empty: none)")
	if err := fs.Parse(args); err != nil {
		os.Exit(2)
	}
	if err := Install(o); err != nil {
		fmt.Fprintf(os.Stderr, "lumen-cni install: %v\n", err)
		os.Exit(1)
	}
	fmt.Printf("installed %s and %s\n", filepath.Join(o.BinDir, "lumen-cni"), filepath.Join(o.ConfDir, o.ConfName))
}
