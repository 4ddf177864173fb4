// Package proxy is the spoke's embedded L7 proxy. (Stub API: replaced by the full implementation.)
package proxy

import (
	"net"

	"github.com/fedgate/fedgate/apis/spokeconfig"
)

// Options configure a Server.
type Options struct {
	// Cluster is this spoke's cluster name.
	Cluster string
	// ListenHost overrides the bind address of every gateway port (e.g. "127.0.0.1" in tests and standalone mode).
	ListenHost string
	// PortOffset is added to every Gateway listener port (lets several spokes share one host in tests and the demo).
	PortOffset int32
}

// Server serves the gateway ports and the east-west listener from the current table.
type Server struct{}

// New returns a Server serving nothing until Apply.
func New(opts Options) *Server { return &Server{} }

// Apply builds a table from cfg and swaps it in atomically, opening and closing gateway ports as needed. On error the
// previous table keeps serving and the error explains why (the spoke NACKs with it).
func (s *Server) Apply(cfg *spokeconfig.SpokeConfig) error { return nil }

// ServeEastWest serves requests from other spokes on l until Close.
func (s *Server) ServeEastWest(l net.Listener) error { return nil }

// Close stops every listener; in-flight requests finish.
func (s *Server) Close() error { return nil }
