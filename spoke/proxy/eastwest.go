package proxy

import (
	"crypto/tls"
	"fmt"
	"net/http"
	"time"

	"github.com/fedgate/fedgate/apis/identity"
)

// peerCluster is the cluster named by a verified peer certificate, or "".
func peerCluster(cs *tls.ConnectionState) string {
	if len(cs.PeerCertificates) == 0 {
		return ""
	}
	p, err := identity.FromCertificate(cs.PeerCertificates[0])
	if err != nil || p.Kind != identity.KindCluster {
		return ""
	}
	return p.Name
}

// peerSerial is the serial (lowercase hex) of a verified peer certificate, or "".
func peerSerial(cs *tls.ConnectionState) string {
	if len(cs.PeerCertificates) == 0 {
		return ""
	}
	return identity.SerialHex(cs.PeerCertificates[0].SerialNumber)
}

// serveEastWest serves a request another spoke forwarded to one of this cluster's endpoints. The request names the
// backend (and usually the endpoint the sender picked); this spoke only ever sends it to its own ready endpoints of
// that backend, so a request crosses at most one east-west hop and cannot loop. With TLS, only member clusters' spokes
// are served, and only on certificates the hub has not revoked.
func (s *Server) serveEastWest(w http.ResponseWriter, r *http.Request) {
	id := r.Header.Get(HeaderBackend)
	if id == "" {
		http.Error(w, "missing "+HeaderBackend, http.StatusBadRequest)
		return
	}
	named := r.Header.Get(HeaderEndpoint)
	t := s.table.Load()
	if t != nil && t.members != nil && r.TLS != nil {
		// The TLS layer proved the peer holds a certificate of this hub; membership says it still belongs. A cluster
		// removed at the hub leaves every spoke's member list with the next config.
		peer := peerCluster(r.TLS)
		if !t.members[peer] {
			http.Error(w, fmt.Sprintf("cluster %q is not a member of this hub", peer), http.StatusForbidden)
			return
		}
	}
	if t != nil && t.revoked != nil && r.TLS != nil {
		// Checked per request, not per handshake: a connection opened before the revocation reached this spoke is
		// refused from the next config on.
		if sn := peerSerial(r.TLS); t.revoked[sn] {
			http.Error(w, fmt.Sprintf("certificate %s of cluster %q is revoked", sn, peerCluster(r.TLS)), http.StatusForbidden)
			return
		}
	}
	var b *backend
	if t != nil {
		b = t.backends[id]
	}
	if b == nil || !b.hasLocal {
		// 421: the peer's view of where this backend lives is stale; it must not be served (or relayed) from here.
		http.Error(w, "backend not served by this cluster", http.StatusMisdirectedRequest)
		return
	}
	ep := b.pickLocal(named, s.now().UnixNano())
	if ep == nil {
		http.Error(w, "no healthy upstream", http.StatusServiceUnavailable)
		return
	}
	s.forward(w, r, nil, b, ep, time.Time{})
}
