// Command lumen-image writes Lumen's container images as docker-save
// tarballs, without a registry or a container engine (`make image` runs
// it after building the static binaries):
//
//	lumen-image --bin-dir bin/static --out bin/images [--agnhost PATH --agnhost-version 2.xx
//	            --e2e-tool /bin/dash:/bin/sh --e2e-tool /bin/nc.openbsd:/bin/nc ...]
//	            [--coredns PATH --coredns-version v1.15.0]
//
// Load them with `ctr -n k8s.io images import bin/images/lumen.tar` or
// `docker load -i bin/images/lumen.tar`.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/lumen-net/lumen/internal/image"
)

func main() {
	bin := flag.String("bin-dir", "bin/static", "directory with static lumen-agent, lumen-cni, lumen-operator, lumen and pause")
	out := flag.String("out", "bin/images", "directory for the image tarballs")
	version := flag.String("version", "dev", "tag of the Lumen image")
	agnhost := flag.String("agnhost", "", "agnhost binary (Kubernetes' e2e test image); empty: no agnhost.tar")
	agnhostVersion := flag.String("agnhost-version", "2.66.1", "tag of the agnhost image (what e2e.test expects)")
	var tools []string
	flag.Func("e2e-tool", "host program SRC[:DST] to put with its shared libraries into agnhost.tar and glibc-dns-testing.tar "+
		"(e2e tests exec /bin/sh, nc, dig, getent... there); repeatable", func(s string) error { tools = append(tools, s); return nil })
	coredns := flag.String("coredns", "", "static coredns binary (hack/build-coredns.sh); empty: no coredns.tar")
	corednsVersion := flag.String("coredns-version", "v1.15.0", "tag of the coredns image")
	flag.Parse()
	if err := run(*bin, *out, *version, *agnhost, *agnhostVersion, tools, *coredns, *corednsVersion); err != nil {
		fmt.Fprintf(os.Stderr, "lumen-image: %v\n", err)
		os.Exit(1)
	}
}

func run(bin, out, version, agnhost, agnhostVersion string, tools []string, coredns, corednsVersion string) error {
	specs, err := image.LumenImages(bin, version, agnhost, agnhostVersion)
	if err != nil {
		return err
	}
	// the e2e tests' probes: agnhost's own image is Alpine with a shell and
	// tools; the DNS tests also run glibc's resolver in glibc-dns-testing
	if s, ok := specs["agnhost.tar"]; ok && len(tools) > 0 {
		files, err := image.ToolFiles(tools)
		if err != nil {
			return fmt.Errorf("agnhost.tar: %w", err)
		}
		s.Files = append(s.Files, files...)
		specs["agnhost.tar"] = s
		specs["glibc-dns-testing.tar"] = image.GlibcDNSTestingImage(files)
		fmt.Fprintf(os.Stderr, "agnhost.tar, glibc-dns-testing.tar: with %s\n", strings.Join(tools, " "))
	}
	if coredns != "" {
		s, err := image.CoreDNSImage(coredns, corednsVersion)
		if err != nil {
			return err
		}
		specs["coredns.tar"] = s
		// agnhost's real image carries /coredns too: the e2e DNS tests
		// run it from there as a pod's own DNS server
		if a, ok := specs["agnhost.tar"]; ok {
			a.Files = append(a.Files, image.File{Src: coredns, Dst: "/coredns"})
			specs["agnhost.tar"] = a
		}
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	names := make([]string, 0, len(specs))
	for n := range specs {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		p := filepath.Join(out, n)
		if err := image.Write(p, specs[n]); err != nil {
			return fmt.Errorf("%s: %w", n, err)
		}
		img, err := image.Build(specs[n])
		if err != nil {
			return err
		}
		d, _ := img.Digest()
		fmt.Printf("%s\t%v\t%s\n", p, specs[n].Tags, d)
	}
	return nil
}
