package devices

import (
	"fmt"
	"slices"
	"strings"
	"unicode"
)

// maxNameLen is IFNAMSIZ-1: the longest interface name Linux accepts.
const maxNameLen = 15

// Filter is the parsed --devices override: exact names and wildcard prefixes
// written as "eth+" (Cilium's syntax). The zero Filter is empty, which means
// "detect devices from routes".
type Filter struct {
	names    []string
	prefixes []string
}

// ParseFilter parses --devices values. Each value may itself be a
// comma-separated list; blanks around names are ignored. A trailing "+"
// makes the entry a prefix wildcard ("eth+" matches eth0, eth1, ...).
func ParseFilter(values []string) (Filter, error) {
	var f Filter
	for _, v := range values {
		for _, entry := range strings.Split(v, ",") {
			entry = strings.TrimSpace(entry)
			if entry == "" {
				continue
			}
			prefix, wildcard := strings.CutSuffix(entry, "+")
			if wildcard && prefix == "" {
				return Filter{}, fmt.Errorf("devices: entry %q: a wildcard needs a prefix, e.g. \"eth+\"", entry)
			}
			if err := validName(prefix); err != nil {
				return Filter{}, fmt.Errorf("devices: entry %q: %w", entry, err)
			}
			if wildcard {
				if !slices.Contains(f.prefixes, prefix) {
					f.prefixes = append(f.prefixes, prefix)
				}
			} else if !slices.Contains(f.names, prefix) {
				f.names = append(f.names, prefix)
			}
		}
	}
	return f, nil
}

// validName applies the kernel's rules for interface names (dev_valid_name).
func validName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("empty interface name")
	case len(name) > maxNameLen:
		return fmt.Errorf("interface name %q is longer than %d bytes", name, maxNameLen)
	case name == "." || name == "..":
		return fmt.Errorf("interface name %q is not allowed", name)
	}
	for _, r := range name {
		if r == '/' || r == ':' || r == '+' || unicode.IsSpace(r) || r == 0 || r > unicode.MaxASCII {
			return fmt.Errorf("interface name %q contains invalid character %q", name, r)
		}
	}
	return nil
}

// Empty reports whether the filter has no entries (detection is used).
func (f Filter) Empty() bool { return len(f.names) == 0 && len(f.prefixes) == 0 }

// Match reports whether name is listed or starts with a wildcard prefix.
func (f Filter) Match(name string) bool {
	if slices.Contains(f.names, name) {
		return true
	}
	for _, p := range f.prefixes {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

// String renders the filter the way it is written on the command line.
func (f Filter) String() string {
	parts := slices.Clone(f.names)
	for _, p := range f.prefixes {
		parts = append(parts, p+"+")
	}
	return strings.Join(parts, ",")
}
