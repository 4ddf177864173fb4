package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/fedgate/fedgate/apis/fedgatepb"
	"github.com/fedgate/fedgate/apis/resources"
)

// Values that hold key material are stored sealed with the key-encryption keys (keyencryption.go), bound to their
// etcd key: the Secrets applied at the hub (hub/Secret/…, whose data is a listener's private key) and the graph
// records (graph/<cluster>, whose SpokeConfig carries session, gossip and TLS keys). Everything that reads them goes
// through the Store, which opens them; nothing here logs a value or quotes one in an error.

// sealedHubKey reports whether the hub object stored under key is sealed: the Secrets.
func sealedHubKey(key string) bool {
	return strings.HasPrefix(key, HubPrefix+resources.KindSecret+"/")
}

// ErrInvalidObject is an object the store refuses for its content (the caller's mistake, not etcd's).
var ErrInvalidObject = errors.New("invalid object")

// sealValue is the value to store under key for plaintext.
func (s *Store) sealValue(key string, plain []byte) ([]byte, error) {
	if s.kek == nil {
		return nil, fmt.Errorf("%s: %w", key, errNoKeyEncryptionKeys)
	}
	sealed, err := s.kek.seal(key, plain)
	if err != nil {
		return nil, err
	}
	return json.Marshal(sealed)
}

// openValue returns the plaintext of a sealed value stored under key.
func (s *Store) openValue(key string, value []byte) ([]byte, error) {
	if s.kek == nil {
		return nil, fmt.Errorf("%s: %w", key, errNoKeyEncryptionKeys)
	}
	var sv sealedRing
	if json.Unmarshal(value, &sv) != nil || sv.KeyID == "" {
		return nil, fmt.Errorf("sealed value %s: %w", key, errMalformedRing)
	}
	return s.kek.open(key, sv)
}

// openHub returns a hub object's JSON as applied: opened when its kind is stored sealed, else value itself.
func (s *Store) openHub(key string, value []byte) ([]byte, error) {
	if !sealedHubKey(key) {
		return value, nil
	}
	return s.openValue(key, value)
}

// sealHub is the value to store under a hub key for an object's JSON: sealed when its kind is, else the JSON.
func (s *Store) sealHub(key string, js []byte) ([]byte, error) {
	if !sealedHubKey(key) {
		return js, nil
	}
	return s.sealValue(key, js)
}

// checkReportedSecret refuses a reported Secret that carries data: a cluster reports a TLS Secret only in the
// data-free form (resources.ReportedTLSSecret), so that no private key leaves its cluster through the hub.
func checkReportedSecret(o *fedgatepb.Object) error {
	if o.Kind != resources.KindSecret {
		return nil
	}
	var body struct {
		Data       map[string]json.RawMessage `json:"data"`
		StringData map[string]json.RawMessage `json:"stringData"`
	}
	if err := json.Unmarshal(o.Json, &body); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrInvalidObject, resources.Describe(o.Kind, o.Namespace, o.Name), err)
	}
	field := ""
	switch {
	case len(body.Data) > 0:
		field = "data"
	case len(body.StringData) > 0:
		field = "stringData"
	default:
		return nil
	}
	return fmt.Errorf("%w: %s: %s: Forbidden: a cluster reports a Secret without its data (%s says whether it is usable)",
		ErrInvalidObject, resources.Describe(o.Kind, o.Namespace, o.Name), field, resources.TLSCheckAnnotation)
}
