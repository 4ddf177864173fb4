package session

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func ring() Keyring {
	return Keyring{Current: Key{ID: 2, Secret: []byte("current-secret-0123456789abcdef")}, Previous: &Key{ID: 1, Secret: []byte("previous-secret-0123456789abcde")}}
}

func TestIssueVerifyRoundTrip(t *testing.T) {
	c := NewCodec(ring())
	now := time.Unix(1_800_000_000, 0)
	tgt := Target{Cluster: "west", Endpoint: "10.0.0.7:8080"}
	tok, err := c.Issue(tgt, Scope("default/color:80"), now, now)
	if err != nil {
		t.Fatal(err)
	}
	v, err := c.Verify(tok, Scope("default/color:80"), Policy{}, now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if v.Target != tgt || !v.Started.Equal(now) || v.KeyID != 2 {
		t.Fatalf("verified %+v", v)
	}
	if strings.Contains(tok, "west") || strings.ContainsAny(tok, "+/=;, ") {
		t.Fatalf("token %q is not an opaque cookie-safe value", tok)
	}
}

func TestTimeouts(t *testing.T) {
	c := NewCodec(ring())
	start := time.Unix(1_800_000_000, 0)
	p := Policy{AbsoluteTimeout: time.Hour, IdleTimeout: 10 * time.Minute}
	scope := Scope("b")
	tok, _ := c.Issue(Target{"east", "127.0.0.1:1"}, scope, start, start)
	if _, err := c.Verify(tok, scope, p, start.Add(9*time.Minute)); err != nil {
		t.Fatalf("within idle timeout: %v", err)
	}
	if _, err := c.Verify(tok, scope, p, start.Add(11*time.Minute)); !errors.Is(err, ErrExpired) {
		t.Fatalf("idle expiry: %v", err)
	}
	// Renewing on every request keeps the session alive past the idle timeout, up to the absolute timeout.
	now := start
	for i := 0; i < 6; i++ {
		now = now.Add(9 * time.Minute)
		v, err := c.Verify(tok, scope, p, now)
		if err != nil {
			t.Fatalf("renewal %d at +%v: %v", i, now.Sub(start), err)
		}
		tok, _ = c.Issue(v.Target, scope, v.Started, now)
	}
	now = start.Add(61 * time.Minute)
	if _, err := c.Verify(tok, scope, p, now); !errors.Is(err, ErrExpired) {
		t.Fatalf("absolute expiry despite renewal: %v", err)
	}
}

func TestForgedTamperedAndRotatedTokens(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	scope := Scope("b")
	c := NewCodec(ring())
	tok, _ := c.Issue(Target{"east", "127.0.0.1:1"}, scope, now, now)

	raw, _ := enc.DecodeString(tok)
	for i := range raw {
		tampered := append([]byte(nil), raw...)
		tampered[i] ^= 0x01
		if _, err := c.Verify(enc.EncodeToString(tampered), scope, Policy{}, now); err == nil {
			t.Fatalf("token with byte %d flipped verified", i)
		}
	}
	forger := NewCodec(Keyring{Current: Key{ID: 2, Secret: []byte("attacker")}})
	forged, _ := forger.Issue(Target{"evil", "6.6.6.6:66"}, scope, now, now)
	if _, err := c.Verify(forged, scope, Policy{}, now); !errors.Is(err, ErrBadMAC) {
		t.Fatalf("forged token: %v", err)
	}
	if _, err := c.Verify(tok, Scope("other"), Policy{}, now); !errors.Is(err, ErrScope) {
		t.Fatalf("token used for another backend: %v", err)
	}
	for _, junk := range []string{"", "!!!", "AAAA", strings.Repeat("A", 5000)} {
		if _, err := c.Verify(junk, scope, Policy{}, now); err == nil {
			t.Fatalf("junk %q verified", junk)
		}
	}
	// Rotation: a token signed with the previous key is still accepted; after the next rotation it is not.
	old := NewCodec(Keyring{Current: *ring().Previous})
	oldTok, _ := old.Issue(Target{"east", "127.0.0.1:1"}, scope, now, now)
	if v, err := c.Verify(oldTok, scope, Policy{}, now); err != nil || v.KeyID != 1 {
		t.Fatalf("previous-key token: %+v %v", v, err)
	}
	cur := ring().Current
	next := NewCodec(Keyring{Current: Key{ID: 3, Secret: []byte("next")}, Previous: &cur})
	if _, err := next.Verify(oldTok, scope, Policy{}, now); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("token two rotations old: %v", err)
	}
}

func FuzzVerify(f *testing.F) {
	c := NewCodec(ring())
	now := time.Unix(1_800_000_000, 0)
	tok, _ := c.Issue(Target{"east", "127.0.0.1:1"}, 7, now, now)
	f.Add(tok)
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		v, err := c.Verify(s, 7, Policy{}, now)
		if err == nil && s != tok {
			// Only genuinely issued tokens may verify; the fuzzer cannot forge the MAC.
			t.Fatalf("fuzzed token %q verified as %+v", s, v)
		}
	})
}

func BenchmarkVerify(b *testing.B) {
	c := NewCodec(ring())
	now := time.Unix(1_800_000_000, 0)
	tok, _ := c.Issue(Target{"east", "127.0.0.1:8080"}, 7, now, now)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, err := c.Verify(tok, 7, Policy{}, now); err != nil {
			b.Fatal(err)
		}
	}
}
