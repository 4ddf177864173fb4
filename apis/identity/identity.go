// Package identity defines who is who in fedgate's PKI: the SPIFFE-style URI SANs the hub puts into the certificates
// it issues, bootstrap tokens in kubeadm's form, and the CA pin a joining cluster checks. Shared by the hub, the spoke
// and hubctl; it creates no keys and stores nothing.
package identity

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"regexp"
	"strings"
)

// Trust domain and path prefixes of the identities the hub issues.
const (
	TrustDomain   = "fedgate"
	clusterPrefix = "/cluster/"
	adminPath     = "/admin"
	hubPath       = "/hub"
)

// Kind of principal.
type Kind string

const (
	KindCluster Kind = "cluster"
	KindAdmin   Kind = "admin"
	KindHub     Kind = "hub"
)

// Principal is an authenticated caller.
type Principal struct {
	Kind Kind
	// Name of the cluster (KindCluster); empty otherwise.
	Name string
}

func (p Principal) String() string {
	if p.Kind == KindCluster {
		return "cluster " + p.Name
	}
	return string(p.Kind)
}

// ClusterURI is the URI SAN of a cluster's certificate.
func ClusterURI(name string) *url.URL {
	return &url.URL{Scheme: "spiffe", Host: TrustDomain, Path: clusterPrefix + name}
}

// AdminURI is the URI SAN of an admin credential.
func AdminURI() *url.URL { return &url.URL{Scheme: "spiffe", Host: TrustDomain, Path: adminPath} }

// HubURI is the URI SAN of the hub's serving certificate.
func HubURI() *url.URL { return &url.URL{Scheme: "spiffe", Host: TrustDomain, Path: hubPath} }

var clusterNameRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)

// ValidateClusterName checks a cluster name: a DNS label (it appears in URIs, etcd keys and Kubernetes names).
func ValidateClusterName(name string) error {
	if !clusterNameRE.MatchString(name) {
		return fmt.Errorf("cluster name %q: must be a DNS label (lowercase letters, digits, '-'; at most 63)", name)
	}
	return nil
}

// FromCertificate reads the principal from a verified certificate's URI SAN. Exactly one fedgate URI is allowed.
func FromCertificate(cert *x509.Certificate) (Principal, error) {
	var found []Principal
	for _, u := range cert.URIs {
		if u.Scheme != "spiffe" || u.Host != TrustDomain {
			continue
		}
		switch {
		case u.Path == adminPath:
			found = append(found, Principal{Kind: KindAdmin})
		case u.Path == hubPath:
			found = append(found, Principal{Kind: KindHub})
		case strings.HasPrefix(u.Path, clusterPrefix):
			name := strings.TrimPrefix(u.Path, clusterPrefix)
			if err := ValidateClusterName(name); err != nil {
				return Principal{}, err
			}
			found = append(found, Principal{Kind: KindCluster, Name: name})
		}
	}
	if len(found) != 1 {
		return Principal{}, fmt.Errorf("certificate %q carries %d fedgate identities, want exactly 1", cert.Subject.CommonName, len(found))
	}
	return found[0], nil
}

// CAHash is "sha256:<hex>" over the certificate's SubjectPublicKeyInfo, as kubeadm's discovery-token-ca-cert-hash.
func CAHash(cert *x509.Certificate) string {
	s := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return "sha256:" + hex.EncodeToString(s[:])
}

// MatchCAHash reports whether any certificate in chain has the pinned hash (compared in constant time).
func MatchCAHash(pin string, certs ...*x509.Certificate) bool {
	pin = strings.ToLower(strings.TrimSpace(pin))
	for _, c := range certs {
		if subtle.ConstantTimeCompare([]byte(CAHash(c)), []byte(pin)) == 1 {
			return true
		}
	}
	return false
}

// ValidateCAHash checks the form of a --ca-hash value.
func ValidateCAHash(pin string) error {
	h, ok := strings.CutPrefix(pin, "sha256:")
	if !ok || len(h) != 64 {
		return fmt.Errorf("ca hash %q: want sha256:<64 hex digits>", pin)
	}
	if _, err := hex.DecodeString(h); err != nil {
		return fmt.Errorf("ca hash %q: %v", pin, err)
	}
	return nil
}

// Token is a bootstrap token "id.secret" in kubeadm's form [a-z0-9]{6}.[a-z0-9]{16}. The id is public (it names the
// token); the secret is shown once and stored only as a hash.
type Token struct {
	ID     string
	Secret string
}

var tokenRE = regexp.MustCompile(`^([a-z0-9]{6})\.([a-z0-9]{16})$`)

// ParseToken parses "id.secret".
func ParseToken(s string) (Token, error) {
	m := tokenRE.FindStringSubmatch(s)
	if m == nil {
		// Never echo the value: it may be a real secret with a typo.
		return Token{}, errors.New("token: want the form [a-z0-9]{6}.[a-z0-9]{16}")
	}
	return Token{ID: m[1], Secret: m[2]}, nil
}

func (t Token) String() string { return t.ID + "." + t.Secret }

// NewToken returns a random token.
func NewToken() (Token, error) {
	id, err := randomString(6)
	if err != nil {
		return Token{}, err
	}
	secret, err := randomString(16)
	if err != nil {
		return Token{}, err
	}
	return Token{ID: id, Secret: secret}, nil
}

// HashSecret is what the hub stores for a token secret: SHA-256 over the id and secret. Bootstrap secrets have 16
// random characters from 36 (≈82 bits), so a fast hash is enough; they also expire.
func HashSecret(t Token) string {
	s := sha256.Sum256([]byte("fedgate-bootstrap-token:" + t.ID + "." + t.Secret))
	return hex.EncodeToString(s[:])
}

const tokenAlphabet = "abcdefghijklmnopqrstuvwxyz0123456789"

func randomString(n int) (string, error) {
	b := make([]byte, n)
	out := make([]byte, n)
	for i := 0; i < n; {
		if _, err := rand.Read(b); err != nil {
			return "", err
		}
		for _, c := range b {
			// Rejection sampling keeps the distribution uniform: 252 = 7*36.
			if c < 252 && i < n {
				out[i] = tokenAlphabet[int(c)%36]
				i++
			}
		}
	}
	return string(out), nil
}

// ParseCertificates parses every CERTIFICATE block of a PEM bundle (a CA bundle, or a leaf with its chain); blocks of
// other types are skipped. No certificate at all is an error.
func ParseCertificates(b []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, errors.New("no certificate found")
	}
	return out, nil
}

// SerialHex formats a certificate serial as lowercase hex: the form hub records, revocations and spoke configs use.
func SerialHex(n *big.Int) string { return fmt.Sprintf("%x", n) }

// Why the hub refuses a cluster's certificate: the Reason of the google.rpc.ErrorInfo (domain ErrorDomain, metadata
// "cluster") in the Unauthenticated status it answers with, so a spoke can tell a removal (clean up and exit) from a
// re-join (another agent holds the cluster's new identity).
const (
	ErrorDomain              = "fedgate.io"
	ReasonClusterRemoved     = "CLUSTER_REMOVED"
	ReasonClusterRejoined    = "CLUSTER_REJOINED"
	ReasonCertificateRevoked = "CERTIFICATE_REVOKED" // revoked for a reason the hub did not record
)
