package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/pflag"
)

// applyConfigDir sets the flags not given on the command line from a
// directory with one file per key (the lumen-config ConfigMap mounted as a
// volume, shared with the agents: keys that are not operator flags are
// theirs). A bad value names key and value.
func applyConfigDir(fs *pflag.FlagSet, dir string) error {
	if dir == "" {
		return nil
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("config-dir: %w", err)
	}
	for _, e := range entries {
		key := e.Name()
		if strings.HasPrefix(key, ".") || key == "config-dir" {
			continue
		}
		fl := fs.Lookup(key)
		if fl == nil || fl.Changed {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, key))
		if err != nil {
			return fmt.Errorf("config-dir: %w", err)
		}
		v := strings.TrimSpace(string(b))
		if sv, ok := fl.Value.(pflag.SliceValue); ok {
			// a list key replaces the default instead of adding to it
			var items []string
			for _, it := range strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ' ' }) {
				items = append(items, it)
			}
			if err := sv.Replace(items); err != nil {
				return fmt.Errorf("config-dir %s: key %s: invalid value %q: %v", dir, key, v, err)
			}
			fl.Changed = true
			continue
		}
		if err := fs.Set(key, v); err != nil {
			return fmt.Errorf("config-dir %s: key %s: invalid value %q: %v", dir, key, v, err)
		}
	}
	return nil
}
