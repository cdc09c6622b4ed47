package image

import (
	"fmt"
	"os"
	"path/filepath"
)

// Repository is where Lumen's images are named (loaded locally, never
// pulled: there is no registry).
const Repository = "localhost/lumen-net"

// PauseTag is also the name kubelet/containerd look for by default, so a
// node with this image loaded needs no registry for pod sandboxes.
const PauseTag = "registry.k8s.io/pause:3.10.1"

// Programs of the Lumen image: the agent (entrypoint), the CNI plugin
// (copied onto the node by `lumen-cni install`), the operator and the CLI.
var Programs = []string{"lumen-agent", "lumen-cni", "lumen-operator", "lumen"}

// LumenImages are the image specs `make image` writes, by file name:
// lumen.tar (agent, CNI, operator, CLI), pause.tar and, when agnhost is
// set (the Kubernetes e2e test image's binary), agnhost.tar. binDir holds
// static binaries of Programs and pause.
func LumenImages(binDir, version, agnhost, agnhostVersion string) (map[string]Spec, error) {
	var files []File
	for _, p := range Programs {
		files = append(files, File{Src: filepath.Join(binDir, p), Dst: "/" + p})
	}
	files = append(files, File{Dst: "/var/run/lumen/.keep", Mode: 0o644})
	labels := map[string]string{
		"org.opencontainers.image.title":   "lumen",
		"org.opencontainers.image.version": version,
		"org.opencontainers.image.source":  "https://github.com/lumen-net/lumen",
	}
	out := map[string]Spec{
		"lumen.tar": {Tags: []string{Repository + "/lumen:" + version}, Entrypoint: []string{"/lumen-agent"}, Files: files, Labels: labels},
		"pause.tar": {Tags: []string{Repository + "/pause:3.10.1", PauseTag}, Entrypoint: []string{"/pause"},
			Files: []File{{Src: filepath.Join(binDir, "pause"), Dst: "/pause"}}},
	}
	if agnhost != "" {
		// agnhost's own image has it at /agnhost with the entrypoint set;
		// e2e tests run it by name (registry.k8s.io/e2e-test-images/agnhost:<v>).
		out["agnhost.tar"] = Spec{Tags: []string{Repository + "/agnhost:" + agnhostVersion, "registry.k8s.io/e2e-test-images/agnhost:" + agnhostVersion},
			Entrypoint: []string{"/agnhost"}, Files: []File{{Src: agnhost, Dst: "/agnhost"}}}
	}
	for name, s := range out {
		for _, f := range s.Files {
			if f.Src == "" {
				continue
			}
			if _, err := os.Stat(f.Src); err != nil {
				return nil, fmt.Errorf("%s: %w (build the static binaries first: make image)", name, err)
			}
		}
	}
	return out, nil
}

// CoreDNSTag is the cluster DNS image (hack/build-coredns.sh's binary),
// named as upstream's so manifests written for it work unchanged.
func CoreDNSTag(version string) string { return "registry.k8s.io/coredns/coredns:" + version }

// CoreDNSImage is coredns.tar: the static coredns binary as /coredns
// (upstream's layout; the Corefile comes from a ConfigMap).
func CoreDNSImage(bin, version string) (Spec, error) {
	if _, err := os.Stat(bin); err != nil {
		return Spec{}, fmt.Errorf("coredns.tar: %w (hack/build-coredns.sh)", err)
	}
	return Spec{Tags: []string{Repository + "/coredns:" + version, CoreDNSTag(version)}, Entrypoint: []string{"/coredns"},
		Files: []File{{Src: bin, Dst: "/coredns"}}}, nil
}

// GlibcDNSTestingTag is the image the e2e DNS tests run their glibc
// resolver probes in (a shell, dig and getent over glibc).
const GlibcDNSTestingTag = "registry.k8s.io/e2e-test-images/glibc-dns-testing:2.1.1"

// GlibcDNSTestingImage is glibc-dns-testing.tar made of host tools (see
// ToolFiles: the host's are glibc programs, which is what the image tests).
func GlibcDNSTestingImage(tools []File) Spec {
	return Spec{Tags: []string{Repository + "/glibc-dns-testing:2.1.1", GlibcDNSTestingTag}, Entrypoint: []string{"/bin/sh"}, Files: tools}
}
