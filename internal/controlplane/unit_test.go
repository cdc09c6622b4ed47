package controlplane

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestBinDir(t *testing.T) {
	fake := func(t *testing.T, dir string, names ...string) {
		t.Helper()
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, n := range names {
			if err := os.WriteFile(filepath.Join(dir, n), []byte("#!/bin/sh\n"), 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Run("LUMEN_K8S_BIN, kubectl missing", func(t *testing.T) {
		dir := t.TempDir()
		fake(t, dir, "etcd", "kube-apiserver", "kube-controller-manager")
		t.Setenv("LUMEN_K8S_BIN", dir)
		_, err := BinDir()
		if err == nil || !strings.Contains(err.Error(), filepath.Join(dir, "kubectl")+" is missing") || !strings.Contains(err.Error(), "hack/build-k8s.sh") {
			t.Fatalf("BinDir() error = %v, want one naming %s and hack/build-k8s.sh", err, filepath.Join(dir, "kubectl"))
		}
	})
	t.Run("not executable", func(t *testing.T) {
		dir := t.TempDir()
		fake(t, dir, Binaries...)
		if err := os.Chmod(filepath.Join(dir, "etcd"), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Setenv("LUMEN_K8S_BIN", dir)
		if _, err := BinDir(); err == nil || !strings.Contains(err.Error(), "etcd is not an executable") {
			t.Fatalf("BinDir() error = %v, want etcd is not an executable", err)
		}
	})
	t.Run("LUMEN_CACHE", func(t *testing.T) {
		cache := t.TempDir()
		want := filepath.Join(cache, "k8s", Version, "bin")
		fake(t, want, Binaries...)
		t.Setenv("LUMEN_K8S_BIN", "")
		t.Setenv("LUMEN_CACHE", cache)
		if got, err := BinDir(); err != nil || got != want {
			t.Fatalf("BinDir() = %q, %v, want %q", got, err, want)
		}
	})
	t.Run("XDG_CACHE_HOME", func(t *testing.T) {
		xdg := t.TempDir()
		want := filepath.Join(xdg, "lumen", "k8s", Version, "bin")
		fake(t, want, Binaries...)
		t.Setenv("LUMEN_K8S_BIN", "")
		t.Setenv("LUMEN_CACHE", "")
		t.Setenv("XDG_CACHE_HOME", xdg)
		if got, err := BinDir(); err != nil || got != want {
			t.Fatalf("BinDir() = %q, %v, want %q", got, err, want)
		}
	})
}

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatalf("%s: not PEM", path)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestCertificates(t *testing.T) {
	p := newPKI(t.TempDir())
	extra := netip.MustParseAddr("10.99.0.250")
	if err := p.generate([]netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("10.96.0.1"), extra}, []string{"localhost"}); err != nil {
		t.Fatal(err)
	}
	ca := readCert(t, p.caCert)
	roots := x509.NewCertPool()
	roots.AddCert(ca)

	serving := readCert(t, p.servingCert)
	for _, ip := range []string{"127.0.0.1", "10.96.0.1", extra.String()} {
		if _, err := serving.Verify(x509.VerifyOptions{Roots: roots, DNSName: ip}); err != nil {
			t.Errorf("serving certificate for %s: %v", ip, err)
		}
	}
	if _, err := serving.Verify(x509.VerifyOptions{Roots: roots, DNSName: "10.99.0.251"}); err == nil {
		t.Error("serving certificate verifies for an address it was not issued for")
	}

	client := x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	admin := readCert(t, p.adminCert)
	if admin.Subject.CommonName != "lumen-admin" || !slices.Equal(admin.Subject.Organization, []string{"system:masters"}) {
		t.Errorf("admin certificate subject %v, want CN=lumen-admin O=system:masters", admin.Subject)
	}
	if _, err := admin.Verify(client); err != nil {
		t.Errorf("admin certificate: %v", err)
	}
	kcm := readCert(t, p.kcmCert)
	if kcm.Subject.CommonName != "system:kube-controller-manager" {
		t.Errorf("controller manager certificate subject %v", kcm.Subject)
	}
	if _, err := kcm.Verify(client); err != nil {
		t.Errorf("controller manager certificate: %v", err)
	}
	for _, f := range []string{p.caKey, p.adminKey, p.saKey} {
		if st, err := os.Stat(f); err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, %v, want 0600", f, st.Mode().Perm(), err)
		}
	}

	// A second run keeps the CA and the service-account key (tokens and
	// kubeconfigs stay valid) and issues new leaves.
	sa, _ := os.ReadFile(p.saKey)
	if err := p.generate([]netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil); err != nil {
		t.Fatal(err)
	}
	if !readCert(t, p.caCert).Equal(ca) {
		t.Error("the CA changed on the second run")
	}
	if sa2, _ := os.ReadFile(p.saKey); string(sa2) != string(sa) {
		t.Error("the service-account key changed on the second run")
	}
	if readCert(t, p.servingCert).Equal(serving) {
		t.Error("the serving certificate was not issued again")
	}
}

func TestServiceCIDRs(t *testing.T) {
	got, err := serviceCIDRs(nil)
	if err != nil || !slices.Equal(got, DefaultServiceCIDRs) {
		t.Errorf("serviceCIDRs(nil) = %v, %v", got, err)
	}
	got, err = serviceCIDRs([]netip.Prefix{netip.MustParsePrefix("10.97.1.2/16")})
	if err != nil || len(got) != 1 || got[0].String() != "10.97.0.0/16" {
		t.Errorf("serviceCIDRs(10.97.1.2/16) = %v, %v", got, err)
	}
	if _, err := serviceCIDRs([]netip.Prefix{netip.MustParsePrefix("10.96.0.0/16"), netip.MustParsePrefix("10.97.0.0/16")}); err == nil {
		t.Error("two IPv4 ranges accepted")
	}
}

// A child must not die when the thread of the goroutine that started it
// ends (Go ends a thread whose goroutine exits while locked, as
// network-namespace code does; Pdeathsig follows the forking thread).
func TestChildOutlivesCallerThread(t *testing.T) {
	p := &proc{Name: "sleep", Args: []string{"/bin/sleep", "60"}, Log: filepath.Join(t.TempDir(), "sleep.log")}
	var tid int
	for tid == 0 {
		tidc := make(chan int)
		errc := make(chan error, 1)
		go func() {
			runtime.LockOSThread()
			if unix.Gettid() == os.Getpid() {
				// The main thread is never ended (Go wedges it): try another.
				runtime.UnlockOSThread()
				tidc <- 0
				return
			}
			errc <- p.start(false)
			tidc <- unix.Gettid()
			// Exiting while locked ends the thread.
		}()
		if tid = <-tidc; tid != 0 {
			if err := <-errc; err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Cleanup(func() { _ = p.stop(time.Second) })
	task := fmt.Sprintf("/proc/self/task/%d", tid)
	for deadline := time.Now().Add(30 * time.Second); ; {
		if _, err := os.Stat(task); os.IsNotExist(err) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("thread %d did not exit", tid)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if p.wait(2 * time.Second) {
		t.Fatal("the child was killed when the thread that called start exited")
	}
	// And it still dies with the program: Pdeathsig is set.
	if p.cmd.SysProcAttr.Pdeathsig != syscall.SIGKILL {
		t.Error("Pdeathsig not set on a non-detached child")
	}
}
