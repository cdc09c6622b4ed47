package testutil

import (
	"testing"

	"github.com/vishvananda/netns"

	"github.com/lumen-net/lumen/internal/netnsutil"
)

// NewNetNS creates a named network namespace "lmn-<prefix>-<random>" for the
// test and deletes it at the end. The calling thread stays where it was.
func NewNetNS(t testing.TB, prefix string) (netns.NsHandle, string) {
	t.Helper()
	name := "lmn-" + prefix + "-" + Suffix()
	ns, err := netnsutil.NewNamed(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ns.Close()
		_ = netns.DeleteNamed(name)
	})
	return ns, name
}
