package tlssecrets

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/fedgate/fedgate/apis/resources"
	"github.com/fedgate/fedgate/spoke/tlssecrets/tlstest"
)

func TestGatewayRefs(t *testing.T) {
	ref := func(name string, mod func(*gatewayv1.SecretObjectReference)) gatewayv1.SecretObjectReference {
		r := gatewayv1.SecretObjectReference{Name: gatewayv1.ObjectName(name)}
		if mod != nil {
			mod(&r)
		}
		return r
	}
	gw := &gatewayv1.Gateway{
		ObjectMeta: metav1.ObjectMeta{Namespace: "gw-ns", Name: "gw"},
		Spec: gatewayv1.GatewaySpec{Listeners: []gatewayv1.Listener{
			{Name: "http", Protocol: gatewayv1.HTTPProtocolType, Port: 80},
			{Name: "a", Protocol: gatewayv1.HTTPSProtocolType, Port: 443, TLS: &gatewayv1.ListenerTLSConfig{CertificateRefs: []gatewayv1.SecretObjectReference{
				ref("unset-kind", nil),
				ref("explicit", func(r *gatewayv1.SecretObjectReference) {
					r.Group, r.Kind = ptr.To[gatewayv1.Group](""), ptr.To[gatewayv1.Kind]("Secret")
				}),
				ref("other-ns", func(r *gatewayv1.SecretObjectReference) { r.Namespace = ptr.To[gatewayv1.Namespace]("certs") }),
				ref("configmap", func(r *gatewayv1.SecretObjectReference) { r.Kind = ptr.To[gatewayv1.Kind]("ConfigMap") }),
				ref("foreign", func(r *gatewayv1.SecretObjectReference) {
					r.Group, r.Kind = ptr.To[gatewayv1.Group]("example.com"), ptr.To[gatewayv1.Kind]("Secret")
				}),
			}}},
			{Name: "b", Protocol: gatewayv1.HTTPSProtocolType, Port: 8443, TLS: &gatewayv1.ListenerTLSConfig{CertificateRefs: []gatewayv1.SecretObjectReference{
				ref("explicit", nil), // the same Secret again: listed once
			}}},
		}},
	}
	got := GatewayRefs(gw)
	want := []Ref{{"certs", "other-ns"}, {"gw-ns", "explicit"}, {"gw-ns", "unset-kind"}}
	if len(got) != len(want) {
		t.Fatalf("GatewayRefs = %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("GatewayRefs[%d] = %v, want %v", i, got[i], want[i])
		}
	}
}

func tlsSecret(t *testing.T, ns, name string, cert, key []byte) *corev1.Secret {
	t.Helper()
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID("u-" + ns + "-" + name), ResourceVersion: "1",
			Labels: map[string]string{"team": "a"}, Annotations: map[string]string{"note": "private-annotation"}},
		Type: corev1.SecretTypeTLS,
		Data: map[string][]byte{corev1.TLSCertKey: cert, corev1.TLSPrivateKeyKey: key, "extra": []byte("other data")},
	}
}

func TestStore(t *testing.T) {
	certA, keyA := tlstest.SelfSigned(t, "a.example.com")
	certB, keyB := tlstest.SelfSigned(t, "b.example.com")
	st := New()
	if _, _, err := st.Lookup("ns", "a"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Lookup of an empty store: %v, want ErrNotFound", err)
	}

	changed := st.Changed()
	sec := tlsSecret(t, "ns", "a", bytes.Clone(certA), keyA)
	if err := st.Set(sec); err != nil {
		t.Fatal(err)
	}
	select {
	case <-changed:
	default:
		t.Error("Set did not signal a change")
	}
	sec.Data[corev1.TLSCertKey][0] = 'X' // the store holds copies
	c, k, err := st.Lookup("ns", "a")
	if err != nil || !bytes.Equal(c, certA) || !bytes.Equal(k, keyA) || c[0] == 'X' {
		t.Fatalf("Lookup = %q, %d key bytes, %v", c, len(k), err)
	}
	gen := st.DataGeneration()

	// The reported form: name, namespace, uid, type and the check; no data, labels or other annotations.
	objs := st.Objects()
	if len(objs) != 1 || objs[0].Kind != resources.KindSecret || objs[0].ApiVersion != "v1" || objs[0].Namespace != "ns" || objs[0].Name != "a" {
		t.Fatalf("Objects = %v", objs)
	}
	var reported map[string]any
	if err := json.Unmarshal(objs[0].Json, &reported); err != nil {
		t.Fatal(err)
	}
	if _, has := reported["data"]; has {
		t.Errorf("reported form has data: %s", objs[0].Json)
	}
	for _, leak := range []string{"private-annotation", "other data", "team", "PRIVATE KEY"} {
		if strings.Contains(string(objs[0].Json), leak) {
			t.Errorf("reported form carries %q: %s", leak, objs[0].Json)
		}
	}
	md := reported["metadata"].(map[string]any)
	if md["uid"] != "u-ns-a" || reported["type"] != string(corev1.SecretTypeTLS) ||
		md["annotations"].(map[string]any)[resources.TLSCheckAnnotation] != resources.TLSCheckValid {
		t.Errorf("reported form %s", objs[0].Json)
	}

	// The same data again (a new resourceVersion): the report changes, the served data does not.
	again := tlsSecret(t, "ns", "a", certA, keyA)
	again.ResourceVersion = "2"
	changed = st.Changed()
	if err := st.Set(again); err != nil {
		t.Fatal(err)
	}
	<-changed
	if st.DataGeneration() != gen {
		t.Error("a resourceVersion-only change moved the data generation")
	}
	// Identical: nothing at all.
	changed = st.Changed()
	if err := st.Set(again); err != nil {
		t.Fatal(err)
	}
	select {
	case <-changed:
		t.Error("an identical Set signalled a change")
	default:
	}

	// A key that is not the certificate's: Lookup says why, the report carries the reason, the data moved.
	bad := tlsSecret(t, "ns", "a", certA, keyB)
	bad.ResourceVersion = "3"
	if err := st.Set(bad); err != nil {
		t.Fatal(err)
	}
	if st.DataGeneration() == gen {
		t.Error("a key change did not move the data generation")
	}
	if _, _, err := st.Lookup("ns", "a"); err == nil || errors.Is(err, ErrNotFound) || strings.Contains(err.Error(), "PRIVATE") {
		t.Errorf("Lookup of a mismatched pair: %v", err)
	}
	if js := string(st.Objects()[0].Json); strings.Contains(js, `"`+resources.TLSCheckValid+`"`) || !strings.Contains(js, "private key does not match") {
		t.Errorf("reported form of a mismatched pair: %s", js)
	}

	if err := st.Set(tlsSecret(t, "other", "b", certB, keyB)); err != nil {
		t.Fatal(err)
	}
	if got := st.Refs(); len(got) != 2 || got[0] != (Ref{"ns", "a"}) || got[1] != (Ref{"other", "b"}) {
		t.Errorf("Refs = %v", got)
	}
	gen = st.DataGeneration()
	st.Retain(func(r Ref) bool { return r.Namespace == "other" })
	if _, _, err := st.Lookup("ns", "a"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Lookup after Retain dropped it: %v", err)
	}
	if _, _, err := st.Lookup("other", "b"); err != nil {
		t.Errorf("Lookup of a retained Secret: %v", err)
	}
	if st.DataGeneration() == gen {
		t.Error("Retain that dropped a Secret did not move the data generation")
	}
	st.Delete("other", "b")
	if len(st.Objects()) != 0 {
		t.Errorf("Objects after Delete: %v", st.Objects())
	}

	select {
	case <-st.Synced():
		t.Error("synced before MarkSynced")
	default:
	}
	st.MarkSynced()
	st.MarkSynced()
	<-st.Synced()
}

// Readers and writers at once (go test -race): Lookup never sees a torn entry.
func TestStoreConcurrent(t *testing.T) {
	certA, keyA := tlstest.SelfSigned(t, "a.example.com")
	certB, keyB := tlstest.SelfSigned(t, "b.example.com")
	st := New()
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				c, k, err := st.Lookup("ns", "s")
				if err == nil && !(bytes.Equal(c, certA) && bytes.Equal(k, keyA) || bytes.Equal(c, certB) && bytes.Equal(k, keyB)) {
					t.Error("Lookup returned a certificate with another's key")
					return
				}
				_ = st.Objects()
			}
		})
	}
	deadline := time.Now().Add(200 * time.Millisecond)
	for i := 0; time.Now().Before(deadline); i++ {
		c, k := certA, keyA
		if i%2 == 1 {
			c, k = certB, keyB
		}
		if err := st.Set(tlsSecret(t, "ns", "s", c, k)); err != nil {
			t.Fatal(err)
		}
		if i%5 == 0 {
			st.Delete("ns", "s")
		}
	}
	close(stop)
	wg.Wait()
}
