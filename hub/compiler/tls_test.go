package compiler

import (
	"bytes"
	"os"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func loadCase(t *testing.T, name string) *Inputs {
	t.Helper()
	data, err := os.ReadFile("testdata/" + name + ".in.yaml")
	if err != nil {
		t.Fatal(err)
	}
	in, _, err := loadInputsSecrets(data)
	if err != nil {
		t.Fatal(err)
	}
	return in
}

func hubSecret(in *Inputs, ns, name string) *corev1.Secret {
	for _, s := range in.Hub.Secrets {
		if s.Namespace == ns && s.Name == name {
			return s
		}
	}
	return nil
}

// TestSecretRelevance: a Secret no listener names changes no projection, whether it changes or appears; a hub
// Secret's data reaches only the projections of clusters serving a listener that names it, and changing it changes
// those alone.
func TestSecretRelevance(t *testing.T) {
	in := loadCase(t, "https-hub")
	before := projectAll(t, in)

	unused := hubSecret(in, "infra", "unused")
	if unused == nil {
		t.Fatal("https-hub has no Secret infra/unused")
	}
	other := hubSecret(in, "infra", "bad-key")
	unused.Data = map[string][]byte{corev1.TLSCertKey: other.Data[corev1.TLSCertKey], corev1.TLSPrivateKeyKey: []byte("rotated")}
	in.Hub.Secrets = append(in.Hub.Secrets, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "new", Namespace: "infra"}, Type: corev1.SecretTypeTLS,
		Data: map[string][]byte{corev1.TLSCertKey: []byte("x"), corev1.TLSPrivateKeyKey: []byte("y")},
	})
	if got, _ := changed(before, projectAll(t, in)); len(got) != 0 {
		t.Fatalf("unreferenced Secrets changed the projections of %v", got)
	}

	key := hubSecret(in, "infra", "shop-cert").Data[corev1.TLSPrivateKeyKey]
	g := Compile(in).Graph
	for cluster, want := range map[string]bool{"east": true, "west": false} {
		sc := Project(g, cluster)
		found := false
		for _, p := range sc.Ports {
			if p.TLS == nil {
				continue
			}
			for _, l := range p.TLS.Listeners {
				for _, c := range l.Certificates {
					found = found || bytes.Equal(c.KeyPEM, key)
				}
			}
		}
		if found != want {
			t.Errorf("%s: key of infra/shop-cert in projection = %v, want %v", cluster, found, want)
		}
	}

	// The referenced Secret's new data reaches east (which serves it) and nobody else.
	shop := hubSecret(in, "infra", "shop-cert")
	shop.Data = map[string][]byte{corev1.TLSCertKey: shop.Data[corev1.TLSCertKey], corev1.TLSPrivateKeyKey: shop.Data[corev1.TLSPrivateKeyKey]}
	base := projectAll(t, in)
	shop.Data[corev1.TLSPrivateKeyKey] = []byte("not a key")
	got, _ := changed(base, projectAll(t, in))
	if len(got) != 1 || got[0] != "east" {
		t.Fatalf("changing infra/shop-cert changed %v, want [east]", got)
	}
}

// TestProjectedTLSSharesNoMemory: a projection's certificates are copies, so a spoke-side mutation (or another
// projection) cannot reach the graph.
func TestProjectedTLSSharesNoMemory(t *testing.T) {
	g := Compile(loadCase(t, "https-hub")).Graph
	a, b := Project(g, "east"), Project(g, "east")
	pa := a.Ports[len(a.Ports)-1]
	if pa.TLS == nil || len(pa.TLS.Listeners) == 0 {
		t.Fatalf("east's last port has no TLS: %+v", pa)
	}
	pa.TLS.Listeners[0].Certificates[0].KeyPEM[0] ^= 0xff
	pb := b.Ports[len(b.Ports)-1]
	if pb.TLS.Listeners[0].Certificates[0].KeyPEM[0] == pa.TLS.Listeners[0].Certificates[0].KeyPEM[0] {
		t.Fatal("two projections share certificate memory")
	}
}
