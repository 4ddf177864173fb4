package registration

import (
	"context"
	"math/big"
	"strings"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/fedgate/fedgate/apis/fedgatepb"
	"github.com/fedgate/fedgate/apis/identity"
)

// renewingKV runs hook before the first read of a join record: a renewal landing between RemoveCluster's reads.
type renewingKV struct {
	clientv3.KV
	hook func()
}

func (k *renewingKV) Get(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	if k.hook != nil && strings.HasPrefix(key, JoinPrefix) {
		h := k.hook
		k.hook = nil
		h()
	}
	return k.KV.Get(ctx, key, opts...)
}

// A renewal that lands while a cluster is being removed cannot leave a certificate that is neither on record nor
// revoked; and a cluster cannot renew its way past the certificates one removal can revoke.
func TestRemovalRacingARenewalRevokesEverything(t *testing.T) {
	ctx := context.Background()
	s, cli, _ := newService(t)
	first, eastCtx := joinWithToken(t, s, "east")

	// Renewals are capped: the live certificates stay within what one removal revokes.
	renewals := 0
	for ; renewals < 20; renewals++ {
		if _, err := s.Renew(eastCtx, &fedgatepb.RenewRequest{CsrPem: csr(t, "east")}); err != nil {
			if status.Code(err) != codes.ResourceExhausted {
				t.Fatalf("renewal %d: %v", renewals+1, err)
			}
			break
		}
	}
	if renewals+1 != maxLiveCertificates {
		t.Fatalf("a cluster holds %d live certificates after renewing in a loop, want the cap %d", renewals+1, maxLiveCertificates)
	}
	// Make room for one more, then let it land between the removal's reads.
	if _, err := cli.Delete(ctx, CertPrefix+"east/"+identity.SerialHex(first.SerialNumber)); err != nil {
		t.Fatal(err)
	}
	held, err := cli.Get(ctx, CertPrefix+"east/", clientv3.WithPrefix())
	if err != nil || len(held.Kvs) == 0 {
		t.Fatal(err)
	}
	holder := strings.TrimPrefix(string(held.Kvs[0].Key), CertPrefix+"east/")
	holderCtx := clusterCtx("east", holder)
	var renewed string
	orig := cli.KV
	cli.KV = &renewingKV{KV: orig, hook: func() {
		rn, err := s.Renew(holderCtx, &fedgatepb.RenewRequest{CsrPem: csr(t, "east")})
		if err != nil {
			t.Errorf("racing renewal: %v", err)
			return
		}
		c, _ := identity.ParseCertificates(rn.CertificatePem)
		renewed = identity.SerialHex(c[0].SerialNumber)
	}}
	defer func() { cli.KV = orig }()
	serials, err := s.RemoveCluster(ctx, "east")
	if err != nil {
		t.Fatal(err)
	}
	if renewed == "" {
		t.Fatal("the racing renewal did not happen")
	}
	found := false
	for _, sn := range serials {
		found = found || sn == renewed
	}
	fresh, err := New(ctx, cli, s.ca, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !found {
		t.Fatalf("the certificate renewed during the removal (%s) was not revoked: %v", renewed, serials)
	}
	n, ok := new(big.Int).SetString(renewed, 16)
	if ok {
		_, ok = fresh.Revoked(n)
	}
	if !ok {
		t.Fatalf("revocation of %s not stored", renewed)
	}
}
