package resources

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// KindConfigMap is a core/v1 ConfigMap holding a CA bundle under CACertKey: a Gateway's client-certificate
// validation (spec.tls.frontend caCertificateRefs). CA certificates are public, so a cluster reports the bundle itself
// (ReportedCAConfigMap) and the hub compiles it into the projections of the clusters serving the Gateway.
const KindConfigMap = "ConfigMap"

// CACertKey is the ConfigMap key of the PEM CA bundle (Gateway API: "ca.crt").
const CACertKey = "ca.crt"

// CheckCABundle reports whether b is a usable CA bundle: PEM, at least one block, every block a CERTIFICATE that
// parses.
func CheckCABundle(b []byte) error {
	n := 0
	for rest := b; ; {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			return fmt.Errorf("%s: a %q PEM block, want only CERTIFICATE blocks", CACertKey, blk.Type)
		}
		if _, err := x509.ParseCertificate(blk.Bytes); err != nil {
			return fmt.Errorf("%s: certificate %d: %v", CACertKey, n+1, err)
		}
		n++
	}
	if n == 0 {
		return errors.New(CACertKey + ": no PEM certificate")
	}
	return nil
}

// ReportedCAConfigMap is what a cluster reports of a ConfigMap that a Gateway's caCertificateRefs name: its name,
// namespace, uid and resourceVersion and the CACertKey entry alone (no other data, labels or annotations).
func ReportedCAConfigMap(cm *corev1.ConfigMap) *corev1.ConfigMap {
	out := &corev1.ConfigMap{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: KindConfigMap},
		ObjectMeta: metav1.ObjectMeta{
			Namespace: cm.Namespace, Name: cm.Name, UID: cm.UID, ResourceVersion: cm.ResourceVersion,
			CreationTimestamp: cm.CreationTimestamp,
		},
	}
	if v, ok := cm.Data[CACertKey]; ok {
		out.Data = map[string]string{CACertKey: v}
	}
	return out
}
