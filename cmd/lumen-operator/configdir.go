package main

import (
	"strings"

	"github.com/spf13/pflag"

	"github.com/lumen-net/lumen/internal/configdir"
)

// applyConfigDir sets the flags not given on the command line from a
// directory with one file per key (the lumen-config ConfigMap mounted as a
// volume, shared with the agents: keys that are not operator flags are
// theirs). A bad value names key and value.
func applyConfigDir(fs *pflag.FlagSet, dir string) error {
	if dir == "" {
		return nil
	}
	want := func(key string) bool {
		fl := fs.Lookup(key)
		return key != "config-dir" && fl != nil && !fl.Changed
	}
	return configdir.Apply("config-dir", dir, want, func(key, v string) error {
		fl := fs.Lookup(key)
		sv, ok := fl.Value.(pflag.SliceValue)
		if !ok {
			return fs.Set(key, v)
		}
		// a list key replaces the default instead of adding to it
		if err := sv.Replace(strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ' ' })); err != nil {
			return err
		}
		fl.Changed = true
		return nil
	})
}
