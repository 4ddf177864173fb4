package resources

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// KindSecret is a core/v1 Secret of type kubernetes.io/tls: a listener certificate. Applied at the hub it carries its
// data (sealed in etcd, never listed); reported by a cluster it carries none (ReportedTLSSecret).
const KindSecret = "Secret"

// TLSCheckAnnotation is set on a Secret a cluster reports in place of its data: TLSCheckValid when CheckTLSSecret
// passed in that cluster, else why it failed. The hub judges a listener's certificateRefs by it.
const TLSCheckAnnotation = "fedgate.io/tls-check"

// TLSCheckValid is TLSCheckAnnotation's value for a usable key pair.
const TLSCheckValid = "valid"

// CheckTLSSecret reports whether s can serve as a listener certificate: type kubernetes.io/tls, a tls.crt holding at
// least one PEM certificate that parses, and a tls.key that is its private key. The error says what is wrong and never
// quotes the key.
func CheckTLSSecret(s *corev1.Secret) error {
	if s.Type != corev1.SecretTypeTLS {
		return fmt.Errorf("type is %q, want %q", s.Type, corev1.SecretTypeTLS)
	}
	crt, key := s.Data[corev1.TLSCertKey], s.Data[corev1.TLSPrivateKeyKey]
	switch {
	case len(crt) == 0:
		return errors.New("data[tls.crt] is empty")
	case len(key) == 0:
		return errors.New("data[tls.key] is empty")
	}
	pair, err := tls.X509KeyPair(crt, key)
	if err != nil {
		// crypto/tls's errors name the problem ("private key does not match public key", "failed to find any PEM
		// data in certificate input") without echoing key bytes.
		return fmt.Errorf("tls.crt and tls.key: %v", err)
	}
	if _, err := x509.ParseCertificate(pair.Certificate[0]); err != nil {
		return fmt.Errorf("tls.crt: %v", err)
	}
	return nil
}

// ReportedTLSSecret is what a cluster reports of one of its TLS Secrets: its name, namespace, uid and type, and the
// result of CheckTLSSecret in TLSCheckAnnotation — never its data, labels or other annotations.
func ReportedTLSSecret(s *corev1.Secret) *corev1.Secret {
	check := TLSCheckValid
	if err := CheckTLSSecret(s); err != nil {
		check = err.Error()
	}
	return &corev1.Secret{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: KindSecret},
		ObjectMeta: metav1.ObjectMeta{
			Namespace: s.Namespace, Name: s.Name, UID: s.UID, ResourceVersion: s.ResourceVersion,
			CreationTimestamp: s.CreationTimestamp,
			Annotations:       map[string]string{TLSCheckAnnotation: check},
		},
		Type: s.Type,
	}
}
