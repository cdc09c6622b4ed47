package image

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// ToolFiles are the files that put host programs into an image with the
// shared libraries they load, each tool "SRC[:DST]" (DST: where it goes in
// the image, default SRC). The agnhost image needs them: Kubernetes' e2e
// tests run `kubectl exec POD -- /bin/sh -x -c "... | nc -v -u -w 2 IP PORT"`
// in it, which the real image (Alpine) answers with its shell and OpenBSD
// netcat; the agnhost binary alone fails every such check before the
// network is even tried ("stat /bin/sh: no such file or directory").
func ToolFiles(tools []string) ([]File, error) {
	var out []File
	seen := map[string]bool{}
	add := func(src, dst string) {
		if !seen[dst] {
			seen[dst] = true
			out = append(out, File{Src: src, Dst: dst})
		}
	}
	for _, t := range tools {
		src, dst, _ := strings.Cut(t, ":")
		if dst == "" {
			dst = src
		}
		if !filepath.IsAbs(src) || !filepath.IsAbs(dst) {
			return nil, fmt.Errorf("tool %q: want absolute SRC[:DST] paths", t)
		}
		real, err := filepath.EvalSymlinks(src)
		if err != nil {
			return nil, fmt.Errorf("tool %q: %w", t, err)
		}
		add(real, dst)
		libs, err := sharedLibs(real)
		if err != nil {
			return nil, fmt.Errorf("tool %q: %w", t, err)
		}
		for _, l := range libs {
			// The loader looks libraries up by the path ldd names, so they
			// keep it; the file is the symlink's target.
			r, err := filepath.EvalSymlinks(l)
			if err != nil {
				return nil, fmt.Errorf("tool %q: library %s: %w", t, l, err)
			}
			add(r, l)
		}
	}
	return out, nil
}

// sharedLibs lists the absolute paths of what ldd says prog loads (none
// for a static program).
func sharedLibs(prog string) ([]string, error) {
	b, err := exec.Command("ldd", prog).CombinedOutput()
	if err != nil {
		if strings.Contains(string(b), "not a dynamic executable") {
			return nil, nil
		}
		return nil, fmt.Errorf("ldd %s: %v: %s", prog, err, b)
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) >= 3 && f[1] == "=>" && filepath.IsAbs(f[2]):
			out = append(out, f[2])
		case len(f) >= 1 && filepath.IsAbs(f[0]):
			out = append(out, f[0]) // the loader itself
		}
	}
	if _, err := os.Stat(prog); err != nil {
		return nil, err
	}
	return out, nil
}
