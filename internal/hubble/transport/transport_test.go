package transport

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"

	observerpb "github.com/cilium/cilium/api/v1/observer"
)

// fakeObserver answers ServerStatus only.
type fakeObserver struct {
	observerpb.UnimplementedObserverServer
}

func (fakeObserver) ServerStatus(context.Context, *observerpb.ServerStatusRequest) (*observerpb.ServerStatusResponse, error) {
	return &observerpb.ServerStatusResponse{NumFlows: 42}, nil
}

// pki writes a CA and a certificate signed by it for each name.
type pki struct {
	dir    string
	ca     *x509.Certificate
	caKey  *ecdsa.PrivateKey
	caFile string
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(der)
	p := &pki{dir: t.TempDir(), ca: ca, caKey: key}
	p.caFile = p.write(t, "ca.pem", "CERTIFICATE", der)
	return p
}

func (p *pki) write(t *testing.T, name, typ string, der []byte) string {
	t.Helper()
	f := filepath.Join(p.dir, name)
	if err := os.WriteFile(f, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

func (p *pki) issue(t *testing.T, name string, usage x509.ExtKeyUsage) (certFile, keyFile string) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{usage},
		KeyUsage: x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &key.PublicKey, p.caKey)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	return p.write(t, name+".pem", "CERTIFICATE", der), p.write(t, name+"-key.pem", "EC PRIVATE KEY", kder)
}

func status(addr string, c *ClientTLS) (uint64, error) {
	conn, err := Dial(addr, c)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := observerpb.NewObserverClient(conn).ServerStatus(ctx, &observerpb.ServerStatusRequest{})
	return st.GetNumFlows(), err
}

func TestMutualTLS(t *testing.T) {
	p := newPKI(t)
	srvCert, srvKey := p.issue(t, "n1", x509.ExtKeyUsageServerAuth)
	cliCert, cliKey := p.issue(t, "client", x509.ExtKeyUsageClientAuth)
	sock := filepath.Join(t.TempDir(), "h.sock")
	s, err := Start(ServerOptions{
		UnixSocket: sock, TCPAddress: "127.0.0.1:0",
		TLS: &ServerTLS{CertFile: srvCert, KeyFile: srvKey, ClientCAFiles: []string{p.caFile}},
	}, Services{Observer: fakeObserver{}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	tcp := s.Addrs()[1]
	good := &ClientTLS{Enabled: true, CAFiles: []string{p.caFile}, CertFile: cliCert, KeyFile: cliKey, ServerName: "n1"}
	if n, err := status(tcp, good); err != nil || n != 42 {
		t.Errorf("mTLS client: %d %v", n, err)
	}
	if _, err := status(tcp, &ClientTLS{Enabled: true, CAFiles: []string{p.caFile}, ServerName: "n1"}); err == nil {
		t.Error("a client without certificate was served")
	}
	if _, err := status(tcp, nil); err == nil {
		t.Error("a plaintext client was served on the TLS listener")
	}
	wrongName := *good
	wrongName.ServerName = "n2"
	if _, err := status(tcp, &wrongName); err == nil {
		t.Error("a server certificate for another name was accepted")
	}
	// The unix socket stays plaintext, and TLS settings are ignored for it.
	if n, err := status("unix://"+sock, good); err != nil || n != 42 {
		t.Errorf("unix socket: %d %v", n, err)
	}
	if fi, err := os.Stat(sock); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode: %v %v", fi.Mode(), err)
	}
}

func TestServerTLSErrors(t *testing.T) {
	if _, err := Start(ServerOptions{TCPAddress: "127.0.0.1:0", TLS: &ServerTLS{CertFile: "/nonexistent.pem", KeyFile: "/nonexistent.key"}},
		Services{Observer: fakeObserver{}}); err == nil {
		t.Error("missing certificate accepted")
	}
	if _, err := Start(ServerOptions{}, Services{Observer: fakeObserver{}}); err == nil {
		t.Error("no listener accepted")
	}
}

func TestTarget(t *testing.T) {
	for in, want := range map[string]string{
		"unix:///run/h.sock": "unix:///run/h.sock",
		"unix:/run/h.sock":   "unix:///run/h.sock",
		"/run/h.sock":        "unix:///run/h.sock",
		"localhost:4245":     "passthrough:///localhost:4245",
		"[fd00::1]:4244":     "passthrough:///[fd00::1]:4244",
	} {
		if got, err := Target(in); err != nil || got != want {
			t.Errorf("Target(%q) = %q %v, want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "unix://", "nohost", "host:"} {
		if _, err := Target(bad); err == nil {
			t.Errorf("Target(%q) accepted", bad)
		}
	}
}
