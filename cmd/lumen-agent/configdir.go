package main

import (
	"flag"
	"strings"

	"github.com/lumen-net/lumen/internal/configdir"
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
	want := func(key string) bool { return key != "config-dir" && key != "config" && fs.Lookup(key) != nil }
	return configdir.Apply("--config-dir", dir, want, fs.Set)
}
