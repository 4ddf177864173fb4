package proxy

import (
	"net/http"
	"time"
)

// serveEastWest serves a request another spoke forwarded to one of this cluster's endpoints. The request names the
// backend (and usually the endpoint the sender picked); this spoke only ever sends it to its own ready endpoints of
// that backend, so a request crosses at most one east-west hop and cannot loop.
func (s *Server) serveEastWest(w http.ResponseWriter, r *http.Request) {
	id := r.Header.Get(HeaderBackend)
	if id == "" {
		http.Error(w, "missing "+HeaderBackend, http.StatusBadRequest)
		return
	}
	named := r.Header.Get(HeaderEndpoint)
	t := s.table.Load()
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
