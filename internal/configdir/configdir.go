// Package configdir reads flags from a directory with one file per key, as
// Cilium's agent and operator read their ConfigMap mounted as a volume:
// file name = flag name, contents = value.
package configdir

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Apply calls set with the trimmed contents of every file of dir whose name
// want accepts. Dot entries (a ConfigMap volume keeps its data in
// ..data/..<timestamp> directories) are skipped. Errors start with flag, the
// name of the flag that gave dir, and name the key and the value.
func Apply(flag, dir string, want func(key string) bool, set func(key, value string) error) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("%s: %w", flag, err)
	}
	for _, e := range entries {
		key := e.Name()
		if strings.HasPrefix(key, ".") || !want(key) {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, key))
		if err != nil {
			return fmt.Errorf("%s: %w", flag, err)
		}
		v := strings.TrimSpace(string(b))
		if err := set(key, v); err != nil {
			return fmt.Errorf("%s %s: key %s: invalid value %q: %v", flag, dir, key, v, err)
		}
	}
	return nil
}
