// Package tlssecrets keeps, in memory only, the data of the TLS Secrets a spoke's own Gateways reference in its own
// cluster: the certificates the proxy serves for listeners whose Certificate is Local. It also knows which Secrets a
// Gateway references (GatewayRefs), and what of a Secret the spoke reports to the hub (the data-free
// resources.ReportedTLSSecret).
//
// It must never write key material anywhere: not to a log, a file, an error, or a reported object. Store.Objects
// carries only the data-free form; the data leaves the store only through Lookup, to the proxy.
package tlssecrets

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"sync"

	corev1 "k8s.io/api/core/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/fedgate/fedgate/apis/fedgatepb"
	"github.com/fedgate/fedgate/apis/resources"
)

// Ref names a Secret.
type Ref struct{ Namespace, Name string }

func (r Ref) String() string { return r.Namespace + "/" + r.Name }

// GatewayRefs returns the Secrets gw's listeners reference in gw's own cluster, deduplicated and sorted: every
// certificateRef of the core group ("") and kind Secret (or no kind), its namespace defaulting to the Gateway's.
// These are all the references, permitted or not: a reader in a cluster must follow only those of Gateways of its own
// GatewayClasses, and to another namespace only those Permitted by a ReferenceGrant.
func GatewayRefs(gw *gatewayv1.Gateway) []Ref {
	seen := map[Ref]bool{}
	var out []Ref
	for _, l := range gw.Spec.Listeners {
		if l.TLS == nil {
			continue
		}
		for _, c := range l.TLS.CertificateRefs {
			if c.Group != nil && *c.Group != "" {
				continue
			}
			if c.Kind != nil && *c.Kind != resources.KindSecret {
				continue
			}
			r := Ref{Namespace: gw.Namespace, Name: string(c.Name)}
			if c.Namespace != nil && *c.Namespace != "" {
				r.Namespace = string(*c.Namespace)
			}
			if r.Name == "" || seen[r] {
				continue
			}
			seen[r] = true
			out = append(out, r)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].String() < out[j].String() })
	return out
}

// ErrNotFound is Lookup's error for a Secret the store does not hold (absent from the cluster, not referenced by a
// Gateway of the cluster, or not read yet).
var ErrNotFound = errors.New("TLS Secret not found in this cluster")

// entry is one held Secret. Its slices and its object are never modified once stored.
type entry struct {
	cert, key []byte
	invalid   error // CheckTLSSecret's verdict; nil when the pair is usable
	reported  *fedgatepb.Object
}

// Store holds the local TLS Secrets' data. Its zero value is not usable; create with New. Safe for concurrent use.
type Store struct {
	mu      sync.RWMutex
	entries map[Ref]*entry
	changed chan struct{} // closed (and replaced) at every change
	dataGen uint64        // counts changes of the served data (cert, key or validity)
	synced  chan struct{}
	once    sync.Once
}

// New returns an empty Store.
func New() *Store {
	return &Store{entries: map[Ref]*entry{}, changed: make(chan struct{}), synced: make(chan struct{})}
}

// Set holds s (a Secret read in this cluster): a copy of its tls.crt and tls.key, its CheckTLSSecret verdict and its
// reported form. s is not modified or kept.
func (st *Store) Set(s *corev1.Secret) error {
	obj, err := ReportedObject(s)
	if err != nil {
		return err
	}
	e := &entry{
		cert:     bytes.Clone(s.Data[corev1.TLSCertKey]),
		key:      bytes.Clone(s.Data[corev1.TLSPrivateKeyKey]),
		invalid:  resources.CheckTLSSecret(s),
		reported: obj,
	}
	r := Ref{Namespace: s.Namespace, Name: s.Name}
	st.mu.Lock()
	defer st.mu.Unlock()
	old := st.entries[r]
	if old != nil && bytes.Equal(old.cert, e.cert) && bytes.Equal(old.key, e.key) && sameErr(old.invalid, e.invalid) &&
		bytes.Equal(old.reported.Json, e.reported.Json) {
		return nil
	}
	st.entries[r] = e
	if old == nil || !bytes.Equal(old.cert, e.cert) || !bytes.Equal(old.key, e.key) || !sameErr(old.invalid, e.invalid) {
		st.dataGen++
	}
	st.notifyLocked()
	return nil
}

// Delete drops the Secret namespace/name, if held.
func (st *Store) Delete(namespace, name string) {
	st.Retain(func(r Ref) bool { return r != Ref{Namespace: namespace, Name: name} })
}

// Retain drops every held Secret for which keep is false.
func (st *Store) Retain(keep func(Ref) bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	n := len(st.entries)
	for r := range st.entries {
		if !keep(r) {
			delete(st.entries, r)
		}
	}
	if len(st.entries) != n {
		st.dataGen++
		st.notifyLocked()
	}
}

func (st *Store) notifyLocked() {
	close(st.changed)
	st.changed = make(chan struct{})
}

// Lookup returns the PEM certificate chain and key of the Secret namespace/name: the proxy's
// Options.LocalSecret. The error is ErrNotFound (wrapped) for a Secret not held, or says why a held one cannot serve
// (never quoting the key). The returned slices must not be modified.
func (st *Store) Lookup(namespace, name string) (certPEM, keyPEM []byte, err error) {
	st.mu.RLock()
	e := st.entries[Ref{Namespace: namespace, Name: name}]
	st.mu.RUnlock()
	switch {
	case e == nil:
		return nil, nil, fmt.Errorf("Secret %s/%s: %w", namespace, name, ErrNotFound)
	case e.invalid != nil:
		return nil, nil, fmt.Errorf("Secret %s/%s: %v", namespace, name, e.invalid)
	}
	return e.cert, e.key, nil
}

// Objects returns the reported (data-free) form of every held Secret, unsorted; the objects must not be modified.
func (st *Store) Objects() []*fedgatepb.Object {
	st.mu.RLock()
	defer st.mu.RUnlock()
	out := make([]*fedgatepb.Object, 0, len(st.entries))
	for _, e := range st.entries {
		out = append(out, e.reported)
	}
	return out
}

// Refs returns the held Secrets' names, sorted.
func (st *Store) Refs() []Ref {
	st.mu.RLock()
	out := make([]Ref, 0, len(st.entries))
	for r := range st.entries {
		out = append(out, r)
	}
	st.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].String() < out[j].String() })
	return out
}

// Changed returns a channel closed at the next change of the store. Take it before reading the store, so that no
// change between the read and the wait is missed.
func (st *Store) Changed() <-chan struct{} {
	st.mu.RLock()
	defer st.mu.RUnlock()
	return st.changed
}

// DataGeneration counts the changes of what Lookup returns (a reported-form-only change, such as a new
// resourceVersion with the same data, does not count): the proxy needs a reload when it moved.
func (st *Store) DataGeneration() uint64 {
	st.mu.RLock()
	defer st.mu.RUnlock()
	return st.dataGen
}

// MarkSynced says the store holds every referenced Secret that existed when its reader started (the reader's first
// lists are done). Further calls do nothing.
func (st *Store) MarkSynced() { st.once.Do(func() { close(st.synced) }) }

// Synced is closed once MarkSynced was called.
func (st *Store) Synced() <-chan struct{} { return st.synced }

// ReportedObject is what a spoke reports of s: resources.ReportedTLSSecret in its wire form, with no data.
func ReportedObject(s *corev1.Secret) (*fedgatepb.Object, error) {
	r := resources.ReportedTLSSecret(s)
	js, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("Secret %s/%s: %w", s.Namespace, s.Name, err)
	}
	return &fedgatepb.Object{ApiVersion: "v1", Kind: resources.KindSecret, Namespace: r.Namespace, Name: r.Name, Json: js}, nil
}

func sameErr(a, b error) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return a.Error() == b.Error()
}
