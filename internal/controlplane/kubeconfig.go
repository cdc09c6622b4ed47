package controlplane

import (
	"fmt"
	"os"
	"path/filepath"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// WriteKubeconfig writes a kubeconfig for server (https://host:port) with
// the CA and the client certificate and key embedded (PEM), so the file
// works wherever it is copied. The file is private (0600).
func WriteKubeconfig(path, server string, caPEM, certPEM, keyPEM []byte) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["lumen"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: caPEM}
	cfg.AuthInfos["lumen"] = &clientcmdapi.AuthInfo{ClientCertificateData: certPEM, ClientKeyData: keyPEM}
	cfg.Contexts["lumen"] = &clientcmdapi.Context{Cluster: "lumen", AuthInfo: "lumen"}
	cfg.CurrentContext = "lumen"
	b, err := clientcmd.Write(*cfg)
	if err != nil {
		return fmt.Errorf("encoding kubeconfig %s: %w", path, err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("writing kubeconfig: %w", err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("writing kubeconfig %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("writing kubeconfig %s: %w", path, err)
	}
	return nil
}

// WriteKubeconfigFor writes an admin kubeconfig whose server is serverURL,
// for clients that reach the API server another way than 127.0.0.1 (the
// lab's agents, in their network namespaces, through a proxy). The
// address in serverURL must be one of Options.ExtraSANs (or a name or
// address the serving certificate already holds) for TLS to verify.
func (c *ControlPlane) WriteKubeconfigFor(path, serverURL string) error {
	return WriteKubeconfig(path, serverURL, c.caPEM, c.adminCertPEM, c.adminKeyPEM)
}

// writeKubeconfigs writes the admin's and the controller manager's.
func (c *ControlPlane) writeKubeconfigs() error {
	if err := c.WriteKubeconfigFor(c.Kubeconfig(), c.URL()); err != nil {
		return fmt.Errorf("controlplane: %w", err)
	}
	cert, err := os.ReadFile(c.pki.kcmCert)
	if err != nil {
		return fmt.Errorf("controlplane: %w", err)
	}
	key, err := os.ReadFile(c.pki.kcmKey)
	if err != nil {
		return fmt.Errorf("controlplane: %w", err)
	}
	if err := WriteKubeconfig(filepath.Join(c.dir, "controller-manager.kubeconfig"), c.URL(), c.caPEM, cert, key); err != nil {
		return fmt.Errorf("controlplane: %w", err)
	}
	return nil
}
