package image

import (
	"archive/tar"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func fakeBins(t *testing.T) string {
	dir := t.TempDir()
	for _, p := range append(slices.Clone(Programs), "pause", "agnhost") {
		if err := os.WriteFile(filepath.Join(dir, p), []byte("#!binary "+p), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// make image's tarballs read back: tags, entrypoint, the programs with
// their contents and modes, one layer, linux/amd64.
func TestLumenImagesReadBack(t *testing.T) {
	bins := fakeBins(t)
	specs, err := LumenImages(bins, "v9.9.9", filepath.Join(bins, "agnhost"), "2.59")
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	for n, s := range specs {
		if err := Write(filepath.Join(out, n), s); err != nil {
			t.Fatalf("%s: %v", n, err)
		}
	}
	cases := []struct {
		file, tag, entry string
		files            []string
	}{
		{"lumen.tar", Repository + "/lumen:v9.9.9", "/lumen-agent", Programs},
		{"pause.tar", PauseTag, "/pause", []string{"pause"}},
		{"pause.tar", Repository + "/pause:3.10.1", "/pause", []string{"pause"}},
		{"agnhost.tar", "registry.k8s.io/e2e-test-images/agnhost:2.59", "/agnhost", []string{"agnhost"}},
	}
	for _, c := range cases {
		img, err := Read(filepath.Join(out, c.file), c.tag)
		if err != nil {
			t.Fatalf("%s %s: %v", c.file, c.tag, err)
		}
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		if cf.OS != "linux" || cf.Architecture != "amd64" {
			t.Errorf("%s: platform %s/%s", c.tag, cf.OS, cf.Architecture)
		}
		if !slices.Equal(cf.Config.Entrypoint, []string{c.entry}) {
			t.Errorf("%s: entrypoint %v, want [%s]", c.tag, cf.Config.Entrypoint, c.entry)
		}
		layers, err := img.Layers()
		if err != nil || len(layers) != 1 {
			t.Fatalf("%s: %d layers (%v), want 1", c.tag, len(layers), err)
		}
		files, err := Files(img)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range c.files {
			if got := string(files[f]); got != "#!binary "+f {
				t.Errorf("%s: /%s holds %q", c.tag, f, got)
			}
		}
		if !strings.Contains(string(files["etc/passwd"]), "nobody") {
			t.Errorf("%s: no /etc/passwd", c.tag)
		}
		// modes: programs executable, /tmp sticky and world-writable
		rc, _ := layers[0].Uncompressed()
		tr := tar.NewReader(rc)
		modes := map[string]int64{}
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			modes[h.Name] = h.Mode
		}
		rc.Close()
		if modes[c.files[0]] != 0o755 || modes["tmp/"] != 0o1777 {
			t.Errorf("%s: modes %o (/%s) %o (/tmp), want 755 and 1777", c.tag, modes[c.files[0]], c.files[0], modes["tmp/"])
		}
	}
	lumen, _ := Read(filepath.Join(out, "lumen.tar"), Repository+"/lumen:v9.9.9")
	if cf, _ := lumen.ConfigFile(); cf.Config.Labels["org.opencontainers.image.version"] != "v9.9.9" {
		t.Errorf("lumen image labels: %v", cf.Config.Labels)
	}
}

// The same inputs give the same digest (no timestamps in the image).
func TestBuildReproducible(t *testing.T) {
	bins := fakeBins(t)
	specs, err := LumenImages(bins, "dev", "", "")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := specs["agnhost.tar"]; ok {
		t.Error("agnhost.tar without an agnhost binary")
	}
	a, _ := Build(specs["lumen.tar"])
	b, _ := Build(specs["lumen.tar"])
	da, _ := a.Digest()
	db, _ := b.Digest()
	if da != db {
		t.Fatalf("digests differ: %s %s", da, db)
	}
}

func TestBuildRejects(t *testing.T) {
	for _, c := range []struct {
		name string
		spec Spec
		want string
	}{
		{"no tag", Spec{Entrypoint: []string{"/x"}}, "no tag"},
		{"no entrypoint", Spec{Tags: []string{"a/b:c"}}, "no entrypoint"},
		{"relative", Spec{Tags: []string{"a/b:c"}, Entrypoint: []string{"/x"}, Files: []File{{Dst: "x"}}}, `"x"`},
		{"dot-dot", Spec{Tags: []string{"a/b:c"}, Entrypoint: []string{"/x"}, Files: []File{{Dst: "/a/../x"}}}, `"/a/../x"`},
		{"root", Spec{Tags: []string{"a/b:c"}, Entrypoint: []string{"/x"}, Files: []File{{Dst: "/"}}}, `"/"`},
		{"twice", Spec{Tags: []string{"a/b:c"}, Entrypoint: []string{"/x"}, Files: []File{{Dst: "/x"}, {Dst: "/x"}}}, "twice"},
		{"base file", Spec{Tags: []string{"a/b:c"}, Entrypoint: []string{"/x"}, Files: []File{{Dst: "/etc/passwd"}}}, "twice"},
		{"missing source", Spec{Tags: []string{"a/b:c"}, Entrypoint: []string{"/x"}, Files: []File{{Src: "/nonexistent/lumen", Dst: "/x"}}}, "/nonexistent/lumen"},
	} {
		if _, err := Build(c.spec); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err %v, want it to mention %s", c.name, err, c.want)
		}
	}
	if err := Write(filepath.Join(t.TempDir(), "x.tar"), Spec{Tags: []string{"UPPER/case:x"}, Entrypoint: []string{"/x"}}); err == nil || !strings.Contains(err.Error(), "UPPER/case:x") {
		t.Errorf("bad tag: %v", err)
	}
	if _, err := LumenImages(t.TempDir(), "dev", "", ""); err == nil || !strings.Contains(err.Error(), "lumen-agent") && !strings.Contains(err.Error(), "pause") {
		t.Errorf("missing binaries: %v", err)
	}
}

// coredns.tar carries the binary as /coredns under upstream's name; a
// missing binary is named with the script that builds it.
func TestCoreDNSImage(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "coredns")
	if err := os.WriteFile(bin, []byte("#!binary coredns"), 0o755); err != nil {
		t.Fatal(err)
	}
	s, err := CoreDNSImage(bin, "v1.15.0")
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "coredns.tar")
	if err := Write(out, s); err != nil {
		t.Fatal(err)
	}
	img, err := Read(out, "registry.k8s.io/coredns/coredns:v1.15.0")
	if err != nil {
		t.Fatal(err)
	}
	if files, _ := Files(img); string(files["coredns"]) != "#!binary coredns" {
		t.Errorf("/coredns: %q", files["coredns"])
	}
	if _, err := CoreDNSImage("/nonexistent/coredns", "v1.15.0"); err == nil || !strings.Contains(err.Error(), "build-coredns.sh") {
		t.Errorf("missing binary: %v", err)
	}
}
