package nstest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/vishvananda/netns"

	"github.com/lumen-net/lumen/internal/netnsutil"
)

func TestNewAndSweep(t *testing.T) {
	ns := New(t, "nst")
	if _, err := os.Stat(filepath.Join(netnsDir, ns.Name)); err != nil {
		t.Fatalf("namespace %s not created: %v", ns.Name, err)
	}
	if lo := ns.MustLink(t, "lo"); lo.Attrs().Flags&1 == 0 {
		t.Error("lo is not up")
	}

	// A leftover of a process that is gone, and one of a live process.
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	dead := fmt.Sprintf("lmn-nst-%d-x", cmd.Process.Pid)
	live := fmt.Sprintf("lmn-nst-%d-y", os.Getppid())
	for _, name := range []string{dead, live} {
		h, err := netnsutil.NewNamed(name)
		if err != nil {
			t.Fatal(err)
		}
		h.Close()
		t.Cleanup(func() { _ = netns.DeleteNamed(name) })
	}
	Sweep(t, "nst")
	if _, err := os.Stat(filepath.Join(netnsDir, dead)); !os.IsNotExist(err) {
		t.Errorf("leftover %s of a dead process not swept (%v)", dead, err)
	}
	if _, err := os.Stat(filepath.Join(netnsDir, live)); err != nil {
		t.Errorf("namespace %s of a live process swept: %v", live, err)
	}
	if _, err := os.Stat(filepath.Join(netnsDir, ns.Name)); err != nil {
		t.Errorf("own namespace %s swept: %v", ns.Name, err)
	}
}
