// Package clientconfig is the admin credential file the hub writes at bootstrap and hubctl reads (~/.fedgate/config):
// the hub address, the CA bundle to verify it and the admin client certificate and key, all PEM. The file is JSON,
// which is also YAML; Load accepts either. It holds a private key, so Write creates it with mode 0600 and Load
// refuses a file others can read.
package clientconfig

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"sigs.k8s.io/yaml"
)

// Config is the content of the file.
type Config struct {
	// Hub is host:port of the hub.
	Hub string `json:"hub"`
	// CABundle is the PEM of every CA the hub trusts; hubctl verifies the hub against it.
	CABundle string `json:"caBundle"`
	// Certificate and Key are the admin client credential, PEM.
	Certificate string `json:"certificate"`
	Key         string `json:"key"`
}

// Load reads and checks a config file.
func Load(path string) (*Config, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%s: mode %v lets others read the admin key; chmod 600 it", path, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var c Config
	if err := yaml.UnmarshalStrict(b, &c); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if _, err := c.TLS(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &c, nil
}

// Write stores c at path with mode 0600, creating the directory (0700). It refuses to overwrite an existing file:
// an admin credential is replaced on purpose, never by accident.
func Write(path string, c *Config) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	b, err := yaml.Marshal(c)
	if err != nil {
		return err
	}
	// Written whole under a temporary name, then linked into place: a reader (hubctl started as soon as the hub's port
	// opens) sees no file or all of it, and an existing file is never replaced (link fails as O_EXCL would).
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Link(f.Name(), path)
}

// TLS returns the client TLS settings: the admin certificate, and the hub verified against the CA bundle. The hub's
// certificate names the addresses it serves (its advertise address, 127.0.0.1 and localhost).
func (c *Config) TLS() (*tls.Config, error) {
	if c.Hub == "" {
		return nil, errors.New("hub: Required value")
	}
	cert, err := tls.X509KeyPair([]byte(c.Certificate), []byte(c.Key))
	if err != nil {
		return nil, fmt.Errorf("certificate/key: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(c.CABundle)) {
		return nil, errors.New("caBundle: no certificate found")
	}
	return &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert}, RootCAs: pool, NextProtos: []string{"h2"}}, nil
}
