package identity

import (
	"crypto/x509"
	"math/big"
	"net/url"
	"strings"
	"testing"
)

func TestTokens(t *testing.T) {
	seen := map[string]bool{}
	for i := 0; i < 200; i++ {
		tok, err := NewToken()
		if err != nil {
			t.Fatal(err)
		}
		p, err := ParseToken(tok.String())
		if err != nil || p != tok {
			t.Fatalf("ParseToken(%q) = %v, %v", tok, p, err)
		}
		if seen[tok.ID] {
			t.Fatalf("token id %q repeated", tok.ID)
		}
		seen[tok.ID] = true
	}
	for _, bad := range []string{"", "abcdef", "abcdef.0123456789abcde", "ABCDEF.0123456789abcdef", "abcdef.0123456789abcdef0", "abc-ef.0123456789abcdef"} {
		_, err := ParseToken(bad)
		if err == nil {
			t.Errorf("ParseToken(%q) accepted", bad)
			continue
		}
		if bad != "" && strings.Contains(err.Error(), bad) {
			t.Errorf("ParseToken error echoes the token: %v", err)
		}
	}
	a := Token{ID: "abcdef", Secret: "0123456789abcdef"}
	b := Token{ID: "abcdef", Secret: "0123456789abcdee"}
	if HashSecret(a) == HashSecret(b) || strings.Contains(HashSecret(a), a.Secret) {
		t.Fatal("HashSecret does not separate secrets or leaks one")
	}
}

func TestFromCertificate(t *testing.T) {
	other, _ := url.Parse("spiffe://other/cluster/east")
	cases := []struct {
		uris    []*url.URL
		want    Principal
		wantErr bool
	}{
		{[]*url.URL{ClusterURI("east")}, Principal{Kind: KindCluster, Name: "east"}, false},
		{[]*url.URL{AdminURI()}, Principal{Kind: KindAdmin}, false},
		{[]*url.URL{other}, Principal{}, true},
		{[]*url.URL{ClusterURI("east"), ClusterURI("west")}, Principal{}, true},
		{[]*url.URL{ClusterURI("Bad_Name")}, Principal{}, true},
		{nil, Principal{}, true},
	}
	for _, c := range cases {
		got, err := FromCertificate(&x509.Certificate{URIs: c.uris})
		if (err != nil) != c.wantErr || got != c.want {
			t.Errorf("FromCertificate(%v) = %v, %v", c.uris, got, err)
		}
	}
}

func TestValidateCAHash(t *testing.T) {
	if err := ValidateCAHash("sha256:" + strings.Repeat("ab", 32)); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"", "sha256:abc", "md5:" + strings.Repeat("ab", 32), "sha256:" + strings.Repeat("zz", 32)} {
		if ValidateCAHash(bad) == nil {
			t.Errorf("ValidateCAHash(%q) accepted", bad)
		}
	}
}

func TestSerialHex(t *testing.T) {
	n, _ := new(big.Int).SetString("ABCDEF0123", 16)
	if got := SerialHex(n); got != "abcdef0123" {
		t.Errorf("SerialHex = %q", got)
	}
}
