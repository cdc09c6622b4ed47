package controlplane

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// Version is the Kubernetes version hack/build-k8s.sh builds.
const Version = "v1.37.2"

// Binaries are the programs a control plane needs in its bin directory.
var Binaries = []string{"etcd", "kube-apiserver", "kube-controller-manager", "kubectl"}

// BinDir returns the directory holding the control plane's binaries:
// $LUMEN_K8S_BIN, else the cache hack/build-k8s.sh fills
// ($LUMEN_CACHE, else $XDG_CACHE_HOME/lumen, else ~/.cache/lumen, then
// k8s/<Version>/bin). The error names the first missing binary and says how
// to build them.
func BinDir() (string, error) {
	dir := os.Getenv("LUMEN_K8S_BIN")
	if dir == "" {
		cache := os.Getenv("LUMEN_CACHE")
		if cache == "" {
			base := os.Getenv("XDG_CACHE_HOME")
			if base == "" {
				home, err := os.UserHomeDir()
				if err != nil {
					return "", fmt.Errorf("locating the Kubernetes binaries: %w (set LUMEN_K8S_BIN)", err)
				}
				base = filepath.Join(home, ".cache")
			}
			cache = filepath.Join(base, "lumen")
		}
		dir = filepath.Join(cache, "k8s", Version, "bin")
	}
	if err := checkBinaries(dir); err != nil {
		return "", err
	}
	return dir, nil
}

func checkBinaries(dir string) error {
	for _, b := range Binaries {
		p := filepath.Join(dir, b)
		st, err := os.Stat(p)
		switch {
		case errors.Is(err, os.ErrNotExist):
			return fmt.Errorf("%s is missing: run hack/build-k8s.sh (builds Kubernetes %s into %s, ~12 min cold) or set LUMEN_K8S_BIN", p, Version, dir)
		case err != nil:
			return fmt.Errorf("checking %s: %w", p, err)
		case st.IsDir() || st.Mode()&0o111 == 0:
			return fmt.Errorf("%s is not an executable: run hack/build-k8s.sh or set LUMEN_K8S_BIN", p)
		}
	}
	return nil
}
