package credentials

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/fedgate/fedgate/apis/fedgatepb"
	"github.com/fedgate/fedgate/apis/identity"
	"github.com/fedgate/fedgate/test/envtest"
)

// A spoke whose credentials live in a Secret keeps each renewal there: restarted (the Secret read again) it starts
// with the renewed certificate, not the one join wrote. A renewal the API server refuses to store is saved again,
// without asking the hub for another certificate.
func TestRenewalKeptInSecret(t *testing.T) {
	c := envtest.Start(t, "member")[0]
	ctx := context.Background()
	kc, err := kubernetes.NewForConfig(c.Config)
	if err != nil {
		t.Fatal(err)
	}
	ca := newCA(t, "hub-ca")
	dir := ca.credentialsFor(t, identity.ClusterURI("east"), time.Now().Add(-time.Minute), time.Hour)
	data := map[string][]byte{"FEDGATE_HUB": []byte("hub:8443")}
	for _, f := range []string{KeyFile, CertFile, CAFile} {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		data[f] = b
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "fedgate-system"}}
	if _, err := kc.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "fedgate-system", Name: "fedgate-spoke-credentials"}, Data: data}
	if _, err := kc.CoreV1().Secrets("fedgate-system").Create(ctx, sec, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	// The spoke's own client may do no more than SecretRBACRules grant.
	role := &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Namespace: "fedgate-system", Name: "spoke"}, Rules: SecretRBACRules("fedgate-spoke-credentials")}
	if _, err := kc.RbacV1().Roles("fedgate-system").Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	binding := &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Namespace: "fedgate-system", Name: "spoke"},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "spoke"},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: "spoke"}}}
	if _, err := kc.RbacV1().RoleBindings("fedgate-system").Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	spokeCfg, err := c.AddUser("spoke")
	if err != nil {
		t.Fatal(err)
	}
	spokeKC, err := kubernetes.NewForConfig(spokeCfg)
	if err != nil {
		t.Fatal(err)
	}

	s, err := LoadSecret(ctx, spokeKC, "fedgate-system", "fedgate-spoke-credentials")
	if err != nil {
		t.Fatal(err)
	}
	joined := s.Leaf()
	if err := s.Renew(ctx, &fakeRegistration{t: t, ca: ca, uri: identity.ClusterURI("east")}); err != nil {
		t.Fatalf("Renew: %v", err)
	}
	renewed := s.Leaf()
	if renewed.SerialNumber.Cmp(joined.SerialNumber) == 0 {
		t.Fatal("Renew did not swap the certificate")
	}
	restarted, err := LoadSecret(ctx, kc, "fedgate-system", "fedgate-spoke-credentials")
	if err != nil {
		t.Fatal(err)
	}
	if restarted.Leaf().SerialNumber.Cmp(renewed.SerialNumber) != 0 {
		t.Fatalf("restarted with certificate %s, want the renewed %s", identity.SerialHex(restarted.Leaf().SerialNumber), identity.SerialHex(renewed.SerialNumber))
	}
	got, err := kc.CoreV1().Secrets("fedgate-system").Get(ctx, "fedgate-spoke-credentials", metav1.GetOptions{})
	if err != nil || string(got.Data["FEDGATE_HUB"]) != "hub:8443" {
		t.Fatalf("the Secret's other keys were not kept: %v %v", got.Data["FEDGATE_HUB"], err)
	}

	// The API server refuses the first two writes: the renewal reports a *SaveError and RunRenewal saves it again
	// (the hub is asked once).
	var refuse atomic.Int32
	refuse.Store(2)
	cfg := rest.CopyConfig(c.Config)
	cfg.WrapTransport = func(rt http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(r *http.Request) (*http.Response, error) {
			if r.Method == http.MethodPut && refuse.Add(-1) >= 0 {
				return &http.Response{StatusCode: http.StatusServiceUnavailable, Body: http.NoBody, Header: http.Header{}, Request: r}, nil
			}
			return rt.RoundTrip(r)
		})
	}
	flaky, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s2, err := LoadSecret(ctx, flaky, "fedgate-system", "fedgate-spoke-credentials")
	if err != nil {
		t.Fatal(err)
	}
	reg := &countingRegistration{fakeRegistration: fakeRegistration{t: t, ca: ca, uri: identity.ClusterURI("east")}}
	err = s2.Renew(ctx, reg)
	var se *SaveError
	if !errors.As(err, &se) {
		t.Fatalf("Renew with the Secret unwritable: %v, want a *SaveError", err)
	}
	for errors.As(err, &se) {
		err = s2.Save(ctx, se)
	}
	if err != nil || reg.calls.Load() != 1 {
		t.Fatalf("saving again: %v after %d renewals, want saved after one", err, reg.calls.Load())
	}
	if again, err := LoadSecret(ctx, kc, "fedgate-system", "fedgate-spoke-credentials"); err != nil || again.Leaf().SerialNumber.Cmp(s2.Leaf().SerialNumber) != 0 {
		t.Fatalf("the renewal saved on the retry is not the Secret's: %v", err)
	}

	// An agent whose identity the Secret no longer holds (rewritten by another replica's renewal, or by a later join)
	// leaves it alone.
	if err := s.Discard(ctx); err != nil {
		t.Fatalf("Discard of an identity the Secret no longer holds: %v", err)
	}
	if _, err := kc.CoreV1().Secrets("fedgate-system").Get(ctx, "fedgate-spoke-credentials", metav1.GetOptions{}); err != nil {
		t.Fatalf("Discard deleted a Secret holding another identity: %v", err)
	}
	// The cluster was removed: the credentials the Secret holds go, and a second Discard is no error.
	s = s2
	if err := s.Discard(ctx); err != nil {
		t.Fatalf("Discard: %v", err)
	}
	if _, err := kc.CoreV1().Secrets("fedgate-system").Get(ctx, "fedgate-spoke-credentials", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("the credentials Secret after Discard: %v, want it gone", err)
	}
	if err := s.Discard(ctx); err != nil {
		t.Fatalf("second Discard: %v", err)
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

type countingRegistration struct {
	fakeRegistration
	calls atomic.Int32
}

func (c *countingRegistration) Renew(ctx context.Context, in *fedgatepb.RenewRequest, opts ...grpc.CallOption) (*fedgatepb.RenewResponse, error) {
	c.calls.Add(1)
	return c.fakeRegistration.Renew(ctx, in, opts...)
}

// shortRegistration issues certificates that live life.
type shortRegistration struct {
	fakeRegistration
	life  time.Duration
	calls atomic.Int32
}

func (r *shortRegistration) Renew(_ context.Context, in *fedgatepb.RenewRequest, _ ...grpc.CallOption) (*fedgatepb.RenewResponse, error) {
	r.calls.Add(1)
	blk, _ := pem.Decode(in.CsrPem)
	csr, err := x509.ParseCertificateRequest(blk.Bytes)
	if err != nil {
		return nil, err
	}
	return &fedgatepb.RenewResponse{CertificatePem: r.ca.issue(r.t, csr.PublicKey, r.uri, time.Now(), r.life), CaBundlePem: r.ca.pem}, nil
}

// A renewal that can never be saved is retried as a save only until the certificate in use is due for renewal
// itself; then a fresh one is asked for — the certificate in use never runs out.
func TestUnsavableRenewalStillRenewsInTime(t *testing.T) {
	ca := newCA(t, "hub-ca")
	s, err := Load(ca.credentialsFor(t, identity.ClusterURI("east"), time.Now(), 1500*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	s.save = func(context.Context, []byte, []byte, []byte) error { return errors.New("forbidden") }
	reg := &shortRegistration{fakeRegistration: fakeRegistration{t: t, ca: ca, uri: identity.ClusterURI("east")}, life: 1500 * time.Millisecond}
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Second)
	defer cancel()
	go s.RunRenewal(ctx, reg, slog.New(slog.DiscardHandler))
	for reg.calls.Load() < 3 && ctx.Err() == nil {
		time.Sleep(50 * time.Millisecond)
	}
	if n := reg.calls.Load(); n < 3 {
		t.Fatalf("%d renewals in 6s of 1.5s certificates that cannot be saved, want at least 3", n)
	}
	if time.Until(s.Leaf().NotAfter) <= 0 {
		t.Fatal("the certificate in use expired")
	}
}
