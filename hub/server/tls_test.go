package server

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"math/big"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/fedgate/fedgate/apis/fedgatepb"
	"github.com/fedgate/fedgate/apis/spokeconfig"
)

// testKeyPair is a self-signed certificate and its key, PEM-encoded.
func testKeyPair(t *testing.T, host string) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: host}, DNSNames: []string{host},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
}

// TestHTTPSListenerFromHubSecret runs the hub side of HTTPS: a TLS Secret applied through Admin is accepted (another
// type is refused naming field type), listed without its data, stored with no key in clear anywhere in etcd, and its
// key pair reaches the subscribing cluster's Port.TLS; a cluster reporting a Secret with data is refused, and one
// reporting it without data gets it as a Local certificate for its own Gateway.
func TestHTTPSListenerFromHubSecret(t *testing.T) {
	h := startHub(t)
	ctx := testCtx(t)
	certPEM, keyPEM := testKeyPair(t, "shop.example.com")
	b64 := base64.StdEncoding.EncodeToString
	secret := yamlObject(t, fmt.Sprintf(`{apiVersion: v1, kind: Secret, metadata: {name: shop-cert, namespace: infra}, type: kubernetes.io/tls, data: {tls.crt: %s}, stringData: {tls.key: %q}}`,
		b64(certPEM), keyPEM))
	class := yamlObject(t, `{apiVersion: gateway.networking.k8s.io/v1, kind: GatewayClass, metadata: {name: fedgate}, spec: {controllerName: fedgate.io/gateway-controller}}`)
	gw := yamlObject(t, `{apiVersion: gateway.networking.k8s.io/v1, kind: Gateway, metadata: {name: web, namespace: infra}, spec: {gatewayClassName: fedgate, `+
		`listeners: [{name: https, protocol: HTTPS, port: 18443, tls: {certificateRefs: [{name: shop-cert}]}}]}}`)

	opaque := yamlObject(t, `{apiVersion: v1, kind: Secret, metadata: {name: opaque, namespace: infra}, type: Opaque, data: {tls.key: c2VjcmV0}}`)
	if _, err := h.admin.Apply(ctx, &fedgatepb.ApplyRequest{Objects: []*fedgatepb.Object{opaque}}); status.Code(err) != codes.InvalidArgument ||
		!strings.Contains(err.Error(), `Secret "infra/opaque"`) || !strings.Contains(err.Error(), "type: Unsupported value") {
		t.Fatalf("apply of an Opaque Secret: %v", err)
	}

	sub := subscribe(t, h, "east", "")
	if _, err := report(t, h, "east", snapshot(1)); err != nil {
		t.Fatal(err)
	}
	resp, err := h.admin.Apply(ctx, &fedgatepb.ApplyRequest{Objects: []*fedgatepb.Object{secret, class, gw}})
	if err != nil {
		t.Fatal(err)
	}
	var cfg *spokeconfig.SpokeConfig
	for cfg == nil {
		u := sub.next(t)
		if u.Revision < resp.Revision {
			continue
		}
		if cfg, err = spokeconfig.Decode(u.ConfigJson); err != nil {
			t.Fatal(err)
		}
	}
	if len(cfg.Ports) != 1 || cfg.Ports[0].Protocol != spokeconfig.ProtocolHTTPS || cfg.Ports[0].TLS == nil || len(cfg.Ports[0].TLS.Listeners) != 1 {
		t.Fatalf("east's ports: %+v", cfg.Ports)
	}
	l := cfg.Ports[0].TLS.Listeners[0]
	if l.Hostname != "*" || len(l.Certificates) != 1 || !bytes.Equal(l.Certificates[0].KeyPEM, keyPEM) || !bytes.Equal(l.Certificates[0].CertPEM, certPEM) || l.Certificates[0].Local {
		t.Fatalf("east's TLS listener: hostname %q, %d certificates", l.Hostname, len(l.Certificates))
	}

	list, err := h.admin.List(ctx, &fedgatepb.ListRequest{Kind: "secrets"})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Objects) != 1 {
		t.Fatalf("listed %d Secrets", len(list.Objects))
	}
	if js := string(list.Objects[0].Object.Json); strings.Contains(js, `"data"`) || strings.Contains(js, `"stringData"`) || !strings.Contains(js, `"kubernetes.io/tls"`) {
		t.Fatalf("listed Secret: %s", js)
	}

	// No etcd value holds the listener key, nor the session or gossip keys the projection carries, in clear.
	needles := [][]byte{keyPEM, []byte(b64(keyPEM)), []byte("PRIVATE KEY")}
	for _, k := range cfg.SessionKeys {
		needles = append(needles, k.Secret, []byte(b64(k.Secret)))
	}
	if cfg.Gossip != nil {
		needles = append(needles, cfg.Gossip.Key, []byte(b64(cfg.Gossip.Key)))
	}
	all, err := h.Store().Client().Get(ctx, "", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range all.Kvs {
		for _, n := range needles {
			if bytes.Contains(kv.Value, n) {
				t.Errorf("etcd key %s holds key material in clear", kv.Key)
			}
		}
	}

	// A cluster reports its Secrets without data: with data, the whole report is refused.
	withData := yamlObject(t, fmt.Sprintf(`{apiVersion: v1, kind: Secret, metadata: {name: local, namespace: apps}, type: kubernetes.io/tls, data: {tls.crt: %s, tls.key: %s}}`, b64(certPEM), b64(keyPEM)))
	if _, err := report(t, h, "east", snapshot(2, withData)); status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "data: Forbidden") {
		t.Fatalf("report of a Secret with data: %v", err)
	}
	local := yamlObject(t, `{apiVersion: v1, kind: Secret, metadata: {name: local, namespace: apps, annotations: {fedgate.io/tls-check: valid}}, type: kubernetes.io/tls}`)
	ownGW := yamlObject(t, `{apiVersion: gateway.networking.k8s.io/v1, kind: Gateway, metadata: {name: own, namespace: apps}, spec: {gatewayClassName: fedgate, `+
		`listeners: [{name: https, protocol: HTTPS, port: 18444, hostname: own.example.com, tls: {certificateRefs: [{name: local}]}}]}}`)
	if _, err := report(t, h, "east", snapshot(3, local, ownGW)); err != nil {
		t.Fatal(err)
	}
	for {
		u := sub.next(t)
		c, err := spokeconfig.Decode(u.ConfigJson)
		if err != nil {
			t.Fatal(err)
		}
		if len(c.Ports) < 2 {
			continue
		}
		p := c.Ports[1]
		if p.Port != 18444 || p.TLS == nil || len(p.TLS.Listeners) != 1 || p.TLS.Listeners[0].Hostname != "own.example.com" {
			t.Fatalf("east's second port: %+v", p)
		}
		if crt := p.TLS.Listeners[0].Certificates; len(crt) != 1 || !crt[0].Local || crt[0].Namespace != "apps" || crt[0].Name != "local" || len(crt[0].KeyPEM) != 0 {
			t.Fatalf("east's own certificate: %+v", crt)
		}
		break
	}
}
