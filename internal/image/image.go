// Package image builds container images from local files without a
// registry or a container engine: one layer (a tar of the given files plus
// a minimal /etc and /tmp), an OCI config, written as a docker-save
// tarball that `ctr images import` and `docker load` accept. Lumen's
// images (agent, CNI and operator; pause; the e2e test image) are static
// Go binaries, so nothing else goes in.
package image

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// File is one file of the image: Dst (absolute, in the image) gets the
// contents of Src on the host, or Data when Src is empty.
type File struct {
	Src  string
	Dst  string
	Data []byte
	Mode int64 // 0: 0755 (the files are mostly programs)
}

// Spec describes one image.
type Spec struct {
	// Tags are the references the image is loaded as (e.g.
	// docker.io/lumen-net/lumen:dev); at least one.
	Tags       []string
	Entrypoint []string
	Cmd        []string
	Env        []string // default PATH=/:/bin
	Files      []File
	// Labels end up in the image config (org.opencontainers.image.*).
	Labels map[string]string
}

// epoch is every file's modification time, so that the same inputs make
// the same image digest.
var epoch = time.Unix(0, 0).UTC()

// base files every image gets: name service files for tools that look up
// users, and a world-writable /tmp.
var base = []struct {
	name string
	body string
}{
	{"etc/passwd", "root:x:0:0:root:/:/bin/false\nnobody:x:65534:65534:nobody:/:/bin/false\n"},
	{"etc/group", "root:x:0:\nnobody:x:65534:\n"},
	{"etc/nsswitch.conf", "hosts: files dns\n"},
}

// Build makes the image of spec.
func Build(spec Spec) (v1.Image, error) {
	if len(spec.Tags) == 0 {
		return nil, errors.New("image: no tag")
	}
	if len(spec.Entrypoint) == 0 {
		return nil, fmt.Errorf("image %s: no entrypoint", spec.Tags[0])
	}
	layer, err := layerOf(spec.Files)
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", spec.Tags[0], err)
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	cf.Created = v1.Time{Time: epoch}
	env := spec.Env
	if len(env) == 0 {
		env = []string{"PATH=/:/bin"}
	}
	cf.Config = v1.Config{Entrypoint: spec.Entrypoint, Cmd: spec.Cmd, Env: env, WorkingDir: "/", Labels: spec.Labels}
	return mutate.ConfigFile(img, cf)
}

func layerOf(files []File) (v1.Layer, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dirs := map[string]bool{}
	mkdir := func(d string, mode int64) error {
		if d == "." || d == "" || dirs[d] {
			return nil
		}
		dirs[d] = true
		return tw.WriteHeader(&tar.Header{Name: d + "/", Typeflag: tar.TypeDir, Mode: mode, ModTime: epoch})
	}
	if err := mkdir("tmp", 0o1777); err != nil {
		return nil, err
	}
	if err := mkdir("etc", 0o755); err != nil {
		return nil, err
	}
	for _, f := range base {
		if err := tw.WriteHeader(&tar.Header{Name: f.name, Mode: 0o644, Size: int64(len(f.body)), ModTime: epoch}); err != nil {
			return nil, err
		}
		if _, err := io.WriteString(tw, f.body); err != nil {
			return nil, err
		}
	}
	seen := map[string]bool{}
	for _, f := range files {
		if !path.IsAbs(f.Dst) || path.Clean(f.Dst) != f.Dst || f.Dst == "/" {
			return nil, fmt.Errorf("file destination %q: want a clean absolute path", f.Dst)
		}
		dst := strings.TrimPrefix(f.Dst, "/")
		if seen[dst] || slices.ContainsFunc(base, func(b struct{ name, body string }) bool { return b.name == dst }) {
			return nil, fmt.Errorf("file destination %q: given twice", f.Dst)
		}
		seen[dst] = true
		data := f.Data
		if f.Src != "" {
			var err error
			if data, err = os.ReadFile(f.Src); err != nil {
				return nil, err
			}
		}
		// parent directories first
		parts := strings.Split(path.Dir(dst), "/")
		for i := range parts {
			if err := mkdir(strings.Join(parts[:i+1], "/"), 0o755); err != nil {
				return nil, err
			}
		}
		mode := f.Mode
		if mode == 0 {
			mode = 0o755
		}
		if err := tw.WriteHeader(&tar.Header{Name: dst, Mode: mode, Size: int64(len(data)), ModTime: epoch}); err != nil {
			return nil, err
		}
		if _, err := tw.Write(data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	b := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil })
}

// Write builds the images of specs into one docker-save tarball at out
// (written to a temporary file, then renamed).
func Write(out string, specs ...Spec) error {
	refs := map[name.Reference]v1.Image{}
	for _, s := range specs {
		img, err := Build(s)
		if err != nil {
			return err
		}
		for _, t := range s.Tags {
			ref, err := name.NewTag(t)
			if err != nil {
				return fmt.Errorf("image tag %q: %w", t, err)
			}
			if _, dup := refs[ref]; dup {
				return fmt.Errorf("image tag %q: given twice", t)
			}
			refs[ref] = img
		}
	}
	tmp := out + ".tmp"
	if err := tarball.MultiRefWriteToFile(tmp, refs); err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, out)
}

// Read loads the image tagged tag from a tarball written by Write.
func Read(file, tag string) (v1.Image, error) {
	ref, err := name.NewTag(tag)
	if err != nil {
		return nil, fmt.Errorf("image tag %q: %w", tag, err)
	}
	return tarball.ImageFromPath(file, &ref)
}

// Files lists the regular files of img's layers (path without the leading
// slash -> contents), the later layer winning.
func Files(img v1.Image) (map[string][]byte, error) {
	layers, err := img.Layers()
	if err != nil {
		return nil, err
	}
	out := map[string][]byte{}
	for _, l := range layers {
		rc, err := l.Uncompressed()
		if err != nil {
			return nil, err
		}
		tr := tar.NewReader(rc)
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				rc.Close()
				return nil, err
			}
			if h.Typeflag != tar.TypeReg {
				continue
			}
			b, err := io.ReadAll(tr)
			if err != nil {
				rc.Close()
				return nil, err
			}
			out[h.Name] = b
		}
		rc.Close()
	}
	return out, nil
}
