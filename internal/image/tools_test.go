package image

import (
	"os"
	"os/exec"
	"path/filepath"
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

// The glibc-dns-testing image made of host tools runs what the e2e DNS
// probes run (sh, seq, dig, getent) with nothing but its own files: its
// layer unpacked and chrooted into.
func TestGlibcDNSTestingImageRuns(t *testing.T) {
	testutil.RequirePrivileged(t)
	tools := []string{"/bin/dash:/bin/sh", "/usr/bin/dig:/bin/dig", "/usr/bin/getent:/bin/getent", "/usr/bin/seq:/bin/seq"}
	files, err := ToolFiles(tools)
	if err != nil {
		testutil.Skip(t, "host tools (hack/install-deps.sh): "+err.Error())
	}
	tar := filepath.Join(t.TempDir(), "glibc-dns-testing.tar")
	if err := Write(tar, GlibcDNSTestingImage(files)); err != nil {
		t.Fatal(err)
	}
	img, err := Read(tar, GlibcDNSTestingTag)
	if err != nil {
		t.Fatal(err)
	}
	content, err := Files(img)
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	for name, data := range content {
		p := filepath.Join(root, name)
		if strings.HasSuffix(name, "/") {
			continue
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// /etc/hosts as kubelet mounts it
	if err := os.WriteFile(filepath.Join(root, "etc/hosts"), []byte("127.0.0.1 localhost\n10.1.2.3 probe-target\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("chroot", root, "/bin/sh", "-c", `for i in $(seq 1 2); do getent hosts probe-target; done; dig -v 2>&1`).CombinedOutput()
	if err != nil {
		t.Fatalf("in the image: %v\n%s", err, out)
	}
	if strings.Count(string(out), "10.1.2.3") != 2 || !strings.Contains(string(out), "DiG 9") {
		t.Errorf("in the image: %q, want getent's answer twice and dig's version", out)
	}
}
