// Package session implements fedgate's session-persistence tokens: a compact, authenticated value naming the cluster
// and endpoint a session is pinned to, carried in a cookie or a header. Tokens are HMAC-SHA256-authenticated with keys
// the hub distributes and rotates (the previous key is still accepted for one period), so a forged or tampered token
// never routes anywhere: it reads as "no session" and the proxy makes a fresh pick.
//
// A token also carries when the session started (absoluteTimeout is a hard limit from then) and when it was last
// renewed (idleTimeout is a rolling expiry: every request that uses the session gets a renewed token).
package session

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"hash"
	"sync"
	"time"
)

// Key is one HMAC key with its id (the id travels in the token so the verifier picks the right key).
type Key struct {
	ID     uint8
	Secret []byte
}

// Keyring holds the current signing key and the previous one (still accepted).
type Keyring struct {
	Current  Key
	Previous *Key
}

// Target is what a session is pinned to.
type Target struct {
	Cluster  string
	Endpoint string // ip:port
}

// Policy bounds a session's life. Zero durations mean no limit.
type Policy struct {
	AbsoluteTimeout time.Duration
	IdleTimeout     time.Duration
}

// Errors of Verify. Callers treat all of them as "no session".
var (
	ErrMalformed  = errors.New("session token malformed")
	ErrBadMAC     = errors.New("session token not authentic")
	ErrUnknownKey = errors.New("session token signed with an unknown key")
	ErrExpired    = errors.New("session token expired")
	ErrScope      = errors.New("session token issued for another backend")
)

const (
	version = 1
	macLen  = 16 // truncated HMAC-SHA256: 128 bits
	// header: version, key id, started (unix seconds, 8), renewed (unix seconds, 8), scope hash (4), cluster len,
	// endpoint len.
	headerLen = 1 + 1 + 8 + 8 + 4 + 1 + 1
	maxField  = 255
)

var enc = base64.RawURLEncoding.Strict()

// Codec issues and verifies tokens. It is safe for concurrent use; MACs are computed with pooled hashers.
type Codec struct {
	ring  Keyring
	pools map[uint8]*sync.Pool
}

// NewCodec returns a codec for ring.
func NewCodec(ring Keyring) *Codec {
	c := &Codec{ring: ring, pools: map[uint8]*sync.Pool{}}
	add := func(k Key) {
		secret := append([]byte(nil), k.Secret...)
		c.pools[k.ID] = &sync.Pool{New: func() any { return hmac.New(sha256.New, secret) }}
	}
	add(ring.Current)
	if ring.Previous != nil && ring.Previous.ID != ring.Current.ID {
		add(*ring.Previous)
	}
	return c
}

// Scope binds a token to one backend (route rule or backend ID), so a token minted for one backend cannot steer
// another.
func Scope(s string) uint32 {
	h := sha256.Sum256([]byte(s))
	return binary.BigEndian.Uint32(h[:4])
}

// Issue returns a token for t, started at started and renewed at now.
func (c *Codec) Issue(t Target, scope uint32, started, now time.Time) (string, error) {
	if len(t.Cluster) > maxField || len(t.Endpoint) > maxField {
		return "", ErrMalformed
	}
	buf := make([]byte, 0, headerLen+len(t.Cluster)+len(t.Endpoint)+macLen)
	buf = append(buf, version, c.ring.Current.ID)
	buf = binary.BigEndian.AppendUint64(buf, uint64(started.Unix()))
	buf = binary.BigEndian.AppendUint64(buf, uint64(now.Unix()))
	buf = binary.BigEndian.AppendUint32(buf, scope)
	buf = append(buf, byte(len(t.Cluster)), byte(len(t.Endpoint)))
	buf = append(buf, t.Cluster...)
	buf = append(buf, t.Endpoint...)
	buf = c.mac(c.ring.Current.ID, buf)
	return enc.EncodeToString(buf), nil
}

func (c *Codec) mac(id uint8, msg []byte) []byte {
	p := c.pools[id]
	h := p.Get().(hash.Hash)
	h.Reset()
	h.Write(msg)
	var sum [sha256.Size]byte
	out := h.Sum(sum[:0])
	p.Put(h)
	return append(msg, out[:macLen]...)
}

// Verified is a verified token.
type Verified struct {
	Target  Target
	Started time.Time
	Renewed time.Time
	// KeyID that signed it; a token signed by the previous key should be reissued with the current one.
	KeyID uint8
}

// Verify checks a token's MAC, scope and lifetimes at now. Any error means "no session".
func (c *Codec) Verify(token string, scope uint32, p Policy, now time.Time) (Verified, error) {
	if len(token) == 0 || len(token) > 2*(headerLen+2*maxField+macLen) {
		return Verified{}, ErrMalformed
	}
	// The decoder skips '\r' and '\n'; accept only the canonical alphabet so one token has one spelling.
	for i := 0; i < len(token); i++ {
		c := token[i]
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return Verified{}, ErrMalformed
		}
	}
	var stack [256]byte
	raw := stack[:0]
	if n := enc.DecodedLen(len(token)); n > len(stack) {
		raw = make([]byte, 0, n)
	}
	raw = raw[:enc.DecodedLen(len(token))]
	n, err := enc.Decode(raw, []byte(token))
	if err != nil {
		return Verified{}, ErrMalformed
	}
	raw = raw[:n]
	if len(raw) < headerLen+macLen || raw[0] != version {
		return Verified{}, ErrMalformed
	}
	id := raw[1]
	pool := c.pools[id]
	if pool == nil {
		return Verified{}, ErrUnknownKey
	}
	body, mac := raw[:len(raw)-macLen], raw[len(raw)-macLen:]
	h := pool.Get().(hash.Hash)
	h.Reset()
	h.Write(body)
	var sum [sha256.Size]byte
	want := h.Sum(sum[:0])
	pool.Put(h)
	if !hmac.Equal(mac, want[:macLen]) {
		return Verified{}, ErrBadMAC
	}
	started := time.Unix(int64(binary.BigEndian.Uint64(body[2:10])), 0)
	renewed := time.Unix(int64(binary.BigEndian.Uint64(body[10:18])), 0)
	if binary.BigEndian.Uint32(body[18:22]) != scope {
		return Verified{}, ErrScope
	}
	cl, el := int(body[22]), int(body[23])
	if len(body) != headerLen+cl+el {
		return Verified{}, ErrMalformed
	}
	if p.AbsoluteTimeout > 0 && now.Sub(started) > p.AbsoluteTimeout {
		return Verified{}, ErrExpired
	}
	if p.IdleTimeout > 0 && now.Sub(renewed) > p.IdleTimeout {
		return Verified{}, ErrExpired
	}
	if renewed.Before(started) || renewed.After(now.Add(time.Minute)) {
		return Verified{}, ErrMalformed
	}
	return Verified{
		Target:  Target{Cluster: string(body[headerLen : headerLen+cl]), Endpoint: string(body[headerLen+cl:])},
		Started: started, Renewed: renewed, KeyID: id,
	}, nil
}
