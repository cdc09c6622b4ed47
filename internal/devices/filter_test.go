package devices

import (
	"strings"
	"testing"
)

func TestParseFilter(t *testing.T) {
	f, err := ParseFilter([]string{"eth0", " eth+ ,bond0", "", "eth0"})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := f.String(), "eth0,bond0,eth+"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	for name, want := range map[string]bool{
		"eth0": true, "eth12": true, "bond0": true, "bond1": false, "et": false, "lo": false,
	} {
		if got := f.Match(name); got != want {
			t.Errorf("Match(%q) = %v, want %v", name, got, want)
		}
	}
	if f.Empty() {
		t.Error("Empty() = true for a filter with entries")
	}
	empty, err := ParseFilter(nil)
	if err != nil || !empty.Empty() {
		t.Errorf("ParseFilter(nil) = %v, %v; want empty filter", empty, err)
	}
}

func TestParseFilterRejects(t *testing.T) {
	for _, bad := range []string{
		"+", "eth+0", "a/b", "a:b", "a b", "..", "abcdefghijklmnop", "eth\x00",
	} {
		_, err := ParseFilter([]string{bad})
		if err == nil {
			t.Errorf("ParseFilter(%q) accepted", bad)
			continue
		}
		// The error must name the offending entry.
		if !strings.Contains(err.Error(), strings.TrimSpace(bad)) && !strings.Contains(err.Error(), "\\x00") {
			t.Errorf("ParseFilter(%q) error %q does not name the entry", bad, err)
		}
	}
}

func FuzzParseFilter(f *testing.F) {
	for _, seed := range []string{"eth0", "eth+", "eth0,eth1", " bond0 , lxc+", "+", "a/b", "abcdefghijklmnopq", ""} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, s string) {
		flt, err := ParseFilter([]string{s})
		if err != nil {
			return
		}
		// Whatever parses must round-trip and match its own names.
		again, err := ParseFilter([]string{flt.String()})
		if err != nil {
			t.Fatalf("re-parsing %q (from %q): %v", flt.String(), s, err)
		}
		if again.String() != flt.String() {
			t.Fatalf("round trip %q -> %q", flt.String(), again.String())
		}
		for _, n := range flt.names {
			if len(n) == 0 || len(n) > maxNameLen || !flt.Match(n) {
				t.Fatalf("bad name %q accepted from %q", n, s)
			}
		}
	})
}
