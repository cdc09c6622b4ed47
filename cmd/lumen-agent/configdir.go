package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// configDirArg finds --config-dir in args before the flags are parsed.
func configDirArg(args []string) string {
	for i, a := range args {
		for _, p := range []string{"--config-dir=", "-config-dir="} {
			if strings.HasPrefix(a, p) {
				return strings.TrimPrefix(a, p)
			}
		}
		if (a == "--config-dir" || a == "-config-dir") && i+1 < len(args) {
			return args[i+1]
		}
	}
	return ""
}

// applyConfigDir sets the flags of fs from a directory with one file per
// key, as Cilium's agent reads its ConfigMap (cilium-config mounted as a
// volume): file name = flag name, contents = value. The ConfigMap is
// shared with lumen-operator, so keys that are not agent flags are left to
// it; a bad value of an agent flag is an error naming key and value.
// Flags given on the command line are parsed afterwards and win.
func applyConfigDir(fs *flag.FlagSet, dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("--config-dir: %w", err)
	}
	for _, e := range entries {
		key := e.Name()
		// ConfigMap volumes keep their data in ..data/..2026_... dirs
		if strings.HasPrefix(key, ".") || key == "config-dir" || key == "config" {
			continue
		}
		if fs.Lookup(key) == nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, key))
		if err != nil {
			return fmt.Errorf("--config-dir: %w", err)
		}
		v := strings.TrimSpace(string(b))
		if err := fs.Set(key, v); err != nil {
			return fmt.Errorf("--config-dir %s: key %s: invalid value %q: %v", dir, key, v, err)
		}
	}
	return nil
}
