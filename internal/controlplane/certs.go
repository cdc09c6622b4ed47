package controlplane

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"time"
)

// pki is the control plane's certificate material, as file paths under
// <Dir>/pki. The CA and the service-account key pair are kept across
// restarts (so tokens and kubeconfigs stay valid); leaf certificates are
// issued anew on every Start (their SANs may change).
type pki struct {
	dir                           string
	caCert, caKey                 string
	servingCert, servingKey       string // kube-apiserver
	adminCert, adminKey           string // CN=lumen-admin, O=system:masters
	kcmCert, kcmKey               string // client: CN=system:kube-controller-manager
	kcmServingCert, kcmServingKey string
	saKey, saPub                  string
}

func newPKI(dir string) *pki {
	p := func(name string) string { return filepath.Join(dir, name) }
	return &pki{
		dir:    dir,
		caCert: p("ca.crt"), caKey: p("ca.key"),
		servingCert: p("apiserver.crt"), servingKey: p("apiserver.key"),
		adminCert: p("admin.crt"), adminKey: p("admin.key"),
		kcmCert: p("controller-manager.crt"), kcmKey: p("controller-manager.key"),
		kcmServingCert: p("controller-manager-serving.crt"), kcmServingKey: p("controller-manager-serving.key"),
		saKey: p("sa.key"), saPub: p("sa.pub"),
	}
}

// generate writes the CA (unless present), the service-account key pair
// (unless present) and fresh leaf certificates. ips and dns are the
// apiserver's serving SANs.
func (p *pki) generate(ips []netip.Addr, dns []string) error {
	if err := os.MkdirAll(p.dir, 0o700); err != nil {
		return fmt.Errorf("creating %s: %w", p.dir, err)
	}
	ca, caKey, err := p.loadOrCreateCA()
	if err != nil {
		return err
	}
	if err := p.ensureSAKeys(); err != nil {
		return err
	}
	netIPs := make([]net.IP, len(ips))
	for i, a := range ips {
		netIPs[i] = net.IP(a.Unmap().AsSlice())
	}
	leaves := []struct {
		cert, key string
		tmpl      x509.Certificate
	}{
		{p.servingCert, p.servingKey, x509.Certificate{
			Subject:     pkix.Name{CommonName: "kube-apiserver"},
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
			IPAddresses: netIPs, DNSNames: dns,
		}},
		{p.adminCert, p.adminKey, x509.Certificate{
			Subject:     pkix.Name{CommonName: "lumen-admin", Organization: []string{"system:masters"}},
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		}},
		{p.kcmCert, p.kcmKey, x509.Certificate{
			Subject:     pkix.Name{CommonName: "system:kube-controller-manager"},
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		}},
		{p.kcmServingCert, p.kcmServingKey, x509.Certificate{
			Subject:     pkix.Name{CommonName: "kube-controller-manager"},
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
			IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"},
		}},
	}
	for _, l := range leaves {
		if err := issue(l.cert, l.key, &l.tmpl, ca, caKey); err != nil {
			return fmt.Errorf("issuing the certificate %s: %w", filepath.Base(l.cert), err)
		}
	}
	return nil
}

func (p *pki) loadOrCreateCA() (*x509.Certificate, crypto.Signer, error) {
	if cert, key, err := loadPair(p.caCert, p.caKey); err == nil {
		return cert, key, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, nil, fmt.Errorf("loading the CA: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "lumen-kubernetes-ca"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, fmt.Errorf("creating the CA: %w", err)
	}
	if err := writeKey(p.caKey, key); err != nil {
		return nil, nil, err
	}
	if err := writePEM(p.caCert, "CERTIFICATE", der, 0o644); err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	return cert, key, err
}

func (p *pki) ensureSAKeys() error {
	if _, err := os.Stat(p.saKey); err == nil {
		if _, err := os.Stat(p.saPub); err == nil {
			return nil
		}
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	pub, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return err
	}
	if err := writeKey(p.saKey, key); err != nil {
		return err
	}
	return writePEM(p.saPub, "PUBLIC KEY", pub, 0o644)
}

func issue(certPath, keyPath string, tmpl *x509.Certificate, ca *x509.Certificate, caKey crypto.Signer) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl.SerialNumber = serial()
	tmpl.NotBefore = time.Now().Add(-time.Hour)
	tmpl.NotAfter = time.Now().AddDate(1, 0, 0)
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, key.Public(), caKey)
	if err != nil {
		return err
	}
	if err := writeKey(keyPath, key); err != nil {
		return err
	}
	return writePEM(certPath, "CERTIFICATE", der, 0o644)
}

func loadPair(certPath, keyPath string) (*x509.Certificate, crypto.Signer, error) {
	cb, err := os.ReadFile(certPath)
	if err != nil {
		return nil, nil, err
	}
	kb, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, nil, err
	}
	cblock, _ := pem.Decode(cb)
	kblock, _ := pem.Decode(kb)
	if cblock == nil || kblock == nil {
		return nil, nil, fmt.Errorf("%s or %s is not PEM", certPath, keyPath)
	}
	cert, err := x509.ParseCertificate(cblock.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", certPath, err)
	}
	key, err := x509.ParsePKCS8PrivateKey(kblock.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", keyPath, err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, nil, fmt.Errorf("%s: not a signing key", keyPath)
	}
	return cert, signer, nil
}

func writeKey(path string, key crypto.Signer) error {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	return writePEM(path, "PRIVATE KEY", der, 0o600)
}

func writePEM(path, typ string, der []byte, mode os.FileMode) error {
	b := pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, mode); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
	if err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	return n
}
