package image

import (
	"slices"
	"strings"
	"testing"

	"github.com/lumen-net/lumen/internal/testutil"
)

func TestToolFiles(t *testing.T) {
	files, err := ToolFiles([]string{"/bin/dash:/bin/sh"})
	if err != nil {
		testutil.Skip(t, "no dash on this host (hack/install-deps.sh): "+err.Error())
	}
	var dsts []string
	for _, f := range files {
		dsts = append(dsts, f.Dst)
	}
	if dsts[0] != "/bin/sh" || !slices.ContainsFunc(dsts, func(d string) bool { return strings.Contains(d, "libc.so") }) ||
		!slices.ContainsFunc(dsts, func(d string) bool { return strings.Contains(d, "ld-linux") }) {
		t.Errorf("dash's files %v: want /bin/sh, libc and the loader", dsts)
	}
	for _, bad := range []string{"bin/dash", "/bin/dash:sh", "/nonexistent/prog"} {
		if _, err := ToolFiles([]string{bad}); err == nil || !strings.Contains(err.Error(), bad) {
			t.Errorf("ToolFiles(%q): error %v, want one naming it", bad, err)
		}
	}
}
